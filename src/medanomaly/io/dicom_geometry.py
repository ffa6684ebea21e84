"""Where a DICOM image's voxels lie: orientation, pixel and slice spacing (and which of them the file does not
state), and the step of a straight or gantry-tilted stack of slices.

Used by the one-file reader (:mod:`medanomaly.io.dicom`), the series reader (:mod:`medanomaly.io.dicom_series`) and
the SEG reader (:mod:`medanomaly.io.dicom_seg_read`). All lengths are mm, directions LPS.
"""

from __future__ import annotations

from collections.abc import MutableSequence, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medanomaly.io.assumed_spacing import spacing_assumed_meta
from medanomaly.io.dicom_pixels import ds_floats

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

__all__ = [
    "MAGNIFICATION_RANGE",
    "MAX_TILT_DEG",
    "OffStack",
    "direction_from_iop",
    "in_plane_spacing",
    "magnification",
    "mark_unstated_spacing",
    "orientation_unusable",
    "slice_thickness",
    "stack_direction",
    "stated_in_plane_spacing",
    "stated_slice_thickness",
]


# ------------------------------------------------------------------------------------ geometry
def direction_from_iop(iop: Sequence[float] | None) -> np.ndarray:
    """3x3 direction matrix (columns: row cosine, column cosine, normal) from ImageOrientationPatient; the identity
    (axial) when it is missing or unusable (:func:`orientation_unusable` says which)."""
    direction = _iop_direction(iop)
    return np.eye(3) if direction is None else direction


def orientation_unusable(iop: Any) -> bool:
    """True when an ImageOrientationPatient is given but gives no plane (not six numbers, a zero row, parallel
    rows): it is read as axial, and ``meta["orientation_assumed"]`` says so (it was taken without a word)."""
    return iop is not None and _iop_direction(iop) is None


def _iop_direction(iop: Sequence[float] | None) -> np.ndarray | None:
    values = ds_floats(iop, 6)
    if values is None:
        return None
    row = np.asarray(values[:3])
    col = np.asarray(values[3:])
    if np.linalg.norm(row) < 1e-6 or np.linalg.norm(col) < 1e-6:
        return None
    row = row / np.linalg.norm(row)
    col = col - row * float(row @ col)  # re-orthogonalise small rounding errors
    if not np.all(np.isfinite(col)) or np.linalg.norm(col) < 1e-6:  # parallel cosines: no plane
        return None
    col = col / np.linalg.norm(col)
    return np.column_stack([row, col, np.cross(row, col)])


def in_plane_spacing(ds: Dataset, pixel_measures: Dataset | None = None) -> tuple[float, float]:
    """(x, y) pixel spacing in mm: :func:`stated_in_plane_spacing`, else 1 mm (``meta["spacing_assumed"]`` says so)."""
    return stated_in_plane_spacing(ds, pixel_measures) or (1.0, 1.0)


def stated_in_plane_spacing(ds: Dataset, pixel_measures: Dataset | None = None) -> tuple[float, float] | None:
    """(x, y) pixel spacing in mm as the file states it, or None.

    PixelSpacing (its magnitude: a negative value is a writer's sign error, as GDCM reads it), else ImagerPixelSpacing
    (projection radiographs: spacing at the detector) divided by the
    EstimatedRadiographicMagnificationFactor when the file gives one of 1 to 10 (the spacing in the object's plane:
    a magnified mammography view at factor 1.8 measured a lesion 1.8 times too long; as Cornerstone calibrates it),
    else the calibration of the first 2D tissue region of an ultrasound image (``SequenceOfUltrasoundRegions``,
    physical units cm -> mm), else None.
    """
    for source in (pixel_measures, ds):
        if source is None:
            continue
        for kw in ("PixelSpacing", "ImagerPixelSpacing"):
            ps = ds_floats(source.get(kw), 2)
            ps = None if ps is None else [abs(v) for v in ps]  # a writer's minus sign, as GDCM reads it (it was 1 mm)
            if ps is not None and ps[0] > 0 and ps[1] > 0:
                factor = magnification(ds) if kw == "ImagerPixelSpacing" else 1.0
                return ps[1] / factor, ps[0] / factor
    from pydicom.dataset import Dataset as Item

    regions = ds.get("SequenceOfUltrasoundRegions")
    for region in regions if isinstance(regions, MutableSequence) else []:  # another VR than SQ: ignored
        if not isinstance(region, Item):
            continue
        cm = 3  # PhysicalUnits code for cm; RegionSpatialFormat 1 = 2D tissue or flow
        if region.get("RegionSpatialFormat") == 1 and region.get("PhysicalUnitsXDirection") == cm and region.get(
            "PhysicalUnitsYDirection"
        ) == cm:
            dx, dy = ds_floats(region.get("PhysicalDeltaX"), 1), ds_floats(region.get("PhysicalDeltaY"), 1)
            if dx and dy and dx[0] > 0 and dy[0] > 0:
                return abs(dx[0]) * 10.0, abs(dy[0]) * 10.0
    return None


