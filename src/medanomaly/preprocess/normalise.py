"""Intensity normalisation: min-max to 0..1, z-score (within a mask), percentile clipping, HU clip,
per-image percentile scaling to 0..1 and robust z-score (the classification and fusion inputs).

NumPy one-liners (MONAI's ``ScaleIntensity``/``NormalizeIntensity`` do the same on tensors;
these avoid importing torch and take a mask ``Volume`` checked to lie on the same grid).

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> v = Volume(np.array([[[2.0, 4.0, 6.0]]]))
    >>> minmax(v).array.tolist()
    [[[0.0, 0.5, 1.0]]]
    >>> [round(float(x), 3) for x in zscore(v).array.ravel()]
    [-1.225, 0.0, 1.225]
"""

from __future__ import annotations

import numpy as np

from medanomaly.errors import InputError
from medanomaly.preprocess.checks import require_ct, require_finite, require_mask, require_scalar
from medanomaly.preprocess.intensity import percentile_unit_array, robust_zscore_array
from medanomaly.types import Volume

__all__ = ["minmax", "zscore", "percentile_clip", "hu_clip", "percentile_unit", "robust_zscore"]


def _values(volume: Volume, mask: Volume | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    require_scalar(volume, what)
    require_finite(volume, what)
    arr = np.asarray(volume.array, dtype=np.float64)
    if mask is None:
        return arr, arr.ravel()
    return arr, arr[require_mask(mask, volume, what)]


def minmax(volume: Volume, mask: Volume | None = None) -> Volume:
    """Rescale to 0..1 by the min and max (inside ``mask`` if given; values outside are clipped).

    A constant image maps to all zeros.
    """
    arr, vals = _values(volume, mask, "minmax")
    lo, hi = float(vals.min()), float(vals.max())
    out = np.zeros_like(arr) if hi == lo else np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    return volume.with_array(out.astype(np.float32))


def zscore(volume: Volume, mask: Volume | None = None) -> Volume:
    """Subtract the mean and divide by the standard deviation (both from inside ``mask`` if given).

    Raises:
        InputError: the (masked) image is constant, so the z-score is undefined.
    """
    arr, vals = _values(volume, mask, "zscore")
    std = float(vals.std())
    if std == 0.0:
        raise InputError("zscore: image is constant (standard deviation 0)")
    out = (arr - float(vals.mean())) / std
    return volume.with_array(out.astype(np.float32))


def percentile_clip(volume: Volume, lower: float = 0.5, upper: float = 99.5, mask: Volume | None = None) -> Volume:
    """Clip to the ``lower``..``upper`` percentiles (inside ``mask`` if given); unit unchanged."""
    if not 0.0 <= lower < upper <= 100.0:
        raise InputError(f"percentile_clip: need 0 <= lower < upper <= 100, got {lower}, {upper}")
    arr, vals = _values(volume, mask, "percentile_clip")
    lo, hi = np.percentile(vals, [lower, upper])
    return volume.with_array(np.clip(arr, lo, hi).astype(np.float32))


def hu_clip(volume: Volume, low: float = -1024.0, high: float = 3071.0) -> Volume:
    """Clip a CT to ``low..high`` HU (float32, still HU)."""
    require_ct(volume, "hu_clip")
    if not high > low:
        raise InputError(f"hu_clip: high ({high}) must exceed low ({low})")
    return volume.with_array(np.clip(np.asarray(volume.array, np.float32), low, high))


def _per_channel(volume: Volume, fn, what: str) -> np.ndarray:  # noqa: ANN001 - array -> array
    """``fn`` on each component of ``volume`` separately (statistics per channel), float32."""
    require_finite(volume, what)
    arr = volume.array
    if arr.ndim == 3:
        return fn(arr)
    return np.stack([fn(arr[..., c]) for c in range(arr.shape[-1])], axis=-1)


def percentile_unit(volume: Volume, low_pct: float = 0.5, high_pct: float = 99.5) -> Volume:
    """Scale each channel to 0..1 by its own ``low_pct``..``high_pct`` percentiles (float32).

    The classification ``percentile`` intensity mode
    (:func:`~medanomaly.preprocess.intensity.percentile_unit_array`); a constant channel maps to 0.
    """
    if not 0.0 <= low_pct < high_pct <= 100.0:
        raise InputError(f"percentile_unit: need 0 <= low < high <= 100, got {low_pct}, {high_pct}")
    return volume.with_array(_per_channel(volume, lambda a: percentile_unit_array(a, low_pct, high_pct),
                                          "percentile_unit"))  # fmt: skip


def robust_zscore(volume: Volume, low_pct: float = 1.0, high_pct: float = 99.0) -> Volume:
    """Z-score from the voxels between two percentiles (all components together), float32.

    The fusion input of a modality without absolute units (MR); see
    :func:`~medanomaly.preprocess.intensity.robust_zscore_array`.
    """
    if not 0.0 <= low_pct < high_pct <= 100.0:
        raise InputError(f"robust_zscore: need 0 <= low < high <= 100, got {low_pct}, {high_pct}")
    require_finite(volume, "robust_zscore")
    return volume.with_array(robust_zscore_array(volume.array, low_pct, high_pct))
