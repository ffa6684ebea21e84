"""Contrast: CT windows by name, multi-window channels, CLAHE, histogram equalisation, gamma, unsharp.

Windowing is ``clip(hu, low, high)`` rescaled to 0..1 (:func:`~medanomaly.preprocess.intensity.window_array`,
the one implementation every task calls): we write the one line in NumPy rather
than calling MONAI's ``ScaleIntensityRange`` (same result) so that preprocessing does not
import torch; ``bench/bench_lung_pipeline.py`` times both. CLAHE, equalisation, gamma and
unsharp masking are scikit-image (MONAI has no CLAHE).

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> ct = Volume(np.array([[[-2000, -600, 500]]], np.int16), meta={"modality": "CT"})
    >>> window(ct, "lung").array.round(2).tolist()
    [[[0.0, 0.5, 1.0]]]
"""

from __future__ import annotations

import numpy as np

from medanomaly.errors import InputError
from medanomaly.preprocess import intensity as _intensity
from medanomaly.preprocess.checks import require_ct, require_finite, require_scalar
from medanomaly.types import Volume

__all__ = ["WINDOWS", "window", "multi_window", "clahe", "equalize", "gamma", "unsharp"]

#: Named CT windows (low, high) HU: one table, kept in :mod:`medanomaly.preprocess.intensity`.
WINDOWS = _intensity.WINDOWS
_window_bounds = _intensity.window_bounds


def window(volume: Volume, preset: str | None = None, low: float | None = None, high: float | None = None) -> Volume:
    """Clip to a CT window and rescale to 0..1 (float32); monotone non-decreasing in HU.

    Args:
        volume: CT in HU (a named preset refuses MR/US and values that are not HU).
        preset: a name from :data:`WINDOWS` (lung, mediastinum, bone, brain, liver, ...).
        low / high: explicit window in HU (any modality; every component alike) when ``preset``
            is None.

    Returns:
        float32 Volume in 0..1 with ``meta["window_center"/"window_width"]`` set.
    """
    lo, hi = _window_bounds(preset, low, high)
    if preset is not None:
        require_ct(volume, f"window preset {preset!r}")
    else:
        require_finite(volume, "window")
    out = _intensity.window_array(volume.array, lo, hi)
    return volume.with_array(out, window_center=(lo + hi) / 2, window_width=hi - lo)


def multi_window(volume: Volume, presets: tuple[str, ...] = ("lung", "mediastinum", "bone")) -> Volume:
    """Stack several CT windows as channels: a (z, y, x, c) float32 Volume, ``meta["channels"]``."""
    if not presets:
        raise InputError("multi_window: give at least one preset")
    channels = [window(volume, p).array for p in presets]
    stacked = np.stack(channels, axis=-1)
    meta = {k: v for k, v in volume.meta.items() if k not in ("window_center", "window_width")}
    return Volume(stacked, spacing=volume.spacing, origin=volume.origin, direction=volume.direction,
                  meta={**meta, "channels": ",".join(presets)})  # fmt: skip


def _unit_range(volume: Volume, what: str) -> np.ndarray:
    require_scalar(volume, what)
    require_finite(volume, what)
    arr = np.asarray(volume.array, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if hi == lo:
        return np.zeros_like(arr)
    return (arr - lo) / (hi - lo)


def clahe(volume: Volume, clip_limit: float = 0.01, kernel_size: int | None = None, per_slice: bool = True) -> Volume:
    """Contrast-limited adaptive histogram equalisation (scikit-image ``equalize_adapthist``).

    The image is min-max scaled to 0..1 first; output is float32 in 0..1.

    Args:
        clip_limit: contrast limit, 0..1.
        kernel_size: tile size in pixels (default 1/8 of the image).
        per_slice: CLAHE per axial slice (2D); False runs scikit-image's 3D CLAHE.
    """
    from skimage.exposure import equalize_adapthist

    unit = _unit_range(volume, "clahe")
    if volume.is_2d or per_slice:
        out = np.stack([equalize_adapthist(unit[z], kernel_size=kernel_size, clip_limit=clip_limit)
                        for z in range(unit.shape[0])])  # fmt: skip
    else:
        out = equalize_adapthist(unit, kernel_size=kernel_size, clip_limit=clip_limit)
    return volume.with_array(out.astype(np.float32))


def equalize(volume: Volume, nbins: int = 256, mask: Volume | None = None) -> Volume:
    """Global histogram equalisation to 0..1 (scikit-image ``equalize_hist``), optionally from
    the histogram inside ``mask`` only."""
    from skimage.exposure import equalize_hist

    from medanomaly.preprocess.checks import require_mask

    if isinstance(nbins, bool) or not isinstance(nbins, int | np.integer) or not 2 <= nbins <= 65536:
        raise InputError(f"equalize: nbins must be a whole number in 2..65536, got {nbins!r}")
    require_scalar(volume, "equalize")
    require_finite(volume, "equalize")
    arr = np.asarray(volume.array, dtype=np.float64)
    m = require_mask(mask, volume, "equalize") if mask is not None else None
    out = equalize_hist(arr, nbins=nbins, mask=m)
    return volume.with_array(out.astype(np.float32))


def gamma(volume: Volume, gamma: float = 1.0) -> Volume:
    """Gamma correction ``out = in ** gamma`` on an image already in 0..1 (window/normalise first).

    Raises:
        InputError: values outside 0..1, or ``gamma <= 0``.
    """
    from skimage.exposure import adjust_gamma

    require_scalar(volume, "gamma")
    require_finite(volume, "gamma")
    if gamma <= 0:
        raise InputError(f"gamma must be > 0, got {gamma}")
    arr = np.asarray(volume.array, dtype=np.float32)
    if arr.min() < 0 or arr.max() > 1:
        raise InputError("gamma needs intensities in 0..1; apply window or minmax first")
    return volume.with_array(adjust_gamma(arr, gamma=gamma).astype(np.float32))


def unsharp(volume: Volume, radius_mm: float = 1.0, amount: float = 1.0) -> Volume:
    """Unsharp masking (scikit-image ``unsharp_mask``), in-plane radius in mm, range preserved."""
    from skimage.filters import unsharp_mask

    require_scalar(volume, "unsharp")
    require_finite(volume, "unsharp")
    if radius_mm <= 0:
        raise InputError(f"unsharp: radius_mm must be > 0, got {radius_mm}")
    sx, sy, _ = volume.spacing
    sigma = (0.0, radius_mm / sy, radius_mm / sx)
    arr = np.asarray(volume.array, dtype=np.float32)
    out = unsharp_mask(arr, radius=sigma, amount=amount, preserve_range=True)
    return volume.with_array(out.astype(np.float32))
