"""Guards that keep a long run alive and honest: unreadable images are skipped and counted, a non-finite loss stops
the run at the step it appears (before the optimizer writes NaN into the weights).

Paths that escape their data set folder need no guard of ours: `datasets` (>= 5) refuses an imagefolder whose
`metadata.jsonl` names `../...` or an absolute path; `training.data` surfaces that error as is.
"""

import io
import logging

import torch
from datasets import Dataset, Image, IterableDataset
from PIL import Image as PILImage


logger = logging.getLogger(__name__)


class SkippedRows:
    """Counts the rows a filter dropped; for streaming data sets the count grows as the stream is read."""

    def __init__(self):
        self.count = 0


def is_readable_image(value) -> bool:
    """Whether an undecoded `datasets.Image` value ({"path", "bytes"}) holds a complete, decodable image."""
    if value is None:
        return False
    try:
        source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
        with PILImage.open(source) as image:
            image.load()  # decodes fully: catches truncated files that `verify()` lets through
        return True
    except Exception:  # any failure to open or decode means the row cannot be trained on
        return False


def drop_unreadable_images(
    dataset: Dataset | IterableDataset, image_column: str
) -> tuple[Dataset | IterableDataset, SkippedRows]:
    """The rows whose image exists and decodes, and a counter of the dropped ones (logged for map-style data)."""
    skipped = SkippedRows()
    decoded = dataset.features[image_column] if dataset.features else Image()
    raw = dataset.cast_column(image_column, Image(decode=False))

    def keep(row) -> bool:
        readable = is_readable_image(row[image_column])
        skipped.count += not readable
        return readable

    if isinstance(dataset, IterableDataset):
        return raw.filter(keep).cast_column(image_column, decoded), skipped
    kept = raw.filter(lambda row: is_readable_image(row[image_column]))
    skipped.count = len(raw) - len(kept)
    if skipped.count:
        logger.warning(f"Skipped {skipped.count} of {len(raw)} rows whose '{image_column}' is missing or corrupt.")
    return kept.cast_column(image_column, decoded), skipped


def check_finite_loss(loss: torch.Tensor, step: int) -> None:
    """Raise before a NaN/inf loss reaches the optimizer, naming the step."""
    if not torch.isfinite(loss).all():
        raise FloatingPointError(
            f"The training loss is {loss.item()} at step {step}; stopping before the optimizer writes non-finite "
            "weights. The last checkpoint is intact: lower --learning_rate (or set --max_grad_norm) and resume "
            "with --resume_from_checkpoint."
        )
