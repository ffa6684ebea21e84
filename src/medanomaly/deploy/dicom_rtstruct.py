"""Lesion masks as a DICOM RT Structure Set that references its source series: what radiotherapy planning systems
(Eclipse, RayStation, Monaco) import, where a SEG is not read.

One ROI per finding with a mask, numbered as the SEG's segments (1 = the first finding with a mask) and named as they
are ("Lesion 1 (nodule)": the algorithm's words, never a person's). Each slice's mask becomes closed planar contours
that run **along the pixels' edges**: a contour's area is the mask's area exactly, so a planning system that measures
the polygon gets the volume we report. rt-utils (OpenCV, which it needs) and most converters trace the pixel centres,
which drops half a pixel of rim: 20 % of an 11 mm nodule on 0.57 mm pixels. Holes are contours of their own (even-odd,
PS3.3 C.8.8.6); two pixels that touch at a corner only are two contours. Each contour names the source image of its
slice. UIDs derive from the run and the source series, as the SEG's do, so a rerun rewrites the same instance.

``medanomaly.io.rtstruct`` reads these back voxel for voxel (tested), and ``dciodvfy`` validates them.

Example:
    >>> ds = build_rtstruct(findings, source, volume, run_id="r1")       # doctest: +SKIP
    >>> ds.StructureSetROISequence[0].ROIName                             # doctest: +SKIP
    'Lesion 1 (nodule)'
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import numpy as np

from medanomaly.deploy.dicom_seg import SEG_SERIES_NUMBER, finding_masks, segment_infos, segment_label
from medanomaly.deploy.dicom_source import SourceSeries, derived_instance, image_reference, software_version
from medanomaly.errors import InputError
from medanomaly.io.rtstruct import RT_STRUCTURE_SET_STORAGE
from medanomaly.types import Finding, Volume

__all__ = ["MAX_CONTOUR_POINTS", "TooManyContourPoints", "build_rtstruct", "edge_count", "pixel_edge_contours"]

#: Most contour points written (what ``medanomaly.io.rtstruct`` reads): masks outlined by more pixel edges (a noise-like
#: anomaly map thresholded) get no structure set; their SEG holds them.
MAX_CONTOUR_POINTS = 20_000_000
#: Study Component Management SOP Class: what RT Referenced Study Sequence items name (PS3.3 C.8.8.5).
_STUDY_COMPONENT = "1.2.840.10008.3.1.2.3.1"
#: Display colours of the ROIs (RGB), in turn.
_COLOURS = ((255, 0, 0), (255, 160, 0), (0, 200, 255), (0, 220, 0), (255, 0, 255), (255, 255, 0))
#: Each pixel's edges walked clockwise (x right, y down): (dx0, dy0, dx1, dy1) of its top, right, bottom, left edge.
_EDGES = ((0, 0, 1, 0), (1, 0, 1, 1), (1, 1, 0, 1), (0, 1, 0, 0))
#: The neighbour across each of those edges (drow, dcol).
_ACROSS = ((-1, 0), (0, 1), (1, 0), (0, -1))


class TooManyContourPoints(InputError):
    """The masks are outlined by more pixel edges than :data:`MAX_CONTOUR_POINTS`: no structure set is written."""


def edge_count(mask: np.ndarray) -> int:
    """How many pixel edges outline a (z, y, x) or 2D boolean mask in its slices: an upper bound on the contour points
    its structure set holds, counted before any contour is traced."""
    mask = np.asarray(mask, bool)
    mask = mask.reshape(-1, *mask.shape[-2:])
    return int(np.count_nonzero(np.diff(mask, axis=1, prepend=False, append=False))
               + np.count_nonzero(np.diff(mask, axis=2, prepend=False, append=False)))  # fmt: skip


def pixel_edge_contours(mask: np.ndarray) -> list[np.ndarray]:
    """The closed contours along the pixel edges of a 2D boolean mask, as (N, 2) arrays of (column, row) pixel
    indices (a pixel's centre is integral, its edges lie half-way), corners only. Outer outlines run clockwise and
    holes anticlockwise (x right, y down); pixels that touch at a corner only are separate contours.

    Example:
        >>> [c.tolist() for c in pixel_edge_contours(np.array([[1, 1], [1, 0]], bool))]
        [[[-0.5, -0.5], [1.5, -0.5], [1.5, 0.5], [0.5, 0.5], [0.5, 1.5], [-0.5, 1.5]]]
    """
    padded = np.pad(np.asarray(mask, bool), 1)
    inside = padded[1:-1, 1:-1]
    outgoing: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for (dx0, dy0, dx1, dy1), (dr, dc) in zip(_EDGES, _ACROSS, strict=True):
        rows, cols = np.nonzero(inside & ~padded[1 + dr : padded.shape[0] - 1 + dr, 1 + dc : padded.shape[1] - 1 + dc])
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            outgoing.setdefault((c + dx0, r + dy0), []).append((c + dx1, r + dy1))
    contours = []
    while outgoing:
        start = next(iter(outgoing))
        loop, here, heading = [start], start, None
        while True:
            ends = outgoing[here]
            end = ends.pop(_rightmost(ends, here, heading)) if len(ends) > 1 else ends.pop()
            if not ends:
                del outgoing[here]
            heading = (end[0] - here[0], end[1] - here[1])
            here = end
            if here == start:
                break
            loop.append(here)
        contours.append(_corners(np.asarray(loop, np.float64)) - 0.5)
    return contours


def _rightmost(ends: list[tuple[int, int]], here: tuple[int, int], heading: tuple[int, int] | None) -> int:
    """At a corner two pixels share diagonally, the edge that turns right (towards the inside: clockwise walking
    keeps the inside on the right), so each pixel's outline closes on its own."""
    if heading is None:
        return 0
    right = (-heading[1], heading[0])  # y down: turning right of (dx, dy) is (-dy, dx)
    for i, end in enumerate(ends):
        if (end[0] - here[0], end[1] - here[1]) == right:
            return i
    return 0


def _corners(loop: np.ndarray) -> np.ndarray:
    """The loop's corners: points where the direction changes."""
    before, after = np.roll(loop, 1, axis=0), np.roll(loop, -1, axis=0)
    turn = np.any((loop - before) != (after - loop), axis=1)
    return loop[turn]


def build_rtstruct(
    findings: Sequence[Finding],
    source: SourceSeries,
    volume: Volume,
    *,
    run_id: str = "",
    algorithm: str = "medanomaly",
) -> Any:
    """An RT Structure Set of the findings' masks, drawn on the source series (pydicom Dataset, ready to save).

    Args:
        findings: the findings; those without a mask get no ROI.
        source: the source series headers matched to ``volume`` (:func:`load_source_series`).
        volume: the image the findings were made on (its grid is the source grid).
        run_id: identifies the model run; enters the deterministic UIDs.
        algorithm: written as each ROI's generation algorithm (e.g. the task name).

    Raises:
        InputError: no finding has a mask, a mask misses the grid, or the masks are outlined by more than
            :data:`MAX_CONTOUR_POINTS` pixel edges (:class:`TooManyContourPoints`, counted before any contour is
            traced).
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    infos = segment_infos(findings, source.series_uid, run_id)
    if not infos:
        raise InputError("no finding has a mask: nothing to put in an RT Structure Set")
    masks = finding_masks(findings, infos, volume)
    edges = sum(edge_count(mask) for mask in masks)
    if edges > MAX_CONTOUR_POINTS:
        raise TooManyContourPoints(f"the masks are outlined by {edges:,} pixel edges, more than "
                                   f"{MAX_CONTOUR_POINTS:,} contour points: no RT Structure Set (the SEG holds them)")
    now = datetime.datetime.now()
    ds = derived_instance(source, run_id, "rtstruct", RT_STRUCTURE_SET_STORAGE, "RTSTRUCT", SEG_SERIES_NUMBER + 3,
                          f"{algorithm} lesion contours")  # fmt: skip
    ds.OperatorsName = ""
    ds.StructureSetLabel = "LESIONS"
    ds.StructureSetName = f"{algorithm} lesions"[:64]
    ds.StructureSetDate, ds.StructureSetTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.StructureSetDate, ds.StructureSetTime
    ds.ApprovalStatus = "UNAPPROVED"  # an algorithm's contours: a person approves them
    images = dict(zip(source.slice_index, source.datasets, strict=True))
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([_frame_reference(source)])
    ds.StructureSetROISequence, ds.ROIContourSequence = DicomSequence(), DicomSequence()
    ds.RTROIObservationsSequence = DicomSequence()
    for n, (info, mask) in enumerate(zip(infos, masks, strict=True)):
        name = segment_label(info, findings[info.finding_index])
        ds.StructureSetROISequence.append(_roi(info.segment_number, name, source, algorithm))
        colour = _COLOURS[n % len(_COLOURS)]
        ds.ROIContourSequence.append(_roi_contours(info.segment_number, mask, volume, images, colour))
        observation = Dataset()
        observation.ObservationNumber, observation.ReferencedROINumber = info.segment_number, info.segment_number
        observation.RTROIInterpretedType, observation.ROIInterpreter = "", ""
        ds.RTROIObservationsSequence.append(observation)
    return ds


def _frame_reference(source: SourceSeries) -> Any:
    """Referenced Frame of Reference Sequence item: the frame, its study, series and every image of the series."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    series = Dataset()
    series.SeriesInstanceUID = source.series_uid
    series.ContourImageSequence = DicomSequence([image_reference(ds) for ds in source.datasets])
    study = Dataset()
    study.ReferencedSOPClassUID, study.ReferencedSOPInstanceUID = _STUDY_COMPONENT, source.study_uid
    study.RTReferencedSeriesSequence = DicomSequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = source.frame_of_reference_uid
    frame.RTReferencedStudySequence = DicomSequence([study])
    return frame


def _roi(number: int, name: str, source: SourceSeries, algorithm: str) -> Any:
    from pydicom.dataset import Dataset

    roi = Dataset()
    roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = number, source.frame_of_reference_uid, name
    roi.ROIGenerationAlgorithm, roi.ROIGenerationDescription = "AUTOMATIC", f"{algorithm} {software_version()}"[:64]
    return roi


def _roi_contours(number: int, mask: np.ndarray, volume: Volume, images: dict[int, Any],
                  colour: tuple[int, int, int]) -> Any:  # fmt: skip
    """ROI Contour Sequence item: the mask's pixel-edge contours on each slice, in patient millimetres (LPS)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    item = Dataset()
    item.ReferencedROINumber, item.ROIDisplayColor = number, list(colour)
    item.ContourSequence = DicomSequence()
    for k in np.nonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0].tolist():
        for points in pixel_edge_contours(mask[k]):
            index = np.column_stack([points, np.full(len(points), float(k))])
            contour = Dataset()
            if k in images:  # the source image of this slice
                contour.ContourImageSequence = DicomSequence([image_reference(images[k])])
            contour.ContourGeometricType, contour.NumberOfContourPoints = "CLOSED_PLANAR", len(points)
            contour.ContourData = [f"{v:.4f}" for v in volume.index_to_physical(index).ravel()]
            item.ContourSequence.append(contour)
    return item
