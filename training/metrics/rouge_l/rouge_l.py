"""ROUGE-L (Lin, 2004): the F-measure of the longest common subsequence of words."""

import re

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
ROUGE-L of a prediction against one reference: with L the length of their longest common subsequence (words in
the same order, not necessarily adjacent), P = L / len(prediction), R = L / len(reference) and
F = (1 + beta^2) P R / (R + beta^2 P). A prediction scores the best F over its references; the corpus score is the
mean over predictions. Text is lowercased and split into words; punctuation is dropped.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): the generated texts.
    references (`list[list[str]]` or `list[str]`): the references of each prediction, or one each.
    beta (`float`, *optional*, defaults to 1.0): the weight of recall (1.0 is F1, as in `rouge_score`;
        the COCO caption evaluation uses 1.2).
Returns:
    `rouge_l` (`float` in [0, 1]).
Examples:
    >>> metric = load_metric("rouge_l")
    >>> metric.compute(predictions=["a red circle"], references=[["a big red circle"]])
    {'rouge_l': 0.857...}
"""


def tokenize(text: str) -> list[str]:
    return re.findall(r"\w+(?:'\w+)*", text.lower())


def lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for word in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if word == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def f_measure(prediction: list[str], reference: list[str], beta: float) -> float:
    lcs = lcs_length(prediction, reference)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(prediction), lcs / len(reference)
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RougeL(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Lin, ROUGE: A Package for Automatic Evaluation of Summaries, ACL workshop 2004.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
        )

    def _compute(self, predictions, references, beta=1.0):
        scores = []
        for prediction, refs in zip(predictions, references):
            refs = [refs] if isinstance(refs, str) else refs
            scores.append(max(f_measure(tokenize(prediction), tokenize(reference), beta) for reference in refs))
        return {"rouge_l": float(np.mean(scores))}
