"""Input checks and the detector grid: chest-CT validation, lung region, resampling, windowing.

The detector runs on a fixed physical grid (default 1.25 x 1.25 x 5 mm) so one network serves
scans of any in-plane resolution; findings and masks are mapped back to the source grid before
anything is measured. Resampling uses SimpleITK (Gaussian anti-aliasing before down-sampling).

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> v = Volume(np.zeros((4, 20, 20), np.float32), spacing=(0.5, 0.5, 5.0))
    >>> to_grid(v, (1.0, 1.0, 5.0)).shape
    (4, 10, 10)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medanomaly.errors import InputError
from medanomaly.types import Volume

#: A chest CT must show at least this much lung (mL, both lungs) to be searched for nodules.
MIN_LUNG_ML = 200.0

__all__ = [
    "MIN_LUNG_ML",
    "crop_geometry",
    "lung_region",
    "require_chest_ct",
    "resample_like",
    "to_grid",
    "window",
]


def require_chest_ct(ct: Volume, path: str | Path | None = None) -> Volume:
    """Check that ``ct`` is a scalar CT in HU (modality CT, or unlabelled with an HU range).

    Raises:
        InputError: multi-component, NaNs, a non-CT modality (MR, US, ...) or a non-HU range.
    """
    from medanomaly.preprocess.checks import require_ct

    try:
        return require_ct(ct, "nodule detection")
    except InputError as exc:
        raise InputError(exc.reason, path) from None


def lung_region(ct: Volume, path: str | Path | None = None, min_lung_ml: float = MIN_LUNG_ML) -> Volume:
    """The lung mask (1 right, 2 left; :func:`medanomaly.preprocess.segment.lung_mask`) of a chest CT.

    Raises:
        InputError: not a CT, or less than ``min_lung_ml`` of lung (a head CT, an abdomen CT).
    """
    from medanomaly.preprocess.segment import lung_mask

    require_chest_ct(ct, path)
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


def window(hu: np.ndarray, lo: float = -1000.0, hi: float = 400.0) -> np.ndarray:
    """HU clipped to [lo, hi] and scaled to [0, 1] (float32): the network's input."""
    arr = (np.asarray(hu, dtype=np.float32) - lo) / (hi - lo)
    return np.clip(arr, 0.0, 1.0)


def to_grid(volume: Volume, spacing: tuple[float, float, float], nearest: bool = False) -> Volume:
    """Resample onto a grid of ``spacing`` (mm, x/y/z) covering the same physical extent.

    Linear interpolation after Gaussian anti-aliasing (sigma = half the down-sampling factor in
    voxels) for images; nearest neighbour for label masks (``nearest=True``).
    """
    import SimpleITK as sitk

    src = np.asarray(volume.spacing)
    dst = np.asarray(spacing, dtype=np.float64)
    size = [max(int(round(n * s / d)), 1) for n, s, d in zip(volume.size_xyz, src, dst, strict=True)]
    image = volume.to_sitk()
    if not nearest:
        image = sitk.Cast(image, sitk.sitkFloat32)
        sigma = [0.5 * d if d > s * 1.01 else 0.0 for s, d in zip(src, dst, strict=True)]
        if any(sigma):
            image = sitk.SmoothingRecursiveGaussian(image, [max(s, 1e-3) for s in sigma])
    # Keep the physical centre of the first voxel's footprint: shift the origin by half the change.
    origin = volume.index_to_physical(0.5 * (dst / src) - 0.5)
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetSpacing(tuple(dst.tolist()))
    ref.SetOrigin(tuple(float(o) for o in origin))
    ref.SetDirection(tuple(volume.direction.ravel()))
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    out = sitk.Resample(image, ref, sitk.Transform(), interp, 0.0)
    array = sitk.GetArrayFromImage(out)
    if nearest:
        array = array.astype(volume.array.dtype)
    return Volume(array, spacing=tuple(dst), origin=tuple(origin), direction=volume.direction, meta=volume.meta)


def crop_geometry(reference: Volume, lo_zyx: np.ndarray, hi_zyx: np.ndarray) -> Volume:
    """An empty Volume with the geometry of ``reference[lo:hi]`` (z, y, x index box)."""
    lo = np.asarray(lo_zyx, int)
    hi = np.asarray(hi_zyx, int)
    shape = tuple(int(v) for v in hi - lo)
    origin = reference.index_to_physical(lo[::-1].astype(float))
    return Volume(
        np.zeros(shape, np.uint8), spacing=reference.spacing, origin=tuple(origin), direction=reference.direction
    )


def resample_like(volume: Volume, reference: Volume, nearest: bool = False, default: float = 0.0) -> Volume:
    """Resample ``volume`` onto ``reference``'s grid (linear in float32, or nearest for labels);
    the result carries ``reference``'s metadata. Uses :func:`medanomaly.preprocess.resample.resample_like`."""
    from medanomaly.preprocess.resample import resample_like as resample_onto

    source = volume if nearest else volume.with_array(np.asarray(volume.array, dtype=np.float32))
    out = resample_onto(source, reference, interpolator="nearest" if nearest else "linear", default=default)
    return reference.with_array(out.array)
