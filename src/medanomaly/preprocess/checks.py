"""Input checks shared by the preprocessing functions; every failure is an :class:`InputError`.

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> require_finite(Volume(np.zeros((1, 2, 2), np.float32))).shape
    (1, 2, 2)
"""

from __future__ import annotations

import numpy as np

from medanomaly.errors import InputError
from medanomaly.types import MIN_AIR_FRACTION as MIN_AIR_FRACTION  # the HU test lives in types (quantify uses it)
from medanomaly.types import NON_HU_MODALITIES as NON_HU_MODALITIES
from medanomaly.types import Volume
from medanomaly.types import looks_like_hu as looks_like_hu
from medanomaly.types import require_scalar as require_scalar  # quantify uses it too


def require_finite(volume: Volume, what: str = "this step") -> Volume:
    """Reject volumes that contain NaN or infinite voxels.

    Raises:
        InputError: with the count of non-finite voxels.
    """
    arr = volume.array
    if np.issubdtype(arr.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise InputError(f"{what}: image has {bad} NaN/infinite voxels; fill or crop them first")
    if arr.size == 0:
        raise InputError(f"{what}: image is empty")
    return require_float32_range(volume, what)


#: The largest magnitude float32 holds, the type every model and step computes in.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def require_float32_range(volume: Volume, what: str = "this step") -> Volume:
    """Refuse a float64 image with voxels beyond float32's range (|value| > 3.4e38): every model and step computes
    in float32, where they became infinite without a word (numpy's overflow warnings on the terminal, then "brain_mask:
    image is constant" for an image of values up to 1e300). A NIfTI whose ``scl_slope`` takes its values there is read
    as float64 (``info`` shows them) and refused here.

    Raises:
        InputError: with the count and the largest magnitude.
    """
    arr = volume.array
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4 and arr.size:
        with np.errstate(invalid="ignore"):
            beyond = np.abs(arr) > FLOAT32_MAX  # NaN compares False: require_finite counts those
        count = int(np.count_nonzero(beyond))
        if count:
            largest = float(np.max(np.abs(arr[beyond])))
            raise InputError(f"{what}: image has {count} voxels beyond float32's range (up to {largest:.3g}; "
                             f"float32 holds {FLOAT32_MAX:.3g}), where models, steps and statistics overflow: rescale it")
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
            f"{what} needs a CT in HU, but values range {lo:.0f}..{hi:.0f} (no air near -1000 HU)"
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
