"""Accuracy, macro-averaged F1 and per-class recall of single-label predictions, with numpy only."""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
Accuracy (the fraction of predictions equal to their reference) and macro F1 (the unweighted mean over classes of
F1 = 2 * TP / (2 * TP + FP + FN)). A class that is neither predicted nor referenced has no F1 and is left out; a
class with TP = FP = FN = 0 cannot occur otherwise, so no F1 is ever undefined.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted class ids.
    references (`list[int]`): true class ids.
    labels (`list[int]`, *optional*): the classes averaged over by macro F1; defaults to those that occur in
        `predictions` or `references` (as scikit-learn does). Pass every class id to count a class the model
        never predicts and the batch never holds as F1 = 0.
Returns:
    `accuracy` (`float`): in [0, 1].
    `macro_f1` (`float`): in [0, 1].
    `recall` (`list[float]`): TP / (TP + FN) of each class of `labels`, in that order (0 for a class never referenced).
Examples:
    >>> metric = load_metric("classification")
    >>> metric.compute(predictions=[0, 1, 1, 2], references=[0, 1, 0, 2])
    {'accuracy': 0.75, 'macro_f1': 0.777..., 'recall': [0.5, 1.0, 1.0]}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Classification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, labels=None):
        predictions, references = np.asarray(predictions), np.asarray(references)
        labels = np.union1d(predictions, references) if labels is None else np.asarray(labels)
        true_positives = np.array([np.sum((predictions == c) & (references == c)) for c in labels])
        predicted = np.array([np.sum(predictions == c) for c in labels])
        actual = np.array([np.sum(references == c) for c in labels])
        denominator = predicted + actual  # = 2 TP + FP + FN
        f1 = np.divide(2 * true_positives, denominator, out=np.zeros(len(labels)), where=denominator > 0)
        recall = np.divide(true_positives, actual, out=np.zeros(len(labels)), where=actual > 0)
        return {
            "accuracy": float(np.mean(predictions == references)),
            "macro_f1": float(np.mean(f1)),
            "recall": [float(value) for value in recall],
        }