#: Magnification factors taken from ``EstimatedRadiographicMagnificationFactor`` (mammography magnification views
#: reach about 2; a value outside this range is not a magnification and is ignored).
MAGNIFICATION_RANGE = (1.0, 10.0)


def magnification(ds: Dataset) -> float:
    """The file's EstimatedRadiographicMagnificationFactor (source-to-detector over source-to-object distance) when it
    lies in :data:`MAGNIFICATION_RANGE`, else 1."""
    value = ds_floats(ds.get("EstimatedRadiographicMagnificationFactor"), 1)
    low, high = MAGNIFICATION_RANGE
    return value[0] if value is not None and low <= value[0] <= high else 1.0


def slice_thickness(ds: Dataset, pixel_measures: Dataset | None = None) -> float:
    """Nominal slice spacing (mm) for a single slice: SpacingBetweenSlices, SliceThickness, else 1."""
    return stated_slice_thickness(ds, pixel_measures) or 1.0


def stated_slice_thickness(ds: Dataset, pixel_measures: Dataset | None = None) -> float | None:
    """SpacingBetweenSlices, else SliceThickness (mm, positive), from the pixel measures first; ``None`` if neither."""
    for source in (pixel_measures, ds):
        if source is None:
            continue
        for kw in ("SpacingBetweenSlices", "SliceThickness"):
            value = ds_floats(source.get(kw), 1)
            if value is not None and value[0] > 0:
                return value[0]
    return None


def mark_unstated_spacing(meta: dict[str, Any], direction: np.ndarray, z_stated: bool) -> None:
    """Record in ``meta`` which axes took 1 mm (:mod:`~medanomaly.io.assumed_spacing`): x and y when
    :func:`~medanomaly.io.dicom.safe_meta` found no pixel spacing, z when ``z_stated`` is false (frames or slices
    without positions, slice spacing or thickness)."""
    unstated = ([0, 1] if meta.get("spacing_assumed") else []) + ([] if z_stated else [2])
    meta.update(spacing_assumed_meta(direction, unstated))


# ------------------------------------------------------------------------------------ stacks
#: The largest gantry tilt (degrees) read as a sheared stack: CT gantries tilt up to about 30 degrees; a larger
#: shear is not a tilt.
MAX_TILT_DEG = 45.0


class OffStack(ValueError):
    """Slice positions that are not one (straight or tilted) stack: ``reason``, and ``index`` of the slice that lies
    off the line (None when the stack as a whole is sheared too far)."""

    def __init__(self, reason: str, index: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.index = reason, index


def stack_direction(direction: np.ndarray, positions: np.ndarray, tolerance_mm: float,
                    index: np.ndarray | None = None) -> tuple[np.ndarray, float]:  # fmt: skip
    """(direction, slice step in mm) of slice ``positions`` (n >= 2, sorted along the normal, equally spaced along
    it; or at the slice numbers ``index``, increasing, when slices are missing, as in a SEG's frames). Slices
    stepping along the normal (within ``tolerance_mm`` over the stack) keep ``direction`` and the step along the
    normal; a gantry-tilted stack (each slice shifted in its plane by the same step) is a sheared grid: the third
    column becomes the step's unit vector and the step its length, so every voxel keeps its place.

    Raises:
        OffStack: a shear over :data:`MAX_TILT_DEG`, or a slice more than ``tolerance_mm`` off the line of the
            first and last (with its index).
    """
    normal = direction[:, 2]
    index = np.arange(len(positions)) if index is None else np.asarray(index)
    step = (positions[-1] - positions[0]) / float(index[-1] - index[0])
    along = float(step @ normal)
    sideways = float(np.linalg.norm(step - normal * along))
    if sideways <= tolerance_mm:
        return direction, along
    tilt = float(np.degrees(np.arctan2(sideways, along)))
    if tilt > MAX_TILT_DEG:
        raise OffStack(f"slices are sheared by {tilt:.1f} deg, more than a gantry tilts ({MAX_TILT_DEG:g}): not one "
                       "stack")
    off = np.linalg.norm(positions - (positions[0] + (index - index[0])[:, None] * step), axis=1)
    k = int(np.argmax(off))
    if off[k] > tolerance_mm:
        raise OffStack(f"lies {off[k]:.3g} mm off the line of a tilted stack", k)
    tilted = direction.copy()
    tilted[:, 2] = step / np.linalg.norm(step)
    return tilted, float(np.linalg.norm(step))
