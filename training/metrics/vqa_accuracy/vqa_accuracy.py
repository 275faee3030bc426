"""VQA accuracy: min(#annotators who gave the predicted answer / 3, 1), after the VQA answer normalisation."""

import re
from collections import defaultdict

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
The VQA accuracy of Antol et al. (2015): an answer is fully right when at least 3 annotators gave it,
acc = min(#matching references / 3, 1), averaged over questions. With fewer than 3 references the divisor is their
number, so a single reference makes it exact match. Answers are normalised first as the official evaluation does
(without its contraction table): lowercase, punctuation removed, number words to digits ("two" -> "2"), articles
dropped, whitespace collapsed.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): the predicted answer of each question.
    references (`list[list[str]]` or `list[str]`): the annotators' answers of each question, or one answer each.
    question_types (`list[str]`, *optional*): a type per question (e.g. SynthShapes' `question_types`) to also
        report the accuracy of each type.
Returns:
    `vqa_accuracy` (`float` in [0, 1]), and `vqa_accuracy_<type>` for each type given.
Examples:
    >>> metric = load_metric("vqa_accuracy")
    >>> metric.compute(predictions=["Two", "red"], references=[["2"], ["blue", "red", "red", "red"]])
    {'vqa_accuracy': 1.0}
"""

_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5"}
_NUMBERS |= {"six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}


def normalize_answer(answer: str) -> str:
    answer = re.sub(r"(\d),(\d)", r"\1\2", answer.lower())  # "1,000" -> "1000"
    answer = re.sub(r"(?<!\d)\.(?!\d)", "", answer)  # a period that is not a decimal point
    words = re.sub(r"[^\w\s'.]", " ", answer).split()
    return " ".join(_NUMBERS.get(word, word) for word in words if word not in _ARTICLES)


def vqa_score(prediction: str, references: list[str]) -> float:
    matches = sum(normalize_answer(reference) == normalize_answer(prediction) for reference in references)
    return min(matches / min(3, len(references)), 1.0)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VqaAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Antol et al., VQA: Visual Question Answering, ICCV 2015.",
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

    def _compute(self, predictions, references, question_types=None):
        references = [[reference] if isinstance(reference, str) else reference for reference in references]
        scores = [vqa_score(prediction, answers) for prediction, answers in zip(predictions, references)]
        results = {"vqa_accuracy": float(np.mean(scores))}
        by_type = defaultdict(list)
        for question_type, score in zip(question_types or [], scores):
            by_type[question_type].append(score)
        return results | {f"vqa_accuracy_{name}": float(np.mean(values)) for name, values in sorted(by_type.items())}
