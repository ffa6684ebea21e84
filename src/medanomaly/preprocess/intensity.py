"""The intensity core: one table of named CT windows, and the array-level mappings every task uses.

These functions take and return plain NumPy arrays (float32), so hot paths (the detector's
sliding window, a training batch) call them without building Volumes; the Volume-level steps
(:func:`medanomaly.preprocess.enhance.window`, :mod:`medanomaly.preprocess.normalise`) and the
recorded pipeline steps call the same functions, so a replayed pipeline gives the same bits.

**Two lung windows, on purpose.** ``lung`` (-1350..150 HU, W1500/L-600) is radiology's lung
*display* window. ``lung_input`` (-1000..400 HU, W1400/L-300) is the *model input* window of
the nodule detector and of the ``ct_lung`` classification mode: it starts at air (nothing real
lies below -1000 HU, so the display window spends 23 % of the [0, 1] range on noise) and keeps
solid tissue and calcification apart up to +400 HU (the display window saturates at +150 HU).
The detector was trained on ``lung_input``; a saved model records its numbers, not the name.

Example:
    >>> import numpy as np
    >>> window_array(np.array([-2000, -300, 400, 900]), *WINDOWS["lung_input"]).tolist()
    [0.0, 0.5, 1.0, 1.0]
    >>> window_bounds("lung")
    (-1350.0, 150.0)
"""

from __future__ import annotations

import numpy as np

from medanomaly.errors import InputError

__all__ = ["WINDOWS", "INTENSITY_WINDOWS_HU", "window_bounds", "window_array", "percentile_unit_array", "robust_zscore_array"]

#: CT windows as (low, high) HU. ``lung`` is the W1500/L-600 display window, ``lung_input``
#: the detector's input window (see the module docstring); mediastinum W400/L40 (also the
#: classification ``ct_soft`` mode), bone W2000/L300, brain W80/L40, liver W150/L30, soft tissue
#: W400/L50, subdural W200/L75, cardiac W800/L200 (soft tissue and contrast-enhanced blood
#: pool: the fusion CT default).
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-1350.0, 150.0),
    "lung_input": (-1000.0, 400.0),
    "mediastinum": (-160.0, 240.0),
    "bone": (-700.0, 1300.0),
    "brain": (0.0, 80.0),
    "liver": (-45.0, 105.0),
    "soft_tissue": (-150.0, 250.0),
    "subdural": (-25.0, 175.0),
    "cardiac": (-200.0, 600.0),
}


#: The classification intensity modes that are CT windows (HU): ``ct_lung`` is ``lung_input``,
#: ``ct_soft`` is ``mediastinum``. (The other mode, ``percentile``, scales each image by itself.)
INTENSITY_WINDOWS_HU: dict[str, tuple[float, float]] = {"ct_lung": WINDOWS["lung_input"],
                                                        "ct_soft": WINDOWS["mediastinum"]}  # fmt: skip


def window_bounds(preset: str | None = None, low: float | None = None, high: float | None = None) -> tuple[float, float]:
    """(low, high) HU of a named ``preset``, or the explicit ``low``/``high``.

    Raises:
        InputError: unknown preset, a missing bound, or ``high <= low``.
    """
    if preset is not None:
        if preset not in WINDOWS:
            raise InputError(f"unknown window preset {preset!r}; valid: {', '.join(sorted(WINDOWS))}")
        lo, hi = WINDOWS[preset]
    else:
        if low is None or high is None:
            raise InputError("window: give a preset or both low and high")
        lo, hi = float(low), float(high)
    if not hi > lo:
        raise InputError(f"window: high ({hi}) must exceed low ({lo})")
    return lo, hi


def window_array(hu: np.ndarray, low: float, high: float) -> np.ndarray:
    """Intensities (HU for CT) clipped to ``low..high`` and scaled to [0, 1], float32.

    Elementwise, so any shape (channels included); NaN stays NaN (callers that must refuse NaN
    check first). Monotone non-decreasing.
    """
    lo, hi = float(low), float(high)
    arr = (np.asarray(hu, dtype=np.float32) - lo) / (hi - lo)
    return np.clip(arr, 0.0, 1.0)


def percentile_unit_array(array: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Map intensities to [0, 1] by robust percentiles of the whole array (any unit), float32.

    Per-image scaling makes sources with different units (CT in HU, mammograms in raw detector
    counts, 8-bit PNGs) comparable; a constant image maps to zeros.
    """
    a = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(a, [low_pct, high_pct]) if a.size else (0.0, 0.0)
    if not np.isfinite(hi - lo) or hi - lo <= 1e-12:
        return np.zeros_like(a, dtype=np.float32)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def robust_zscore_array(array: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0) -> np.ndarray:
    """Z-score from the voxels between the ``low_pct`` and ``high_pct`` percentiles, float32.

    For modalities without an absolute unit (MR): the mean and standard deviation ignore the
    tails (background, bright vessels), so one outlier does not rescale the image. A constant
    image keeps a standard deviation of 1.
    """
    a = np.asarray(array, dtype=np.float32)
    low, high = np.percentile(a, [low_pct, high_pct])
    inside = a[(a >= low) & (a <= high)]
    mean, std = float(inside.mean()), float(inside.std()) or 1.0
    return ((a - mean) / std).astype(np.float32)
