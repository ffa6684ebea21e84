"""The voxel grid's arithmetic, below :class:`medanomaly.types.Volume`: which spacings, origins and directions make
a grid, and the lengths and volumes a grid gives. Conventions as in :mod:`medanomaly.types` (LPS mm; spacing, origin
and directions in ITK order (x, y, z); arrays (z, y, x))."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Vec3 = tuple[float, float, float]


def is_valid_direction(direction: np.ndarray) -> bool:
    """Whether a 3x3 direction matrix (unit columns) is finite and invertible (``|det| >= 1e-6``):
    the one test a :class:`~medanomaly.types.Volume` and the readers apply."""
    direction = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    return bool(np.all(np.isfinite(direction)) and abs(np.linalg.det(direction)) >= 1e-6)


#: The voxel sizes a Volume may have (mm): 0.1 um (beyond OCT and micro-CT) to 1 m (half a patient). A header outside
#: is damaged or in other units; every step that turns millimetres into voxels (a 10 mm opening, a 1.25 mm grid) went
#: wrong on it: a 1e-30 mm spacing built a disc of 1e31 pixels (a traceback), 1e30 mm overflowed a resampled size.
MIN_SPACING_MM, MAX_SPACING_MM = 1e-4, 1e3
#: The largest |origin| (mm) a Volume may have: 1 km. Beyond it float64 positions lose the voxel (at 1e30 mm two voxels'
#: centres are the same number), so masks, maps and resampled grids land anywhere.
MAX_COORDINATE_MM = 1e6


def voxel_problem(array: np.ndarray, spacing: Vec3, origin: Vec3) -> str | None:
    """Why ``array``, ``spacing`` and ``origin`` cannot make a :class:`~medanomaly.types.Volume`, or None.

    Example:
        >>> voxel_problem(np.zeros((1, 2, 2), np.complex64), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
        'voxels are complex numbers (complex64): take their magnitude (np.abs) or one part first'
        >>> voxel_problem(np.zeros((1, 2, 2)), (1e-30, 1e-30, 1.0), (0.0, 0.0, 0.0))
        'voxel spacing (x, y, z) (1e-30, 1e-30, 1) mm is not a voxel size (0.0001 to 1000 mm): a damaged header, or lengths in other units'
    """
    if array.dtype.kind == "c":
        return f"voxels are complex numbers ({array.dtype}): take their magnitude (np.abs) or one part first"
    if array.dtype.kind not in "biuf":
        return f"voxels must be numbers, got dtype {array.dtype}"
    shown = ", ".join(f"{v:.6g}" for v in spacing)
    if any(not np.isfinite(s) or s <= 0 for s in spacing):
        return f"spacing must be positive and finite, got ({shown})"
    if any(not MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in spacing):
        return (f"voxel spacing (x, y, z) ({shown}) mm is not a voxel size ({MIN_SPACING_MM:g} to {MAX_SPACING_MM:g} "
                "mm): a damaged header, or lengths in other units")  # fmt: skip
    if any(not np.isfinite(v) or abs(v) > MAX_COORDINATE_MM for v in origin):
        return (f"origin (x, y, z) ({', '.join(f'{v:.6g}' for v in origin)}) mm is not a position in a scanner "
                f"(at most {MAX_COORDINATE_MM:g} mm from its centre): a damaged header")  # fmt: skip
    return None


def as_vec3(values: Sequence[float], name: str) -> Vec3:
    arr = tuple(float(v) for v in values)
    if len(arr) != 3:
        raise ValueError(f"{name} must have 3 values (x, y, z), got {len(arr)}")
    return arr  # type: ignore[return-value]


def is_orthonormal(direction: Any) -> bool:
    """True when the direction's columns are orthonormal (a rotation or reflection) within 1e-4: the rounding of
    a DICOM orientation written with 6 decimals or a float32 sform counts as square; a shear of 0.006 degrees (no
    gantry tilts so little) changes a length by 1e-4 of itself, so treating it as square costs nothing."""
    d = np.asarray(direction, dtype=np.float64)
    return bool(np.allclose(d.T @ d, np.eye(3), atol=1e-4))


def voxel_volume_mm3(spacing: Sequence[float], direction: Any = None) -> float:
    """Volume (mm^3) of one voxel of ``spacing`` (x, y, z) mm: their product, times |det direction| on a sheared grid.

    Example:
        >>> tilt = np.radians(20.0)
        >>> round(voxel_volume_mm3((1.0, 1.0, 1.0 / np.cos(tilt)), [[1, 0, 0], [0, 1, np.sin(tilt)], [0, 0, np.cos(tilt)]]), 6)
        1.0
    """
    volume = float(np.prod(spacing))
    if direction is None or is_orthonormal(direction):
        return volume
    return volume * abs(float(np.linalg.det(np.asarray(direction, dtype=np.float64))))


def grid_metric_zyx(spacing: Sequence[float], direction: Any) -> np.ndarray:
    """A 3x3 upper-triangular matrix R with a positive diagonal such that ``|R @ u|`` is the length in mm of the index
    step ``u = (dz, dy, dx)`` on a grid of ``spacing`` (x, y, z) mm and ``direction`` (columns x, y, z).

    ``diag(sz, sy, sx)`` exactly when the direction is orthonormal (a rotation keeps lengths: it is not applied);
    on a sheared grid the R of the QR decomposition of ``direction @ diag(spacing)``, which keeps its lengths and
    angles: index coordinates times ``R.T`` are mm coordinates in a frame turned with the grid.

    Example:
        >>> grid_metric_zyx((0.5, 0.5, 2.0), np.eye(3)).diagonal().tolist()
        [2.0, 0.5, 0.5]
        >>> sheared = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, np.sin(0.3)], [0.0, 0.0, np.cos(0.3)]])
        >>> round(float(abs(np.linalg.det(grid_metric_zyx((1.0, 1.0, 2.0), sheared)))), 4)  # 2 cos(0.3) mm^3
        1.9107
    """
    spacing_xyz = np.asarray(spacing, dtype=np.float64)
    if is_orthonormal(direction):
        return np.diag(spacing_xyz[::-1])
    _, r = np.linalg.qr((np.asarray(direction, dtype=np.float64) @ np.diag(spacing_xyz))[:, ::-1])
    return r * np.where(np.diag(r) < 0, -1.0, 1.0)[:, None]
