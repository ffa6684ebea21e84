"""The lungs of a chest CT, or a clear refusal: the check every lung recipe (detection, simulation,
patch datasets) runs before it searches or inserts anything.

Example:
    >>> MIN_LUNG_ML
    200.0
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medanomaly.errors import InputError
from medanomaly.types import Volume

#: A chest CT must show at least this much lung (mL, both lungs) to be searched for nodules.
MIN_LUNG_ML = 200.0

__all__ = ["MIN_LUNG_ML", "lung_region", "require_chest_ct"]


def require_chest_ct(ct: Volume, path: str | Path | None = None, what: str = "nodule detection") -> Volume:
    """Check that ``ct`` is a scalar CT in HU (modality CT, or unlabelled with an HU range); ``what`` names the step
    in the refusal ("nodule detection needs a CT in HU, ...").

    Raises:
        InputError: multi-component, NaNs, a non-CT modality (MR, US, ...) or a non-HU range.
    """
    from medanomaly.preprocess.checks import require_ct

    try:
        return require_ct(ct, what)
    except InputError as exc:
        raise InputError(exc.reason, path) from None


def lung_region(ct: Volume, path: str | Path | None = None, min_lung_ml: float = MIN_LUNG_ML,
                what: str = "nodule detection") -> Volume:  # fmt: skip
    """The lung mask (1 right, 2 left; :func:`medanomaly.preprocess.segment.lung_mask`) of a chest CT (``what``: the
    step that needs it, named when the image is not a CT).

    Raises:
        InputError: not a CT, or less than ``min_lung_ml`` of lung (a head CT, an abdomen CT).
    """
    from medanomaly.preprocess.segment import lung_mask

    require_chest_ct(ct, path, what)
    try:
        lungs = lung_mask(ct)
    except InputError as exc:
        raise InputError(f"no lungs found ({exc.reason})", path) from None
    lung_ml = float(np.count_nonzero(lungs.array)) * ct.voxel_volume_mm3 / 1000.0
    if lung_ml < min_lung_ml:
        raise InputError(
            f"no lungs found: {lung_ml:.0f} mL of lung-like air (< {min_lung_ml:.0f} mL); is this a chest CT?",
            path,
        )
    return lungs
