"""Bounding boxes of boolean masks, for working on a lesion's neighbourhood instead of a whole CT.

Both come from the mask's projections (``any`` along the other axes): no index list, so a whole CT's mask
(15 million voxels) costs a few passes, not an ``argwhere`` of every voxel.

Example:
    >>> import numpy as np
    >>> mask = np.zeros((4, 10, 10), bool); mask[1, 3:5, 6] = True
    >>> [a.tolist() for a in mask_bounds(mask)]
    [[1, 3, 6], [2, 5, 7]]
    >>> padded_box(mask, 2.0, np.array([5.0, 1.0, 1.0]))   # 2 mm + 1 voxel on each side, clipped
    (slice(0, 4, None), slice(0, 8, None), slice(3, 10, None))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["mask_bounds", "padded_box"]


def mask_bounds(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box ``lo <= index < hi`` (per array axis) of a non-empty boolean mask."""
    lo, hi = [], []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        lo.append(hit[0])
        hi.append(hit[-1] + 1)
    return np.array(lo), np.array(hi)


def padded_box(mask: np.ndarray, margin_mm: float, spacing_zyx: Sequence[float] | np.ndarray) -> tuple[slice, ...]:
    """A non-empty mask's bounding box grown by ``margin_mm`` (+1 voxel) on each side, clipped to the array;
    ``spacing_zyx``: voxel size per array axis (mm)."""
    pad = np.ceil(margin_mm / np.asarray(spacing_zyx, float)).astype(int) + 1
    lo, hi = mask_bounds(mask)
    lo = np.maximum(lo - pad, 0)
    hi = np.minimum(hi + pad, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
