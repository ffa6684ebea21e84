"""AUPRO: the area under the per-region-overlap curve up to a false-positive-rate limit, normalised.

The MVTec AD definition (Bergmann et al., IJCV 2021; also anomalib's ``AUPRO``): the ground-truth
anomaly mask of each image is split into connected components (*regions*). For a threshold ``t``
on the anomaly map, the per-region overlap is ``PRO(t) = mean over regions k of |{map >= t} n
R_k| / |R_k|`` (every region weighs the same, whatever its size: a small lesion counts as much as a
large one), and the false-positive rate is ``FPR(t) = |{map >= t} n N| / |N|`` with ``N`` the
normal pixels of all images. The PRO-vs-FPR curve is integrated (trapezoids) from FPR 0 to
``max_fpr`` (0.3 by convention; the curve is linearly interpolated at the limit) and divided by
``max_fpr``, so that a perfect map scores 1.0 and a random map ~ ``max_fpr / 2`` (0.15).

Here the curve is computed exactly (every distinct map value is a threshold), not on a grid of
sampled thresholds. Components are found per image with full connectivity (8-neighbours in 2D,
26 in 3D: a 3D volume passed as one image gives 3D regions, e.g. one per tumour). A ``valid`` mask
(brain or lung) restricts both the regions and the normal pixels.

Example:
    >>> import numpy as np
    >>> truth = np.zeros((4, 4), bool); truth[0, :2] = True
    >>> round(aupro([np.where(truth, 1.0, 0.0)], [truth]), 3)
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medanomaly.errors import InputError

__all__ = ["pro_curve", "aupro", "aupro_report"]


def _regions(masks: Sequence[np.ndarray], valid: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel region id (-1 = normal pixel) over all valid pixels, and each region's size."""
    from scipy import ndimage

    ids, sizes, offset = [], [], 0
    for mask, ok in zip(masks, valid, strict=False):
        truth = np.asarray(mask, bool) & ok
        labels, n = ndimage.label(truth, structure=np.ones((3,) * truth.ndim, bool))
        ids.append(np.where(labels[ok] > 0, labels[ok] - 1 + offset, -1))
        sizes.append(np.bincount(labels[ok].ravel(), minlength=n + 1)[1:])
        offset += n
    return np.concatenate(ids), np.concatenate(sizes) if sizes else np.zeros(0, int)


def pro_curve(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray],
              valid: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The exact PRO-vs-FPR curve over all thresholds (see the module docstring).

    Args:
        maps: anomaly maps, one per image (any shape; higher = more anomalous).
        masks: the ground-truth anomaly masks, same shapes.
        valid: optional bool masks of the pixels that count (brain, lung), same shapes.

    Returns:
        (fpr, pro): increasing FPR and PRO arrays starting at (0, 0) and ending at (1, 1).

    Raises:
        InputError: shapes differ, there is no anomalous region or no normal pixel.
    """
    if len(maps) != len(masks) or (valid is not None and len(valid) != len(maps)):
        raise InputError("AUPRO: maps, masks and valid regions must come in equal numbers")
    valid = [np.ones(np.shape(m), bool) for m in maps] if valid is None else [np.asarray(v, bool) for v in valid]
    for m, t, v in zip(maps, masks, valid, strict=False):
        if np.shape(m) != np.shape(t) or np.shape(m) != np.shape(v):
            raise InputError(f"AUPRO: map {np.shape(m)}, mask {np.shape(t)} and region {np.shape(v)} differ in shape")
    region, sizes = _regions(masks, valid)
    scores = np.concatenate([np.asarray(m, np.float64)[v] for m, v in zip(maps, valid, strict=False)])
    n_neg = int((region < 0).sum())
    if sizes.size == 0 or n_neg == 0:
        raise InputError(f"AUPRO needs anomalous regions and normal pixels ({sizes.size} regions, {n_neg} normal pixels)")
    order = np.argsort(-scores, kind="stable")
    ranked, where = scores[order], region[order]
    pro_step = np.where(where >= 0, 1.0 / (sizes.size * sizes[np.maximum(where, 0)]), 0.0)
    last = np.r_[np.flatnonzero(np.diff(ranked) != 0), ranked.size - 1]  # ties: one threshold per value
    fpr = np.r_[0.0, np.cumsum(where < 0)[last] / n_neg]  # integer counts: ends at exactly 1
    pro = np.r_[0.0, np.cumsum(pro_step)[last]]
    return np.minimum(fpr, 1.0), np.minimum(pro, 1.0)


def aupro(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], valid: Sequence[np.ndarray] | None = None,
          max_fpr: float = 0.3) -> float:  # fmt: skip
    """Normalised area under the PRO curve from FPR 0 to ``max_fpr`` (1.0 perfect, ~max_fpr/2 random)."""
    if not 0.0 < max_fpr <= 1.0:
        raise InputError(f"AUPRO: max_fpr must be in (0, 1], got {max_fpr}")
    fpr, pro = pro_curve(maps, masks, valid)
    keep = fpr <= max_fpr
    x, y = fpr[keep], pro[keep]
    if x[-1] < max_fpr:  # close the curve at the limit by linear interpolation
        i = min(int(np.searchsorted(fpr, max_fpr)), fpr.size - 1)
        y_lim = pro[i - 1] + (pro[i] - pro[i - 1]) * (max_fpr - fpr[i - 1]) / (fpr[i] - fpr[i - 1])
        x, y = np.r_[x, max_fpr], np.r_[y, y_lim]
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0) / max_fpr)


def aupro_report(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], valid: Sequence[np.ndarray] | None = None,
                 max_fpr: float = 0.3) -> dict[str, Any]:  # fmt: skip
    """AUPRO with what it was computed on, for ``metrics.json`` (``value`` None when undefined)."""
    valid_list = None if valid is None else list(valid)
    n_regions = len(_regions(masks, valid_list or [np.ones(np.shape(m), bool) for m in masks])[1])
    try:
        value: float | None = aupro(maps, masks, valid_list, max_fpr)
    except InputError:
        value = None
    return {"value": value, "max_fpr": max_fpr, "n_regions": n_regions, "normalised": True}
