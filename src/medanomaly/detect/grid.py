"""Input checks and the detector grid: chest-CT validation, lung region, resampling, windowing.

The detector runs on a fixed physical grid (default 1.25 x 1.25 x 5 mm) so one network serves
scans of any in-plane resolution; findings and masks are mapped back to the source grid before
anything is measured. Resampling and windowing are the :mod:`medanomaly.preprocess` ones
(SimpleITK, Gaussian anti-aliasing before down-sampling; the ``lung_input`` HU window).

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> v = Volume(np.zeros((4, 20, 20), np.float32), spacing=(0.5, 0.5, 5.0))
    >>> to_grid(v, (1.0, 1.0, 5.0)).shape
    (4, 10, 10)
"""

from __future__ import annotations

import numpy as np

from medanomaly.preprocess.intensity import WINDOWS, window_array
from medanomaly.preprocess.lungs import MIN_LUNG_ML, lung_region, require_chest_ct
from medanomaly.types import Volume


__all__ = [
    "MIN_LUNG_ML",
    "lung_region",
    "require_chest_ct",
    "resample_like",
    "to_grid",
    "window",
]






def window(hu: np.ndarray, lo: float = WINDOWS["lung_input"][0], hi: float = WINDOWS["lung_input"][1]) -> np.ndarray:
    """HU clipped to [lo, hi] and scaled to [0, 1] (float32): the network's input
    (:func:`medanomaly.preprocess.intensity.window_array`; default the ``lung_input`` window)."""
    return window_array(hu, lo, hi)


def to_grid(volume: Volume, spacing: tuple[float, float, float], nearest: bool = False) -> Volume:
    """Resample onto a grid of ``spacing`` (mm, x/y/z) covering the same physical extent.

    Images: float32, Gaussian anti-aliasing (sigma = half the new spacing on shrinking axes),
    linear, 0 outside; label masks (``nearest=True``): nearest neighbour, type kept. This is
    :func:`medanomaly.preprocess.resample.resample_to_spacing` (the recorded detection recipe
    replays the same call).
    """
    from medanomaly.preprocess.resample import resample_to_spacing

    if nearest:
        return resample_to_spacing(volume, spacing, interpolator="nearest", default=0.0)
    image = volume.with_array(np.asarray(volume.array, dtype=np.float32))
    return resample_to_spacing(image, spacing, interpolator="linear", default=0.0, antialias=True)


def resample_like(volume: Volume, reference: Volume, nearest: bool = False, default: float = 0.0) -> Volume:
    """Resample ``volume`` onto ``reference``'s grid (linear in float32, or nearest for labels);
    the result carries ``reference``'s metadata. Uses :func:`medanomaly.preprocess.resample.resample_like`."""
    from medanomaly.preprocess.resample import resample_like as resample_onto

    source = volume if nearest else volume.with_array(np.asarray(volume.array, dtype=np.float32))
    out = resample_onto(source, reference, interpolator="nearest" if nearest else "linear", default=default)
    return reference.with_array(out.array)
