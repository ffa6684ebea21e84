"""Lesion measurements in physical units from a mask, its spacing and (optionally) the image.

Every number is computed on the source voxel grid, never on a resampled copy:

* ``volume_ml``: voxel count x voxel volume (pyradiomics ``VoxelVolume``), mL.
* ``max_diameter_mm``: largest distance between two vertices of the marching-cubes surface of
  the mask (iso-level 0.5, spacing applied), exactly how pyradiomics defines
  ``Maximum3DDiameter`` (its C ``cshape`` module meshes the padded mask with marching cubes and
  takes the largest vertex-vertex distance). We use scikit-image's ``marching_cubes`` for the mesh
  and restrict the O(n^2) search to the convex hull vertices (SciPy), which gives the same maximum.
* the IBSI / pyradiomics shape features (mesh volume, surface area, sphericity, principal axes,
  elongation, flatness, 2D diameters): see :mod:`medanomaly.quantify.shape`.
* ``long_axis_mm`` / ``short_axis_mm``: RECIST-style axes on the axial slice with the largest lesion
  area: the long axis is the largest distance between two points of the slice's marching-squares
  contour; the short axis is the lesion's extent perpendicular to the long axis.
* ``mean`` / ``max`` / ``std``: intensity statistics inside the mask (HU for CT).
* ``solid_fraction``: fraction of lesion voxels above the solid threshold (CT: -300 HU).

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> cube = np.zeros((5, 5, 5), np.uint8); cube[1:4, 1:4, 1:4] = 1
    >>> m = measure(Volume(cube, spacing=(1.0, 1.0, 1.0)))
    >>> round(m.volume_ml * 1000, 3)  # 27 voxels of 1 mm^3
    27.0
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.quantify.shape import max_distance, shape_features, surface_mesh
from medanomaly.geometry import is_orthonormal
from medanomaly.types import Finding, Measurements, Volume, intensity_unit

#: CT voxels above this (HU) count as solid; below as ground glass (Fleischner convention).
SOLID_THRESHOLD_HU = -300.0

__all__ = [
    "SOLID_THRESHOLD_HU",
    "axial_axes_mm",
    "intensity_unit",
    "lesion_box",
    "max_diameter_mm",
    "measure",
    "measure_lesions",
]


def on_image_grid(mask: Volume, image: Volume | None, tol: float = 1e-3) -> Volume:
    """``mask`` on ``image``'s grid: as it is when the grids are the same (``tol`` mm), or placed voxel for voxel
    when its voxel centres are the image's (a DICOM SEG spans only the slices its segments touch:
    :meth:`~medanomaly.types.Volume.placed_on`, nothing resampled); no image: the mask.

    Raises:
        InputError: any other grid, saying what differs: "the mask is not on the image grid: spacing (1, 1, 3) mm vs
            (1, 1, 2) mm".
    """
    mismatch = None if image is None else mask.grid_mismatch(image, tol)
    if mismatch is None:
        return mask
    placed = mask.placed_on(image)  # type: ignore[arg-type]
    if placed is None:
        raise InputError(f"the mask is not on the image grid: {mismatch}")
    return placed


def max_diameter_mm(mask: Volume) -> float:
    """Maximum 3D diameter (mm) of a binary mask: pyradiomics' ``Maximum3DDiameter`` definition.

    The mask is padded by one voxel, meshed by marching cubes at level 0.5 with the volume's
    spacing, and the largest vertex-to-vertex distance is returned (0 for an empty mask).
    """
    binary = np.asarray(mask.array[..., 0] if mask.array.ndim == 4 else mask.array) > 0
    if not binary.any():
        return 0.0
    return max_distance(surface_mesh(binary, mask.spacing, mask.direction).mm)


def _axial_metric(mask: Volume) -> np.ndarray:
    """2 x 2 matrix taking an in-slice index step (dy, dx) to mm in the slice's plane: diag(sy, sx), or on a sheared
    grid the slice's own metric (:func:`medanomaly.geometry.grid_metric_zyx`)."""
    if is_orthonormal(mask.direction):  # not sheared: exactly the two spacings
        return np.diag([float(mask.spacing[1]), float(mask.spacing[0])])
    return np.linalg.qr(mask.grid_metric_zyx[:, 1:])[1]


def axial_axes_mm(mask: Volume) -> tuple[float, float]:
    """(long axis, short axis) in mm on the axial slice of largest lesion area (RECIST style).

    The long axis is the largest distance between two points of the slice's marching-squares
    contour (level 0.5); the short axis is the extent of the contour perpendicular to it.
    """
    from skimage.measure import find_contours

    binary = np.asarray(mask.array) > 0
    if not binary.any():
        return 0.0, 0.0
    areas = binary.reshape(binary.shape[0], -1).sum(axis=1)
    z = int(np.argmax(areas))
    padded = np.pad(binary[z], 1).astype(np.float32)
    contours = find_contours(padded, 0.5)
    pts = np.concatenate(contours, axis=0) @ _axial_metric(mask).T  # (y, x) index -> in-plane mm
    if len(pts) < 2:
        return 0.0, 0.0
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist, squareform

    try:
        hull = pts[ConvexHull(pts).vertices]
    except QhullError:
        hull = pts
    dist = squareform(pdist(hull))
    i, j = np.unravel_index(int(np.argmax(dist)), dist.shape)
    long_axis = float(dist[i, j])
    if long_axis == 0.0:
        return 0.0, 0.0
    direction = (hull[j] - hull[i]) / long_axis
    normal = np.array([-direction[1], direction[0]])
    proj = hull @ normal
    return long_axis, float(proj.max() - proj.min())


