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
from medanomaly.types import Volume

#: Modalities whose voxels are not Hounsfield units.
NON_HU_MODALITIES = frozenset({"MR", "US", "MG", "CR", "DX", "XA", "RF", "PT", "NM", "OP", "SM", "IVUS"})


def require_scalar(volume: Volume, what: str = "this step") -> Volume:
    """Reject multi-component (RGB) volumes for operations defined on scalar images."""
    if volume.n_components != 1:
        raise InputError(f"{what} needs a scalar image, got {volume.n_components} components")
    return volume


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
    return volume


#: Smallest share of voxels at or below -500 HU for a CT in HU: its air (outside the body, lungs,
#: airways). The CTs we read hold 21-60 %; an MRI's few negative interpolation values do not count
#: (nibabel's anatomical.nii T1: 0.08 % of voxels below 0, minimum -610, used to be called CT).
MIN_AIR_FRACTION = 0.01


def looks_like_hu(volume: Volume) -> bool:
    """True when the values are plausible for CT in HU: air (minimum -3100..-500 HU and at least
    :data:`MIN_AIR_FRACTION` of the voxels at or below -500 HU), no huge values."""
    arr = volume.array
    lo, hi = float(np.min(arr)), float(np.max(arr))
    return -3100.0 <= lo <= -500.0 and hi <= 40000.0 and float(np.mean(arr <= -500.0)) >= MIN_AIR_FRACTION


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
    if image is not None and not mask.same_grid(image):
        raise InputError(f"{what}: mask is not on the image grid ({mask.shape} vs {image.shape})")
    arr = np.asarray(mask.array)
    if arr.ndim == 4:
        arr = arr[..., 0]
    boolean = arr > 0
    if not boolean.any():
        raise InputError(f"{what}: mask is empty")
    return boolean
