"""IBSI / pyradiomics 3D shape features of one binary mask, in mm, mm^2 and mL.

Defined as pyradiomics' ``shape`` class defines them (IBSI chapter 3.1), on the source voxel grid:

* the **surface mesh** is the marching-cubes isosurface (level 0.5) of the mask cropped to its
  bounding box and padded by one voxel, with the voxel spacing applied (scikit-image
  ``marching_cubes``; pyradiomics uses its own C implementation of the same algorithm, so the
  vertices, which lie on voxel-edge midpoints, are the same);
* ``mesh_volume_ml``: the volume the mesh encloses (sum of signed tetrahedra origin-triangle), mL;
* ``surface_area_mm2``: the sum of the mesh's triangle areas, mm^2;
* ``sphericity``: (36 pi V^2)^(1/3) / A with the mesh volume V and area A (1 for a sphere);
* ``max_diameter_mm``: the largest distance between two mesh vertices (``Maximum3DDiameter``);
* ``max_2d_diameter_slice_mm`` / ``_row_mm`` / ``_column_mm``: the largest distance between two
  mesh vertices in one axial (index z constant), sagittal (x constant) and coronal (y constant)
  plane: pyradiomics' ``Maximum2DDiameterSlice``, ``...Row`` and ``...Column``;
* ``major_axis_mm`` / ``minor_axis_mm`` / ``least_axis_mm``: 4 sqrt(lambda) of the eigenvalues of the
  covariance of the lesion's voxel-centre coordinates in mm (largest, middle, smallest);
* ``elongation`` = sqrt(lambda_minor / lambda_major), ``flatness`` = sqrt(lambda_least / lambda_major),
  0..1 (undefined, ``nan``, when the lesion is a single voxel).

Distances do not depend on the image direction when it is a rotation, so it is not applied; a sheared grid (a
sheared NIfTI sform, a gantry-tilted CT converted without correction) is measured with its true lengths and angles
(``direction``, :func:`medanomaly.geometry.grid_metric_zyx`).

Example:
    >>> import numpy as np
    >>> cube = np.zeros((5, 5, 5), bool); cube[1:4, 1:4, 1:4] = True
    >>> f = shape_features(cube, spacing=(1.0, 1.0, 2.0))
    >>> round(f.major_axis_mm, 2), round(f.minor_axis_mm, 2)  # z is twice as long
    (6.53, 3.27)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medanomaly.geometry import grid_metric_zyx, is_orthonormal

__all__ = ["ShapeFeatures", "SurfaceMesh", "max_distance", "principal_axes_mm", "shape_features", "surface_mesh"]


@dataclass(frozen=True)
class SurfaceMesh:
    """A marching-cubes surface of a mask.

    Attributes:
        index: (N, 3) vertex positions in voxel indices (z, y, x) of the source grid; they lie on
            voxel-edge midpoints, so ``2 * index`` is integral.
        mm: (N, 3) the same vertices in mm relative to voxel (0, 0, 0): (z, y, x) times the spacing, or on a sheared
            grid in a frame turned with it (:func:`medanomaly.geometry.grid_metric_zyx`).
        faces: (M, 3) triangles (vertex numbers).
        metric: the sheared grid's metric (None when it is not sheared).
    """

    index: np.ndarray
    mm: np.ndarray
    faces: np.ndarray
    metric: np.ndarray | None = None


@dataclass(frozen=True)
class ShapeFeatures:
    """Shape features of one lesion (see the module docstring for each definition)."""

    mesh_volume_ml: float
    surface_area_mm2: float
    sphericity: float
    major_axis_mm: float
    minor_axis_mm: float
    least_axis_mm: float
    elongation: float
    flatness: float
    max_diameter_mm: float
    max_2d_diameter_slice_mm: float
    max_2d_diameter_row_mm: float
    max_2d_diameter_column_mm: float

    def to_json(self) -> dict[str, float]:
        return asdict(self)


def surface_mesh(binary: np.ndarray, spacing: tuple[float, float, float], direction: Any = None) -> SurfaceMesh:
    """Marching-cubes surface (level 0.5) of a non-empty (z, y, x) mask, padded by one voxel.

    Args:
        binary: (z, y, x) mask, non-zero = lesion; must not be empty.
        spacing: voxel size in mm, (x, y, z) like :attr:`medanomaly.types.Volume.spacing`.
        direction: the grid's direction (:attr:`medanomaly.types.Volume.direction`); matters only when sheared.
    """
    from skimage.measure import marching_cubes

    mask = np.asarray(binary) > 0
    nz = np.nonzero(mask)
    lo = np.array([a.min() for a in nz])
    hi = np.array([a.max() for a in nz])
    crop = mask[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1]
    padded = np.pad(crop, 1).astype(np.float32)
    verts, faces, _, _ = marching_cubes(padded, level=0.5, method="lewiner")
    index = verts.astype(np.float64) + (lo - 1)  # back onto the source grid
    shear = _shear_metric(spacing, direction)
    mm = index * np.array(spacing, dtype=np.float64)[::-1] if shear is None else index @ shear.T
    return SurfaceMesh(index=index, mm=mm, faces=np.asarray(faces), metric=shear)


def _shear_metric(spacing: tuple[float, float, float], direction: Any) -> np.ndarray | None:
    """The grid's metric (:func:`medanomaly.geometry.grid_metric_zyx`) when it is sheared, else None (then mm are
    exactly index times spacing, as before shears were measured)."""
    if direction is None or is_orthonormal(direction):
        return None
    return grid_metric_zyx(spacing, direction)


def max_distance(points: np.ndarray) -> float:
    """Largest pairwise distance among ``points`` (N, d), searched over their convex hull."""
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist

    if len(points) < 2:
        return 0.0
    candidates = points
    if len(points) > 3 + points.shape[1]:
        try:
            candidates = points[ConvexHull(points).vertices]
        except QhullError:  # flat or degenerate point set: use every point
            candidates = points
    return float(pdist(candidates).max())


def _plane_diameter(mesh: SurfaceMesh, axis: int) -> float:
    """Largest vertex-vertex distance (mm) among vertices sharing one index coordinate on ``axis``, in the plane's
    own mm coordinates (on a sheared grid its 2 x 2 metric: the 3D frame's two other axes are not the plane's)."""
    keys = np.rint(2.0 * mesh.index[:, axis]).astype(np.int64)
    others = [a for a in range(3) if a != axis]
    plane = None if mesh.metric is None else np.linalg.qr(mesh.metric[:, others])[1]
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    best = 0.0
    for group in np.split(order, bounds):
        if len(group) > 1:
            points = mesh.mm[group][:, others] if plane is None else mesh.index[group][:, others] @ plane.T
            best = max(best, max_distance(points))
    return best


def _mesh_volume_area(mesh: SurfaceMesh) -> tuple[float, float]:
    """(enclosed volume mm^3, surface area mm^2) of a closed triangle mesh."""
    v0, v1, v2 = (mesh.mm[mesh.faces[:, i]] for i in range(3))
    cross = np.cross(v1 - v0, v2 - v0)
    area = 0.5 * float(np.linalg.norm(cross, axis=1).sum())
    volume = abs(float(np.einsum("ij,ij->i", v0, np.cross(v1, v2)).sum()) / 6.0)
    return volume, area


def principal_axes_mm(binary: np.ndarray, spacing: tuple[float, float, float], direction: Any = None) -> np.ndarray:
    """Eigenvalues (mm^2, descending) of the covariance of the voxel-centre coordinates in mm.

    The covariance is the population one (divided by the voxel count), as in pyradiomics.
    """
    idx = np.argwhere(np.asarray(binary) > 0).astype(np.float64)  # (n, 3) z, y, x
    shear = _shear_metric(spacing, direction)
    coords = idx * np.array(spacing, dtype=np.float64)[::-1] if shear is None else idx @ shear.T
    coords -= coords.mean(axis=0)
    cov = coords.T @ coords / len(coords)
    return np.clip(np.sort(np.linalg.eigvalsh(cov))[::-1], 0.0, None)


def shape_features(binary: np.ndarray, spacing: tuple[float, float, float], direction: Any = None) -> ShapeFeatures:
    """IBSI / pyradiomics shape features of a non-empty (z, y, x) mask with spacing (x, y, z) mm (and the grid's
    ``direction``, which matters only when it is sheared).

    Raises:
        ValueError: the mask is empty.
    """
    mask = np.asarray(binary) > 0
    if not mask.any():
        raise ValueError("shape features need a non-empty mask")
    mesh = surface_mesh(mask, spacing, direction)
    volume, area = _mesh_volume_area(mesh)
    lam = principal_axes_mm(mask, spacing, direction)
    with np.errstate(invalid="ignore", divide="ignore"):
        elongation = float(np.sqrt(lam[1] / lam[0])) if lam[0] > 0 else float("nan")
        flatness = float(np.sqrt(lam[2] / lam[0])) if lam[0] > 0 else float("nan")
    sphericity = float((36.0 * np.pi * volume**2) ** (1.0 / 3.0) / area) if area > 0 else float("nan")
    return ShapeFeatures(
        mesh_volume_ml=volume / 1000.0,
        surface_area_mm2=area,
        sphericity=sphericity,
        major_axis_mm=float(4.0 * np.sqrt(lam[0])),
        minor_axis_mm=float(4.0 * np.sqrt(lam[1])),
        least_axis_mm=float(4.0 * np.sqrt(lam[2])),
        elongation=elongation,
        flatness=flatness,
        max_diameter_mm=max_distance(mesh.mm),
        max_2d_diameter_slice_mm=_plane_diameter(mesh, 0),
        max_2d_diameter_row_mm=_plane_diameter(mesh, 2),
        max_2d_diameter_column_mm=_plane_diameter(mesh, 1),
    )
