"""Input checks shared by the preprocessing functions; every failure is an :class:`InputError`.

Example:
    >>> import numpy as np
    >>> from medanomaly.types import FLOAT32_MAX, Volume
    >>> require_finite(Volume(np.zeros((1, 2, 2), np.float32))).shape
    (1, 2, 2)
"""

from __future__ import annotations

import numpy as np

from medanomaly.errors import InputError
from medanomaly.types import MIN_AIR_FRACTION as MIN_AIR_FRACTION  # the HU test lives in types (quantify uses it)
from medanomaly.types import NON_HU_MODALITIES as NON_HU_MODALITIES
from medanomaly.types import FLOAT32_MAX, Volume
from medanomaly.types import looks_like_hu as looks_like_hu
from medanomaly.types import require_scalar as require_scalar  # quantify uses it too


def require_finite(volume: Volume, what: str = "this step") -> Volume:
    """Reject volumes that contain NaN or infinite voxels, or values float32 cannot hold (:func:`unusable_values`).

    Raises:
        InputError: with the count of such voxels.
    """
    reason = unusable_values(volume.array)
    if reason:
        raise InputError(f"{what}: {reason}")
    if volume.array.size == 0:
        raise InputError(f"{what}: image is empty")
    return volume


def unusable_values(array: np.ndarray) -> str | None:
    """Why ``array``'s values cannot be computed on ("image has 3 NaN/infinite voxels; ...", or values beyond
    float32's range: :func:`require_float32_range`), or None. For checks over plain arrays too (a training set's
    loaders, where a NaN image had become an all-zero one without a word)."""
    arr = np.asarray(array)
    if arr.dtype.kind != "f":
        return None
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        return f"image has {bad} NaN/infinite voxels; fill or crop them first"
    return _beyond_float32(arr)


def _beyond_float32(arr: np.ndarray) -> str | None:
    if arr.dtype.kind != "f" or arr.dtype.itemsize <= 4 or not arr.size:
        return None
    with np.errstate(invalid="ignore"):
        beyond = np.abs(arr) > FLOAT32_MAX  # NaN compares False: require_finite counts those
    count = int(np.count_nonzero(beyond))
    if not count:
        return None
    largest = float(np.max(np.abs(arr[beyond])))
    return (f"image has {count} voxels beyond float32's range (up to {largest:.3g}; float32 holds "
            f"{FLOAT32_MAX:.3g}), where models, steps and statistics overflow: rescale it")


def require_float32_range(volume: Volume, what: str = "this step") -> Volume:
    """Refuse a float64 image with voxels beyond float32's range (|value| > 3.4e38): every model and step computes
    in float32, where they became infinite without a word (numpy's overflow warnings on the terminal, then "brain_mask:
    image is constant" for an image of values up to 1e300). A NIfTI whose ``scl_slope`` takes its values there is read
    as float64 (``info`` shows them) and refused here.

    Raises:
        InputError: with the count and the largest magnitude.
    """
    reason = _beyond_float32(np.asarray(volume.array))
    if reason:
        raise InputError(f"{what}: {reason}")
    return volume


def require_ct(volume: Volume, what: str = "this step") -> Volume:
    """Require a CT volume in HU: modality CT, or an unlabelled image whose range looks like HU.

    Raises:
        InputError: the modality is known not to be CT (e.g. MR), or the values are not HU.
    """
    require_scalar(volume, what)
    require_finite(volume, what)
    modality = volume.modality.upper()
    if modality in NON_HU_MODALITIES:
        raise InputError(f"{what} needs a CT in HU, got modality {modality}")
    if not looks_like_hu(volume):
        lo, hi = float(np.min(volume.array)), float(np.max(volume.array))
        raise InputError(
            f"{what} needs a CT in HU, but values range {lo:.7g}..{hi:.7g} (no air near -1000 HU)"
        )
    return volume


def require_mask(mask: Volume, image: Volume | None = None, what: str = "this step") -> np.ndarray:
    """Boolean array of a non-empty mask, checked to lie on ``image``'s grid when given.

    Raises:
        InputError: the mask is empty or on another grid.
    """
    mismatch = None if image is None else mask.grid_mismatch(image)
    if mismatch is not None:
        raise InputError(f"{what}: mask is not on the image grid ({mismatch})")
    arr = np.asarray(mask.array)
    if arr.ndim == 4:
        arr = arr[..., 0]
    boolean = arr > 0
    if not boolean.any():
        raise InputError(f"{what}: mask is empty")
    return boolean
