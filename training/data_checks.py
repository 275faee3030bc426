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
    dataset: Dataset | IterableDataset, image_column: str, keep_missing: bool = False
) -> tuple[Dataset | IterableDataset, SkippedRows]:
    """The rows whose image exists and decodes, and a counter of the dropped ones (logged for map-style data).
    `keep_missing`: rows without an image (None) are kept, for `drop_unpaired_rows` to sort out and count."""
    skipped = SkippedRows()
    decoded = dataset.features[image_column] if dataset.features else Image()
    raw = dataset.cast_column(image_column, Image(decode=False))

    def readable(value) -> bool:
        return (keep_missing and value is None) or is_readable_image(value)

    def keep(row) -> bool:
        kept = readable(row[image_column])
        skipped.count += not kept
        return kept

    if isinstance(dataset, IterableDataset):
        return raw.filter(keep).cast_column(image_column, decoded), skipped
    kept = raw.filter(lambda row: readable(row[image_column]))
    skipped.count = len(raw) - len(kept)
    if skipped.count:
        logger.warning(f"Skipped {skipped.count} of {len(raw)} rows whose '{image_column}' is missing or corrupt.")
    return kept.cast_column(image_column, decoded), skipped


class UnpairedRows:
    """Rows with an image and no text, or a text and no image: how many there were and how many were dropped (for a
    stream, counted as it is read)."""

    def __init__(self):
        self.count = 0
        self.dropped = 0


def has_text(value) -> bool:
    return value is not None and (isinstance(value, str) or any(text is not None for text in value))


def drop_unpaired_rows(
    dataset: Dataset | IterableDataset, image_column: str, text_column: str, keep_texts_alone: bool
) -> tuple[Dataset | IterableDataset, UnpairedRows]:
    """Drops the rows without a text (no objective trains on an image alone) and, unless `keep_texts_alone` (the
    task trains texts without an image: retrieval and pre-training, `Task.texts_alone`), those without an image.
    Images are not decoded."""
    unpaired = UnpairedRows()
    decoded = dataset.features[image_column] if dataset.features else Image()
    raw = dataset.cast_column(image_column, Image(decode=False))
    columns = [image_column, text_column]

    def is_unpaired(image, text) -> bool:
        return image is None or not has_text(text)

    def is_kept(image, text) -> bool:
        return has_text(text) and (keep_texts_alone or image is not None)

    if isinstance(dataset, IterableDataset):

        def count_and_keep(image, text) -> bool:
            kept = is_kept(image, text)
            unpaired.count += is_unpaired(image, text)
            unpaired.dropped += not kept
            return kept

        return raw.filter(count_and_keep, input_columns=columns).cast_column(image_column, decoded), unpaired
    kept = raw.filter(is_kept, input_columns=columns)
    unpaired.count = len(raw.filter(is_unpaired, input_columns=columns))
    unpaired.dropped = len(raw) - len(kept)
    if unpaired.count:
        logger.warning(
            f"{unpaired.count} of {len(raw)} rows lack an image or a text; {unpaired.dropped} of them cannot be "
            "trained on and were dropped (texts without an image train as negatives and language models)."
        )
    return kept.cast_column(image_column, decoded), unpaired


def check_finite_loss(loss: torch.Tensor, step: int) -> None:
    """Raise before a NaN/inf loss reaches the optimizer, naming the step."""
    if not torch.isfinite(loss).all():
        raise FloatingPointError(
            f"The training loss is {loss.item()} at step {step}; stopping before the optimizer writes non-finite "
            "weights. The last checkpoint is intact: lower --learning_rate (or set --max_grad_norm) and resume "
            "with --resume_from_checkpoint."
        )