def measure(
    mask: Volume,
    image: Volume | None = None,
    solid_threshold: float = SOLID_THRESHOLD_HU,
    unit: str | None = None,
) -> Measurements:
    """Measure one lesion: volume (mL; area in mm² too for a one-slice image), diameters (mm), shape features,
    intensity statistics.

    The lesion is measured as one object, whatever its number of connected parts (pyradiomics
    does the same); :func:`medanomaly.quantify.labels.measure_labels` also measures each part.

    Args:
        mask: binary lesion mask (non-zero = lesion) on its source grid.
        image: the image the mask belongs to (same grid), for intensity statistics; optional.
        solid_threshold: voxels of ``image`` above this value count as solid (HU for CT).
        unit: the image's intensity unit (``HU`` or ``a.u.``); None = :func:`intensity_unit` of ``image``
            (give it when ``image`` is a crop of a larger one: a crop inside a tumour has no air to tell HU by).

    Returns:
        The :class:`medanomaly.types.Measurements` of the lesion.

    Raises:
        InputError: the mask is empty, or the image is on another grid.
    """
    mask = on_image_grid(mask, image)
    binary = np.asarray(mask.array) > 0
    n_voxels = int(binary.sum())
    if n_voxels == 0:
        raise InputError("lesion mask is empty")
    volume_ml = n_voxels * mask.voxel_volume_mm3 / 1000.0
    one_slice = mask.shape[0] == 1  # a 2D image: its lesions have an area (mm²), not a volume
    area_mm2 = n_voxels * abs(float(np.linalg.det(_axial_metric(mask)))) if one_slice else float("nan")
    long_axis, short_axis = axial_axes_mm(mask)
    stats: dict[str, Any] = {}
    if image is not None:
        values = np.asarray(image.array, dtype=np.float64)[binary]
        unit = unit or intensity_unit(image)
        stats = {
            "mean": float(values.mean()),
            "max": float(values.max()),
            "std": float(values.std()),
            "solid_fraction": float((values > solid_threshold).mean()) if unit == "HU" else float("nan"),
            "intensity_unit": unit,
        }
    shape = shape_features(binary, mask.spacing, mask.direction).to_json()
    return Measurements(
        volume_ml=float(volume_ml),
        long_axis_mm=long_axis,
        short_axis_mm=short_axis,
        n_voxels=n_voxels,
        area_mm2=float(area_mm2),
        **shape,
        **stats,
    )


def lesion_box(mask: Volume, binary: np.ndarray) -> tuple[Any, Any]:
    """(centre LPS mm, bbox LPS mm) of the voxels of ``binary`` on ``mask``'s grid.

    The centre is the mean voxel centre; the box spans the outer faces of the extreme voxels.
    """
    idx = np.argwhere(binary)[:, ::-1].astype(np.float64)  # (x, y, z) indices
    centre = tuple(float(c) for c in mask.index_to_physical(idx.mean(axis=0)))
    lo = mask.index_to_physical(idx.min(axis=0) - 0.5)
    hi = mask.index_to_physical(idx.max(axis=0) + 0.5)
    corners = np.stack([lo, hi])
    bbox = (tuple(corners.min(axis=0).tolist()), tuple(corners.max(axis=0).tolist()))
    return centre, bbox


def measure_lesions(
    mask: Volume,
    image: Volume | None = None,
    label: str = "lesion",
    min_voxels: int = 1,
    solid_threshold: float = SOLID_THRESHOLD_HU,
) -> list[Finding]:
    """One measured :class:`Finding` per connected lesion (26-connectivity) of a mask.

    A given mask is the reference, so each finding's ``score`` is 1.0. Findings are sorted by
    volume, largest first.

    Raises:
        InputError: the mask has no lesion voxels, or does not fit the image grid.
    """
    from scipy import ndimage

    mask = on_image_grid(mask, image)
    binary = np.asarray(mask.array) > 0
    if not binary.any():
        raise InputError("lesion mask is empty")
    labels, n = ndimage.label(binary, structure=np.ones((3, 3, 3), bool))
    unit = intensity_unit(image) if image is not None else None
    findings = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        component = labels == i
        if component.sum() < min_voxels:
            continue
        comp_vol = mask.with_array(component.astype(np.uint8))
        centre, bbox = lesion_box(mask, component)
        findings.append(
            Finding(
                center_mm=centre,
                bbox_mm=bbox,
                score=1.0,
                label=label,
                mask=comp_vol,
                measurements=measure(comp_vol, image, solid_threshold, unit),
            )
        )
    findings.sort(key=lambda f: -f.measurements.volume_ml)  # type: ignore[union-attr]
    return findings
