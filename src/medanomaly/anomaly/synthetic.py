"""Synthetic anomalies made from normal slices, for label-free model selection (never the test).

Half the slices get one or two lesions: a smooth-edged ellipse whose intensity is set to a random
brain rank (bright or dark, like enhancing tumour or necrosis), or a CutPaste patch copied from
elsewhere in the same slice. Everything made here is SYNTHETIC.
"""

from __future__ import annotations

import numpy as np

__all__ = ["make_synthetic"]


def _ellipse(size: int, rng: np.random.Generator, brain: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(brain)
    if ys.size < 50:
        return None
    k = rng.integers(ys.size)
    cy, cx = ys[k], xs[k]
    ry, rx = rng.uniform(0.04, 0.12, 2) * size
    yy, xx = np.mgrid[:size, :size]
    d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    return np.clip(1.5 - d, 0.0, 1.0) * brain  # soft edge, 1 inside


def make_synthetic(images: np.ndarray, masks: np.ndarray, seed: int = 0,
                   fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Insert synthetic lesions into a copy of normal common-grid slices.

    Args:
        images: (N, S, S) normal slices (brain ranks 0..1).
        masks: (N, S, S) brain masks.
        seed: random seed.
        fraction: share of slices that get lesions.

    Returns:
        (images with lesions, (N, S, S) bool lesion masks).
    """
    rng = np.random.default_rng(seed)
    out = images.copy()
    lesions = np.zeros(images.shape, bool)
    size = images.shape[-1]
    for i in np.flatnonzero(rng.random(len(images)) < fraction):
        for _ in range(int(rng.integers(1, 3))):
            weight = _ellipse(size, rng, masks[i])
            if weight is None:
                continue
            if rng.random() < 0.7:
                target = rng.choice([rng.uniform(0.9, 1.0), rng.uniform(0.0, 0.15)])
                patch = np.full(out[i].shape, target, np.float32)
            else:  # CutPaste: the same slice shifted
                shift = rng.integers(-size // 3, size // 3, 2)
                patch = np.roll(images[i], tuple(shift), axis=(0, 1))
            out[i] = (1 - weight) * out[i] + weight * patch
            lesions[i] |= weight > 0.5
    return out.astype(np.float32), lesions
