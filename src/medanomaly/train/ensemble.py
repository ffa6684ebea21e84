"""Ensembles of classifiers: probability averaging and (weighted) majority voting.

Both take per-member class probabilities of shape (M, N, K) and return (N, K) rows that sum to 1:

* ``average``: the (weighted) mean probability, the usual deep-ensemble combination
  (Lakshminarayanan et al. 2017); keeps calibration information.
* ``vote``: each member votes for its arg-max class with its weight; the result is the weighted
  vote share per class (ties keep the share, so a 2-2 split reads 0.5 / 0.5).

Weights can come from validation scores (:func:`weights_from_scores`).

Example:
    >>> import numpy as np
    >>> p = np.array([[[0.9, 0.1]], [[0.4, 0.6]], [[0.3, 0.7]]])
    >>> combine(p, "average").round(3).tolist()
    [[0.533, 0.467]]
    >>> combine(p, "vote").round(3).tolist()
    [[0.333, 0.667]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medanomaly.errors import InputError

METHODS = ("average", "vote")


def normalised_weights(m: int, weights: Sequence[float] | None) -> np.ndarray:
    """The ``m`` members' weights normalised to sum 1 (equal when ``weights`` is None); anything else than ``m``
    finite non-negative numbers with a positive sum is one InputError."""
    if weights is None:
        return np.full(m, 1.0 / m)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (m,) or not np.isfinite(w).all() or np.any(w < 0) or w.sum() <= 0:  # NaN passed both tests
        raise InputError(f"ensemble weights must be {m} finite non-negative numbers with a positive sum")
    return w / w.sum()


def combine(member_probs: np.ndarray, method: str = "average", weights: Sequence[float] | None = None) -> np.ndarray:
    """Combine (M, N, K) member probabilities into (N, K) ensemble probabilities."""
    p = np.asarray(member_probs, dtype=np.float64)
    if p.ndim != 3:
        raise InputError(f"member probabilities must be (members, cases, classes), got {p.shape}")
    w = normalised_weights(p.shape[0], weights)
    if method == "average":
        return np.tensordot(w, p, axes=1)
    if method == "vote":
        votes = np.zeros(p.shape[1:])
        arg = p.argmax(axis=2)
        for member, wi in enumerate(w):
            votes[np.arange(p.shape[1]), arg[member]] += wi
        return votes / votes.sum(axis=1, keepdims=True)
    raise InputError(f"unknown ensemble method {method!r}; valid: {', '.join(METHODS)}")


def weights_from_scores(scores: Sequence[float], power: float = 1.0) -> np.ndarray:
    """Member weights proportional to ``score ** power`` (e.g. validation AUC); NaN scores get 0."""
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0).clip(min=0.0) ** power
    if s.sum() <= 0:
        return np.full(len(s), 1.0 / len(s))
    return s / s.sum()
