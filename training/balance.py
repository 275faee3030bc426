"""Imbalanced classes: class weights for the loss (`--class_weighting`) and a balanced sampler (`--balanced_sampling`).

- `inverse_frequency`: w_c proportional to 1 / n_c.
- `effective_number` (Cui et al., CVPR 2019): w_c proportional to (1 - beta) / (1 - beta^n_c), which grows more
  slowly than 1 / n_c for the rare classes (a thousandth sample of a class adds less than its first); beta = 0.999.
Both are normalised to a mean of 1 over the classes, so a balanced data set gets weights of 1 (the plain loss).

The sampler draws rows with replacement, each with probability proportional to 1 / n_(its class), so every class
is drawn equally often in expectation; an epoch is still `len(dataset)` draws.
"""

from collections import Counter

import numpy as np
import torch


CLASS_WEIGHTINGS = ("none", "inverse_frequency", "effective_number")
EFFECTIVE_NUMBER_BETA = 0.999


def class_weights(labels: list[int], num_labels: int, method: str) -> list[float]:
    """One weight per class id 0 .. num_labels - 1, from the training labels."""
    if method not in CLASS_WEIGHTINGS[1:]:
        raise ValueError(f"--class_weighting {method!r}: choose one of {', '.join(CLASS_WEIGHTINGS)}.")
    counts = np.bincount(labels, minlength=num_labels).astype(np.float64)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0).tolist()
        raise ValueError(f"Classes {missing} have no training row: no weight can be computed for them.")
    if method == "inverse_frequency":
        weights = 1.0 / counts
    else:
        weights = (1.0 - EFFECTIVE_NUMBER_BETA) / (1.0 - EFFECTIVE_NUMBER_BETA**counts)
    return [float(w) for w in weights / weights.mean()]


def balanced_sampler(labels: list[int], seed: int) -> torch.utils.data.WeightedRandomSampler:
    """Draws `len(labels)` rows with replacement, every class equally likely. Its generator is seeded, and accelerate
    broadcasts its state from the main process at every epoch, so under `accelerate launch` all processes draw the same
    sequence and each takes its own batches of it."""
    counts = Counter(labels)
    weights = torch.tensor([1.0 / counts[label] for label in labels], dtype=torch.double)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.WeightedRandomSampler(weights, len(labels), replacement=True, generator=generator)
