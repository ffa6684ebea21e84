"""Test-time augmentation: average the class probabilities over flipped copies of each image.

Flips are exact (no interpolation) and label-preserving for the lesion-level tasks here; the
identity is always included. For 2D images the default set is {identity, left-right, up-down}.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    >>> predict_proba_tta(net, torch.rand(3, 1, 4, 4).numpy()).shape
    (3, 2)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def default_flips(spatial_dims: int) -> tuple[tuple[int, ...], ...]:
    """Identity plus one flip per spatial axis (axis numbers of the spatial dims, 0-based)."""
    return ((),) + tuple((a,) for a in range(spatial_dims))


def predict_proba_tta(model, images: np.ndarray, flips: Sequence[Sequence[int]] | None = None,
                      batch_size: int = 64, temperature: float = 1.0) -> np.ndarray:
    """Mean softmax probability (N, K) over flipped versions of ``images`` (N, C, *spatial)."""
    from medanomaly.evaluate.calibration import softmax
    from medanomaly.train.loop import predict_logits

    spatial_dims = images.ndim - 2
    flips = default_flips(spatial_dims) if flips is None else flips
    total = None
    for axes in flips:
        x = np.flip(images, axis=tuple(2 + a for a in axes)) if axes else images
        p = softmax(predict_logits(model, np.ascontiguousarray(x), batch_size), temperature)
        total = p if total is None else total + p
    return total / len(flips)
