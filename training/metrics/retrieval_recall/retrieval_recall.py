"""Recall@K of image-text retrieval in both directions, from a text-by-image similarity matrix."""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
Recall@K for text-to-image retrieval (each text queries the images) and image-to-text retrieval (each image queries
the texts): the fraction of queries with at least one correct item among the K best-scored ones.

Each text and each image carries an id; an item is correct for a query when their ids are equal. With one image
per text the ids are the image indices (the default); ids shared by several images or texts give several correct
items per query, e.g. SynthShapes' `canonical` description: a retrieved scene that reads the same is a hit.

Ties count against the query: the rank of a query's best correct item is the number of wrong items scoring at
least as high, so a model that scores everything alike gets no free hits.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[float]]`): one row per text: its similarity to each image, in a fixed image order
        (the `logits_per_text` matrix, num_texts x num_images). Rows may be added in batches (`add_batch`).
    references (`list[int]` or `list[str]`): the id of each text (the image it describes, or a group id).
    image_ids (`list[int]` or `list[str]`, *optional*): the id of each image (column); defaults to
        `range(num_images)`, so that `references` are plain column indices.
    k_values (`tuple[int]`, *optional*, defaults to `(1, 5, 10)`).
Returns:
    `text_to_image_recall@K` and `image_to_text_recall@K` (`float` in [0, 1]) for each K in `k_values`,
    and `mean_recall`: their mean.
Raises:
    ValueError if a text has no correct image or an image no correct text.
Examples:
    >>> metric = load_metric("retrieval_recall")
    >>> metric.compute(predictions=[[0.9, 0.1], [0.8, 0.3]], references=[0, 1], k_values=(1,))
    {'text_to_image_recall@1': 0.5, 'image_to_text_recall@1': 1.0, 'mean_recall': 0.75}
"""


def best_positive_rank(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """0-based rank of each row's best-scored positive column; ties with negatives count against it."""
    if not positive.any(axis=1).all():
        raise ValueError("Every query needs at least one correct item; check `references` and `image_ids`")
    best = np.where(positive, scores, -np.inf).max(axis=1, keepdims=True)
    return np.sum((scores >= best) & ~positive, axis=1)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RetrievalRecall(evaluate.Metric):
    def _info(self):
        rows = datasets.Sequence(datasets.Value("float32"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": rows, "references": datasets.Value("int64")}),
                datasets.Features({"predictions": rows, "references": datasets.Value("string")}),
            ],
        )

    def _compute(self, predictions, references, image_ids=None, k_values=(1, 5, 10)):
        scores = np.asarray(predictions, dtype=np.float32)
        image_ids = np.arange(scores.shape[1]) if image_ids is None else np.asarray(image_ids)
        if scores.ndim != 2 or scores.shape[1] != len(image_ids):
            raise ValueError(f"`predictions` must be num_texts x {len(image_ids)} (one column per image)")
        positive = np.asarray(references)[:, None] == image_ids[None, :]
        ranks = {
            "text_to_image": best_positive_rank(scores, positive),
            "image_to_text": best_positive_rank(scores.T, positive.T),
        }
        results = {f"{name}_recall@{k}": float(np.mean(rank < k)) for name, rank in ranks.items() for k in k_values}
        return {**results, "mean_recall": float(np.mean(list(results.values())))}
