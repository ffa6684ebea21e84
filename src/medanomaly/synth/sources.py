"""Real chest CTs as backgrounds for simulation: the CT (HU), its lung mask and the zone to keep
clear (real lesions grown by a margin), read once and shared by every simulator.

Example:
    >>> SourceScan.__dataclass_fields__.keys() >= {"ct", "lung", "exclude"}
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medanomaly.boxes import padded_box
from medanomaly.types import Volume

__all__ = ["SourceScan", "exclusion_zone", "load_source"]


@dataclass(frozen=True, eq=False)
class SourceScan:
    """A real chest CT used as background: image (HU), lung mask (1 right, 2 left), exclusion zone.

    Attributes:
        name: short technical name (no PHI), e.g. "lung1".
        ct: the CT in HU.
        lung: lung mask on ``ct``'s grid.
        exclude: uint8 mask of regions excluded from simulation and training (real lesions grown
            by the margin), or None.
        lesion: the real lesion mask when known (for reporting), or None.
    """

    name: str
    ct: Volume
    lung: Volume
    exclude: Volume | None = None
    lesion: Volume | None = None



def exclusion_zone(lesion: Volume, margin_mm: float) -> Volume:
    """``lesion`` grown by ``margin_mm`` (Euclidean, physical spacing): uint8 mask."""
    from scipy import ndimage

    binary = np.asarray(lesion.array) > 0
    if not binary.any():
        return lesion.with_array(np.zeros(lesion.shape, np.uint8))
    sx, sy, sz = lesion.spacing
    # Work in the lesion's bounding box grown by the margin (a full-volume EDT is 10x slower).
    box = padded_box(binary, margin_mm, (sz, sy, sx))
    dist = ndimage.distance_transform_edt(~binary[box], sampling=(sz, sy, sx))
    out = np.zeros(binary.shape, np.uint8)
    out[box] = dist <= margin_mm
    return lesion.with_array(out)


def load_source(
    name: str,
    image: str | Path,
    lesion_mask: str | Path | None = None,
    exclude_margin_mm: float = 20.0,
) -> SourceScan:
    """Read a chest CT (and its real lesion mask, if any) and build a :class:`SourceScan`.

    Raises:
        InputError: the image is not a chest CT with lungs, or the mask is missing / off-grid.
    """
    from medanomaly.preprocess.lungs import lung_region
    from medanomaly.errors import InputError
    from medanomaly.io import read

    if lesion_mask is not None and not Path(lesion_mask).exists():
        raise InputError("lesion mask not found", lesion_mask)
    ct = read(image)
    lung = lung_region(ct, image)
    lesion = exclude = None
    if lesion_mask is not None:
        lesion = read(lesion_mask)
        if not lesion.same_grid(ct, tol=1e-3):
            raise InputError("lesion mask is not on the image grid", lesion_mask)
        lesion = lesion.with_array((np.asarray(lesion.array) > 0).astype(np.uint8))
        exclude = exclusion_zone(lesion, exclude_margin_mm)
    return SourceScan(name=name, ct=ct, lung=lung, exclude=exclude, lesion=lesion)
