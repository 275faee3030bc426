"""Corpus-level BLEU (Papineni et al., 2002) with several references per prediction."""

import math
import re
from collections import Counter

import datasets
import evaluate


_DESCRIPTION = """
Corpus BLEU: the geometric mean of the modified n-gram precisions p_1 .. p_N (each clipped count of an n-gram is at
most its largest count in one reference; counts are summed over the corpus before dividing) times the brevity
penalty BP = exp(1 - r / c) when c < r, else 1, with c the total prediction length and r the sum, over
predictions, of the reference length closest to the prediction's (the shorter one on a tie).
Text is lowercased and split into words; punctuation is dropped, as the COCO caption evaluation does.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): the generated texts.
    references (`list[list[str]]` or `list[str]`): the references of each prediction, or one each.
    max_order (`int`, *optional*, defaults to 4): N, the longest n-gram.
    smooth (`bool`, *optional*, defaults to `False`): add one to the matches and the candidates of every order
        (Lin and Och, 2004), so a missing order does not zero the score.
Returns:
    `bleu` (`float` in [0, 1]), `precisions` (`list[float]`, p_1 .. p_N), `brevity_penalty`, `length_ratio` (c / r),
    `translation_length` (c), `reference_length` (r).
Examples:
    >>> metric = load_metric("bleu")
    >>> metric.compute(predictions=["a red circle on the left"], references=[["a red circle on the left"]])["bleu"]
    1.0
"""


def tokenize(text: str) -> list[str]:
    return re.findall(r"\w+(?:'\w+)*", text.lower())


def ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def closest_length(length: int, references: list[list[str]]) -> int:
    return min((abs(len(reference) - length), len(reference)) for reference in references)[1]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Bleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Papineni et al., BLEU: a Method for Automatic Evaluation of Machine Translation, ACL 2002.",
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

    def _compute(self, predictions, references, max_order=4, smooth=False):
        matches, candidates = [0] * max_order, [0] * max_order
        prediction_length = reference_length = 0
        for prediction, refs in zip(predictions, references):
            words = tokenize(prediction)
            refs = [tokenize(reference) for reference in ([refs] if isinstance(refs, str) else refs)]
            prediction_length += len(words)
            reference_length += closest_length(len(words), refs)
            for n in range(1, max_order + 1):
                counts = ngrams(words, n)
                max_reference_counts = Counter()
                for reference in refs:
                    max_reference_counts |= ngrams(reference, n)
                matches[n - 1] += sum((counts & max_reference_counts).values())
                candidates[n - 1] += sum(counts.values())
        if smooth:
            precisions = [(m + 1) / (c + 1) for m, c in zip(matches, candidates)]
        else:
            precisions = [m / c if c else 0.0 for m, c in zip(matches, candidates)]
        geometric_mean = math.exp(sum(map(math.log, precisions)) / max_order) if min(precisions) > 0 else 0.0
        ratio = prediction_length / reference_length if reference_length else 0.0
        brevity_penalty = 1.0 if ratio > 1.0 else (math.exp(1 - 1 / ratio) if ratio else 0.0)
        return {
            "bleu": geometric_mean * brevity_penalty,
            "precisions": precisions,
            "brevity_penalty": brevity_penalty,
            "length_ratio": ratio,
            "translation_length": prediction_length,
            "reference_length": reference_length,
        }
