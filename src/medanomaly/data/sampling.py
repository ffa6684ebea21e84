"""Class imbalance: inverse-frequency class weights and a weighted random sampler.

Example:
    >>> import numpy as np
    >>> class_weights(np.array([0, 0, 0, 1]), 2).round(3).tolist()
    [0.667, 2.0]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from torch.utils.data import WeightedRandomSampler


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights ``n / (k * count_c)`` (scikit-learn's "balanced"); absent classes get 0."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    weights = np.zeros(n_classes)
    present = counts > 0
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def sample_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-sample weights so that every class is drawn equally often in expectation."""
    return class_weights(labels, n_classes)[np.asarray(labels, dtype=np.int64)]


def weighted_sampler(labels: np.ndarray, n_classes: int, seed: int = 0,
                     num_samples: int | None = None) -> WeightedRandomSampler:
    """A seeded ``torch.utils.data.WeightedRandomSampler`` balancing the classes (with replacement)."""
    import torch
    from torch.utils.data import WeightedRandomSampler

    w = torch.as_tensor(sample_weights(labels, n_classes), dtype=torch.double)
    gen = torch.Generator().manual_seed(int(seed))
    return WeightedRandomSampler(w, num_samples or len(w), replacement=True, generator=gen)
