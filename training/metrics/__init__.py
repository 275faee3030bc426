"""The project's `evaluate` metric modules, one folder each, loaded from disk: the Hub's metric scripts are
unreachable offline, and these travel with the code.

    >>> from training.metrics import load_metric
    >>> load_metric("classification").compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.666..., 'macro_f1': 0.666...}
"""

from pathlib import Path

import evaluate


METRICS_DIR = Path(__file__).parent
METRIC_NAMES = ("bleu", "cider", "classification", "retrieval_recall", "rouge_l", "vqa_accuracy")


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """`evaluate.load` of the module `training/metrics/<name>/<name>.py`; `kwargs` go to `evaluate.load`
    (`experiment_id`, `num_process`, `process_id`, ... for distributed evaluation)."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; choose one of {METRIC_NAMES}")
    return evaluate.load(str(METRICS_DIR / name), **kwargs)
