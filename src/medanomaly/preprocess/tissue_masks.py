"""Classical breast and brain masks (no training): the breast region of a mammogram (pectoral
muscle removed on MLO views) and the brain of a T1/T2 MRI (Otsu head mask, erosion to cut the
skull, the largest component regrown). Built like the lung and body masks of
:mod:`medanomaly.preprocess.segment` (SciPy morphology, scikit-image Otsu), whose per-slice
helpers they share; each returns a ``uint8`` mask ``Volume`` on the input's grid.
"""

from __future__ import annotations

import numpy as np

from medanomaly.errors import InputError
from medanomaly.preprocess.checks import looks_like_hu, require_finite, require_scalar
from medanomaly.preprocess.morphology import dilate_in_plane, elliptic_disk, erode_in_plane
from medanomaly.preprocess.segment import (
    _fill_holes_per_slice,
    _largest_component,
    _mask_volume,
    _spacing_zyx,
)
from medanomaly.types import Volume

__all__ = ["breast_mask", "brain_mask"]


def breast_mask(image: Volume, remove_pectoral: bool | None = None) -> Volume:
    """Breast region in a mammogram or breast-ultrasound-like image (per slice for 3D input).

    Otsu threshold (scikit-image) -> largest component -> holes filled. For MLO views
    (``meta["view"] == "MLO"``, or ``remove_pectoral=True``) the pectoral muscle, the bright
    region in the upper corner at the chest wall, is removed: the chest-wall side is the image
    side with more breast; within the upper half, pixels brighter than the Otsu threshold of
    the breast, connected to the top chest-wall corner, with widths made non-increasing down
    the rows (the muscle is a triangle).

    Args:
        image: scalar 2D (one slice) or 3D image.
        remove_pectoral: force pectoral removal on/off; default: on for MLO views.

    Returns:
        uint8 Volume, 1 = breast.

    Raises:
        InputError: CT input (labelled CT, or unlabelled values in HU), NaNs, a constant image.
    """
    from scipy import ndimage

    require_scalar(image, "breast_mask")
    require_finite(image, "breast_mask")
    if image.modality.upper() == "CT" or (image.modality.upper() in ("", "OT") and looks_like_hu(image)):
        raise InputError("breast_mask expects a mammogram or ultrasound image, but this is a CT in HU")
    arr = np.asarray(image.array, dtype=np.float32)
    if float(arr.min()) == float(arr.max()):
        raise InputError("breast_mask: image is constant, no breast to find")
    if remove_pectoral is None:
        remove_pectoral = str(image.meta.get("view", "")).upper() == "MLO"
    out = np.zeros(arr.shape, bool)
    for z in range(arr.shape[0]):
        sl = arr[z]
        if sl.min() == sl.max():
            continue
        fg = sl > otsu_threshold(sl)
        if not fg.any():
            continue
        breast = ndimage.binary_fill_holes(_largest_component(fg))
        if remove_pectoral:
            breast &= ~_pectoral(sl, breast)
        out[z] = breast
    if not out.any():
        raise InputError("breast_mask: no breast region found")
    return _mask_volume(image, out, "breast")


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of ``values`` in their own unit, computed on them mapped to [0, 1] (float64): the same
    threshold for any unit, where skimage's between-class variance overflowed float32 for values of 1e19 and more
    (an int64 or float64 image: numpy's overflow warnings on the terminal and a threshold from infinities)."""
    from skimage.filters import threshold_otsu

    values = np.asarray(values, dtype=np.float64)
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        return lo
    return lo + float(threshold_otsu((values - lo) / (hi - lo))) * (hi - lo)


def _pectoral(sl: np.ndarray, breast: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    h, w = sl.shape
    flip = breast[:, w // 2 :].sum() > breast[:, : w // 2].sum()  # chest wall on the right
    img = sl[:, ::-1] if flip else sl
    br = breast[:, ::-1] if flip else breast
    values = img[br]
    if values.size < 10 or values.min() == values.max():
        return np.zeros_like(breast)
    bright = (img > otsu_threshold(values)) & br
    bright[h // 2 :] = False
    labels, _ = ndimage.label(bright)
    corner = labels[: max(h // 10, 1), : max(w // 10, 1)]
    ids = np.unique(corner[corner > 0])
    if ids.size == 0:
        return np.zeros_like(breast)
    region = np.isin(labels, ids)
    # Width per row (pixels of the region, median-smoothed over 9 rows against noise); below
    # the widest row the muscle narrows, so widths are made non-increasing there (a triangle).
    width = ndimage.median_filter(region.sum(axis=1), size=9, mode="nearest")
    top = int(np.argmax(width))
    width[top:] = np.minimum.accumulate(width[top:])
    pect = np.arange(w)[np.newaxis, :] < width[:, np.newaxis]
    pect &= br
    return pect[:, ::-1] if flip else pect


# --------------------------------------------------------------------------------------- brain
def brain_mask(mr: Volume, erosion_mm: float = 8.0, regrow_mm: float = 10.0) -> Volume:
    """Brain mask of a head MRI: Otsu -> erosion to cut the scalp -> largest component ->
    dilation back (a little further, within the Otsu foreground, so peripheral lesions stay
    in) -> holes filled per slice (a simple classical skull strip, in 3D).

    Args:
        mr: scalar head MRI (any weighting; CT is refused: use a HU window instead).
        erosion_mm: in-plane erosion radius separating brain from scalp, mm.
        regrow_mm: in-plane dilation radius growing the eroded brain back, mm.

    Returns:
        uint8 Volume, 1 = brain.

    Raises:
        InputError: input labelled as another modality than MR (CT, MG, US...), NaNs, or a constant image.
    """
    require_scalar(mr, "brain_mask")
    require_finite(mr, "brain_mask")
    if mr.modality.upper() not in ("", "OT", "MR"):  # a mammogram or an ultrasound gave a "brain" of 44.5 cm2
        raise InputError(f"brain_mask expects an MRI, got modality {mr.modality.upper()}")
    if mr.modality.upper() in ("", "OT") and looks_like_hu(mr):  # NRRD/NIfTI carry no modality
        lo = float(np.min(mr.array))
        raise InputError(f"brain_mask expects an MRI, but values look like CT in HU (minimum {lo:.0f}, air)")
    arr = np.asarray(mr.array, dtype=np.float32)
    if float(arr.min()) == float(arr.max()):
        raise InputError("brain_mask: image is constant")
    fg = arr > otsu_threshold(arr)
    _, sy, sx = _spacing_zyx(mr)
    core = erode_in_plane(fg, elliptic_disk(erosion_mm, sy, sx))
    if not core.any():
        core = fg
    core = _largest_component(core)
    brain = dilate_in_plane(core, elliptic_disk(regrow_mm, sy, sx)) & fg
    brain = _fill_holes_per_slice(brain)
    return _mask_volume(mr, brain, "brain")
