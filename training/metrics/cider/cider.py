"""CIDEr-D (Vedantam et al., 2015) as computed by the COCO caption evaluation (pycocoevalcap's `Cider`)."""

import math
import re
from collections import Counter

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
CIDEr-D: consensus of a caption with its references through tf-idf weighted n-grams (n = 1..4).
- Document frequency df(g): the number of corpus items (predictions with their references) whose references hold
  the n-gram g; the idf is log(num_items) - log(max(1, df(g))), so the score depends on the evaluated corpus and
  is 0 for a corpus of one item.
- Each sentence is a vector per n: count(g) * idf(g). For a prediction h and a reference s, the n-gram score is
  sum_g min(h_g, s_g) * s_g / (|h| |s|) (clipping: repeating a word does not pay), times the length penalty
  exp(-(len(h) - len(s))^2 / (2 sigma^2)).
- An item scores 10 * mean over n of the mean over its references; the corpus score is the mean over items.
Text is lowercased and split into words; punctuation is dropped.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): the generated captions.
    references (`list[list[str]]` or `list[str]`): the reference captions of each prediction, or one each.
    sigma (`float`, *optional*, defaults to 6.0): the width of the gaussian length penalty.
Returns:
    `cider` (`float`, 0 to 10 for a caption equal to all its references, higher is better).
Examples:
    >>> metric = load_metric("cider")
    >>> metric.compute(predictions=["a red circle", "a blue square"], references=[["a red circle"], ["a blue square"]])
    {'cider': 7.5...}
"""

MAX_ORDER = 4


def tokenize(text: str) -> list[str]:
    return re.findall(r"\w+(?:'\w+)*", text.lower())


def ngram_counts(words: list[str]) -> Counter:
    return Counter(tuple(words[i : i + n]) for n in range(1, MAX_ORDER + 1) for i in range(len(words) - n + 1))


def tfidf(counts: Counter, document_frequency: Counter, log_num_items: float) -> list[dict]:
    """One vector (n-gram -> count * idf) per order n."""
    vectors = [{} for _ in range(MAX_ORDER)]
    for gram, count in counts.items():
        vectors[len(gram) - 1][gram] = count * (log_num_items - math.log(max(1, document_frequency[gram])))
    return vectors


def similarity(hypothesis: list[dict], reference: list[dict], length_delta: int, sigma: float) -> float:
    """The mean over orders of the clipped cosine similarity, times the length penalty."""
    scores = []
    for hyp, ref in zip(hypothesis, reference):
        dot = sum(min(weight, ref.get(gram, 0.0)) * ref.get(gram, 0.0) for gram, weight in hyp.items())
        norms = math.sqrt(sum(w * w for w in hyp.values())) * math.sqrt(sum(w * w for w in ref.values()))
        scores.append(dot / norms if norms else 0.0)
    return float(np.mean(scores)) * math.exp(-(length_delta**2) / (2 * sigma**2))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Cider(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Vedantam et al., CIDEr: Consensus-based Image Description Evaluation, CVPR 2015.",
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

    def _compute(self, predictions, references, sigma=6.0):
        predictions = [tokenize(prediction) for prediction in predictions]
        references = [[tokenize(r) for r in ([refs] if isinstance(refs, str) else refs)] for refs in references]
        document_frequency = Counter(gram for refs in references for gram in set().union(*map(ngram_counts, refs)))
        log_num_items = math.log(len(predictions))

        def vectorize(words: list[str]) -> list[dict]:
            return tfidf(ngram_counts(words), document_frequency, log_num_items)

        scores = []
        for prediction, refs in zip(predictions, references):
            hypothesis = vectorize(prediction)
            sims = [similarity(hypothesis, vectorize(ref), len(prediction) - len(ref), sigma) for ref in refs]
            scores.append(10.0 * float(np.mean(sims)))
        return {"cider": float(np.mean(scores))}
