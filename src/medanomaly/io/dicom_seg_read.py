"""DICOM Segmentation objects read back as label maps (``medanomaly detect --dicom`` writes them; so do OHIF, 3D
Slicer and MONAI Label).

A SEG holds one frame per segment and slice, so its frames repeat positions: read as an image it was refused as
"frames are not equally spaced", and ``quantify --mask seg.dcm`` could not measure our own output. highdicom turns
the frames into one volume of segment numbers (0 = background; a voxel in two segments is refused) on the grid the
frames span, in LPS millimetres.

Example:
    >>> from medanomaly.io import read                     # doctest: +SKIP
    >>> read("findings/seg.dcm").meta["modality"]          # doctest: +SKIP
    'SEG'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.io.limits import check_voxel_bytes
from medanomaly.types import Volume

__all__ = ["SEGMENTATION_STORAGE", "is_segmentation", "read_segmentation"]

#: SOP Class UID of Segmentation Storage.
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def is_segmentation(ds: Any) -> bool:
    """True for a DICOM Segmentation object."""
    return str(getattr(ds, "SOPClassUID", "")) == SEGMENTATION_STORAGE


def read_segmentation(ds: Any, path: Path, meta: dict[str, Any], max_voxel_bytes: int | None = None) -> Volume:
    """The label map (z, y, x, uint16 segment numbers) of a parsed binary SEG, on the grid its frames span.

    Args:
        ds: the parsed dataset (pixel data not yet decoded).
        path: the file, named in errors.
        meta: the Volume's technical metadata (``safe_meta`` of the dataset).
        max_voxel_bytes: limit on the decoded frames (see :mod:`medanomaly.io.limits`).

    Raises:
        InputError: more frames than the limit, a fractional SEG, overlapping segments, or frames that do not form one
            regular grid.
    """
    import highdicom as hd

    from medanomaly.io.dicom import as_little_endian

    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    check_voxel_bytes((frames, int(ds.Rows), int(ds.Columns)), 1, path, limit=max_voxel_bytes)
    if str(getattr(ds, "SegmentationType", "")) != "BINARY":
        raise InputError(f"DICOM SEG of type {getattr(ds, 'SegmentationType', '?')}: medanomaly reads binary ones", path)
    try:
        labels = hd.seg.Segmentation.from_dataset(as_little_endian(ds), copy=False).get_volume(
            combine_segments=True, relabel=False)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - highdicom raises ValueError / RuntimeError / KeyError on odd SEGs
        reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        if "regularly-spaced" in reason:  # frames stepping sideways: the SEG of a gantry-tilted series
            return _tilted_label_map(ds, path, meta, frames, max_voxel_bytes, reason)
        raise InputError(f"DICOM SEG not readable as one label map ({reason})", path) from None
    spacing, origin, direction = _grid(np.asarray(labels.affine, np.float64))
    meta = {**meta, "n_frames": frames}
    return Volume(np.ascontiguousarray(labels.array, np.uint16), spacing=spacing, origin=origin, direction=direction,
                  meta=meta)  # fmt: skip


def _grid(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray]:
    """(spacing (x, y, z) mm, origin, direction) of a highdicom affine, which maps (slice, row, column) to LPS mm:
    our x is its column axis, y its row axis, z its slice axis."""
    columns = affine[:3, [2, 1, 0]]
    spacing = np.linalg.norm(columns, axis=0)
    return tuple(float(s) for s in spacing), tuple(float(o) for o in affine[:3, 3]), columns / spacing


def _tilted_label_map(ds: Any, path: Path, meta: dict[str, Any], frames: int, max_voxel_bytes: int | None,
                      reason: str) -> Volume:  # fmt: skip
    """The label map of a binary SEG whose frames step sideways (written for a gantry-tilted series, which is read
    as a sheared grid: :mod:`medanomaly.io.dicom_series`), on the sheared grid its frames span; highdicom's volume
    needs frames along the normal ("Frame positions do not form a regularly-spaced volume"). Frames holding no
    segment are left out of a SEG, so the slice step is :func:`_slice_step_mm`, and every gap must be a whole number
    of steps along one line.

    Raises:
        InputError: positions that are not one tilted stack (``reason`` is highdicom's), more voxels than the limit,
            or overlapping segments.
    """
    from medanomaly.io.dicom_geometry import OffStack, direction_from_iop, stack_direction
    from medanomaly.io.dicom_pixels import ds_floats
    from medanomaly.io.dicom_series import GAP_ATOL_MM, GAP_RTOL

    def refused(why: str) -> InputError:
        return InputError(f"DICOM SEG not readable as one label map ({reason}; {why})", path)

    try:
        shared = ds.SharedFunctionalGroupsSequence[0]
        direction = direction_from_iop(shared.PlaneOrientationSequence[0].ImageOrientationPatient)
        row_mm, col_mm = ds_floats(shared.PixelMeasuresSequence[0].PixelSpacing, 2)
        groups = ds.PerFrameFunctionalGroupsSequence
        positions = np.array([ds_floats(g.PlanePositionSequence[0].ImagePositionPatient, 3) for g in groups], float)
        segments = [int(g.SegmentIdentificationSequence[0].ReferencedSegmentNumber) for g in groups]
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        raise refused("no per-frame plane positions and segment numbers") from None
    planes, where = np.unique(np.round(positions, 3), axis=0, return_inverse=True)
    order = np.argsort(planes @ direction[:, 2], kind="stable")
    planes, rank = planes[order], np.argsort(order)[where.ravel()]
    gaps = np.diff(planes, axis=0)
    lengths = np.linalg.norm(gaps, axis=1)
    step_mm = _slice_step_mm(shared.PixelMeasuresSequence[0], lengths)
    steps = np.rint(lengths / step_mm).astype(int) if len(gaps) else np.zeros(0, int)
    if np.any(steps < 1):
        raise refused("two frame planes closer than one slice")
    index = np.concatenate([[0], np.cumsum(steps)])
    if index[-1]:
        try:
            direction, spacing_z = stack_direction(direction, planes, max(GAP_ATOL_MM, GAP_RTOL * step_mm), index)
        except OffStack as exc:
            raise refused(("a frame " if exc.index is not None else "") + exc.reason) from None
    else:
        spacing_z = step_mm
    check_voxel_bytes((int(index[-1]) + 1, int(ds.Rows), int(ds.Columns)), 2, path, limit=max_voxel_bytes)
    pixels = np.asarray(ds.pixel_array).reshape(frames, int(ds.Rows), int(ds.Columns)) > 0
    labels = np.zeros((int(index[-1]) + 1, int(ds.Rows), int(ds.Columns)), np.uint16)
    for frame, (k, number) in enumerate(zip(index[rank], segments, strict=True)):
        if np.any(labels[k][pixels[frame]] != 0):
            raise refused("segments overlap: a voxel in two segments")
        labels[k][pixels[frame]] = number
    return Volume(labels, spacing=(col_mm, row_mm, spacing_z), origin=tuple(planes[0]), direction=direction,
                  meta={**meta, "n_frames": frames})  # fmt: skip


def _slice_step_mm(measures: Any, gaps_mm: np.ndarray) -> float:
    """The distance (mm) between slices along the frames' step: SpacingBetweenSlices, else SliceThickness (our
    writer's: the step's length), whichever makes every gap a whole number (>= 1) of steps; else the shortest gap
    (right whenever one segment covers two neighbouring slices)."""
    from medanomaly.io.dicom_pixels import ds_floats

    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds_floats(measures.get(keyword), 1)
        if value and value[0] > 0:
            ratio = gaps_mm / value[0]
            if np.all(ratio >= 0.99) and np.all(np.abs(ratio - np.rint(ratio)) < 0.01):
                return float(value[0])
    return float(gaps_mm.min()) if len(gaps_mm) else 1.0
