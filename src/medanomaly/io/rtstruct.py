"""DICOM RT Structure Sets read as masks on an image's grid: ``quantify CT --mask RS.dcm [--label N]``.

A structure set (radiotherapy's contours, the most common clinical segmentation format: TCIA's NSCLC-Radiomics,
head-and-neck collections, every treatment planning system) holds no pixels: each ROI is a list of closed planar
polygons in patient coordinates (LPS mm), one or more per slice, drawn on a referenced image series. Read as an
image it was "no pixel data". Here each ROI's polygons are mapped onto the image's grid and filled slice by slice
with the even-odd rule (a polygon inside another is a hole, as DICOM PS3.3 C.8.8.6 describes); the label of a voxel
is its ROI Number. ROIs overlap as a rule (BODY holds the lungs, a lung holds the GTV): without ``label`` every ROI
with contours becomes a label and an overlap is refused, naming the ROI numbers; with ``label`` one ROI is read.

We write our own rasteriser (scikit-image's polygon fill) instead of rt-utils or platipy: rt-utils needs OpenCV and
fills the pixel grid of an axial series only, platipy brings a large stack; here the image's own geometry (any
orientation) maps the points, and a contour that lies between slices or outside the image (a structure set drawn on
another series) is refused in one line instead of landing on the nearest slice.

Example:
    >>> from medanomaly.io import read, read_mask            # doctest: +SKIP
    >>> read_mask("RS.dcm", read("ct/"), label=3).array.max()  # doctest: +SKIP
    3
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.types import Volume

__all__ = ["RT_STRUCTURE_SET_STORAGE", "MAX_CONTOUR_POINTS", "MAX_ROIS", "Roi", "is_structure_set", "load_structure_set",
           "roi_names", "structure_set_mask", "structure_set_summary"]

#: SOP Class UID of RT Structure Set Storage.
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
#: Contour Geometric Types that enclose an area: CLOSED_PLANAR (nested ones are holes) and CLOSEDPLANAR_XOR (combined
#: by XOR with the others on its plane, PS3.3 C.8.8.6.3; 16 characters, the longest a CS holds: the spelling
#: CLOSED_PLANAR_XOR is taken too); both are filled even-odd. Points and open curves are left out.
CLOSED_TYPES = frozenset({"CLOSED_PLANAR", "CLOSEDPLANAR_XOR", "CLOSED_PLANAR_XOR"})
#: How far (in slices) a contour's points may lie from the nearest slice centre.
SLICE_TOLERANCE = 0.3
#: Most contour points read from one structure set (a whole-body set of 50 ROIs holds about a million).
MAX_CONTOUR_POINTS = 20_000_000
#: Most ROIs with contours read from one structure set (each is filled on a whole-image grid; clinical sets hold
#: tens to a few hundred).
MAX_ROIS = 1_000
#: ROI Numbers are the labels of the mask (int32; 0 is the background).
_ROI_NUMBERS = (1, 2**31 - 1)


@dataclass(frozen=True)
class Roi:
    """One ROI of a structure set: its number, its name and its closed planar contours ((N, 3) arrays, LPS mm)."""

    number: int
    name: str
    contours: tuple[np.ndarray, ...]
    frame: str = ""  # its Referenced Frame of Reference UID: the patient coordinate system of its points


def is_structure_set(ds: Any) -> bool:
    """True for an RT Structure Set."""
    return str(getattr(ds, "SOPClassUID", "")) == RT_STRUCTURE_SET_STORAGE


def load_structure_set(path: str | Path) -> Any | None:
    """The parsed structure set (pydicom Dataset) at ``path``, or None for any other file: the one read behind
    :func:`structure_set_mask`, :func:`structure_set_summary` and :func:`roi_names`. A structure set has no pixel
    data, so the header parse reads all of it: the file's size is checked first, as for any DICOM read whole.

    Raises:
        InputError: a DICOM file over the size limit or that cannot be parsed.
    """
    from medanomaly.io import detect_format
    from medanomaly.io.dicom import read_dataset
    from medanomaly.io.limits import check_file_bytes

    path = Path(path)
    if detect_format(path) != "dicom":
        return None
    check_file_bytes(path.stat().st_size, path)
    ds = read_dataset(path, stop_before_pixels=True)
    return ds if is_structure_set(ds) else None


def structure_set_mask(ds: Any, path: str | Path, image: Volume, label: int = 0) -> Volume:
    """The structure set's ROIs as a label map (int32 ROI numbers, 0 = none) on ``image``'s grid.

    Args:
        ds: the parsed structure set (:func:`load_structure_set`).
        path: its file, named in errors.
        image: the image it was drawn on (any orientation); its grid is the mask's.
        label: one ROI Number to read (0 = every ROI that has contours).

    Returns:
        A Volume on the image's grid, modality ``RTSTRUCT`` (the ROIs' names stay out of a Volume's metadata, which
        holds no free text: :func:`roi_names`).

    Raises:
        InputError: no closed contours (or none of ROI ``label``), an ROI drawn in another frame of reference than
            the image's, a contour that is not on one slice of the image or lies outside it, two ROIs that overlap
            or more than :data:`MAX_ROIS` (without ``label``), or more
            contour points than :data:`MAX_CONTOUR_POINTS`; the message names the file and ROI numbers, never an
            ROI's name.
    """
    path = Path(path)
    rois = [roi for roi in structure_set_rois(ds, path) if roi.contours]
    if not rois:
        raise InputError("the structure set holds no closed planar contour", path)
    if len(rois) > MAX_ROIS and not label:
        raise InputError(f"{len(rois):,} ROIs with contours, more than {MAX_ROIS:,}: take one at a time with "
                         "--label N", path)  # fmt: skip
    if label:
        chosen = [roi for roi in rois if roi.number == label]
        if not chosen:
            numbers = ", ".join(str(roi.number) for roi in rois)
            raise InputError(f"no ROI number {label} with contours (ROI numbers: {numbers})", path)
        rois = chosen
    _check_frames(rois, image, path)
    labels = np.zeros(image.shape[:3], np.int32)
    for roi in rois:
        inside = rasterize(roi, image, path)
        taken = np.unique(labels[inside & (labels != 0)])
        if taken.size:
            raise InputError(f"ROIs {int(taken[0])} and {roi.number} overlap (a voxel holds one label): take one at "
                             "a time with --label N", path)  # fmt: skip
        labels[inside] = roi.number
    return Volume(labels, spacing=image.spacing, origin=image.origin, direction=image.direction,
                  meta={"modality": "RTSTRUCT"})  # fmt: skip


def structure_set_summary(path: str | Path) -> dict[str, Any] | None:
    """What ``info`` shows of a structure set (no names: free text), or None for any other file: per ROI its number,
    closed contours, points and the span of its contours along z (LPS mm)."""
    ds = load_structure_set(path)
    if ds is None:
        return None
    rois = [{"number": roi.number, "contours": len(roi.contours), "points": int(sum(len(c) for c in roi.contours)),
             "z_mm": [round(float(min(c[:, 2].min() for c in roi.contours)), 3),
                      round(float(max(c[:, 2].max() for c in roi.contours)), 3)] if roi.contours else None}
            for roi in structure_set_rois(ds, Path(path))]  # fmt: skip
    return {"path": Path(path).name, "format": "dicom", "modality": "RTSTRUCT", "rois": rois}


def roi_names(path: str | Path) -> dict[int, str]:
    """{ROI Number: ROI Name} of a structure set file; {} for any other file (what ``quantify --roi-names`` prints
    beside each label)."""
    ds = load_structure_set(path)
    if ds is None:
        return {}
    return {roi.number: roi.name for roi in structure_set_rois(ds, Path(path))}


def structure_set_rois(ds: Any, path: Path) -> list[Roi]:
    """Every ROI of the data set with its closed planar contours (points and open curves have no area: left out).

    Raises:
        InputError: a contour whose data are not (x, y, z) triplets of finite numbers, an ROI number that is not an
            integer from 1 to 2^31 - 1, or more points in all than :data:`MAX_CONTOUR_POINTS`.
    """
    names, frames = {}, {}
    for item in ds.get("StructureSetROISequence", None) or []:
        number = _roi_number(item.get("ROINumber"), path)
        names[number] = str(item.get("ROIName", "") or "")
        frames[number] = str(item.get("ReferencedFrameOfReferenceUID", "") or "").strip()
    set_frames = {str(item.get("FrameOfReferenceUID", "") or "").strip()
                  for item in ds.get("ReferencedFrameOfReferenceSequence", None) or []} - {""}  # fmt: skip
    set_frame = next(iter(set_frames)) if len(set_frames) == 1 else ""
    rois, total = [], 0
    for item in ds.get("ROIContourSequence", None) or []:
        number = _roi_number(item.get("ReferencedROINumber"), path)
        contours = []
        for contour in item.get("ContourSequence", None) or []:
            if str(contour.get("ContourGeometricType", "")).strip().upper() not in CLOSED_TYPES:
                continue
            values = contour.get("ContourData", None) or []
            total += len(values) // 3
            if total > MAX_CONTOUR_POINTS:
                raise InputError(f"more than {MAX_CONTOUR_POINTS:,} contour points", path)
            contours.append(_points(values, number, path))
        rois.append(Roi(number, names.get(number, ""), tuple(c for c in contours if len(c) >= 3),
                        frames.get(number) or set_frame))
    return rois


def _check_frames(rois: list[Roi], image: Volume, path: Path) -> None:
    """Refuse ROIs drawn in another patient coordinate system than the image's (both Frame of Reference UIDs known).

    A contour's points are millimetres of its frame of reference: in another frame (another patient, another
    session on the scanner, a registered image not resampled) they can land on the image's slices by chance and
    measure the wrong tissue without a word. A NIfTI or NRRD image carries no frame: the grid checks alone apply.
    """
    frame = str(image.meta.get("frame_of_reference_uid", "") or "")
    other = [roi.number for roi in rois if frame and roi.frame and roi.frame != frame]
    if other:
        raise InputError(f"ROI {other[0]} is drawn in another frame of reference than the image (Referenced Frame of "
                         "Reference UID is not the image's Frame of Reference UID): its coordinates are not this "
                         "image's; give the series it was drawn on", path)  # fmt: skip


def _roi_number(value: Any, path: Path) -> int:
    """An ROI Number as a label: an integer from 1 to 2^31 - 1 (0 would be the background)."""
    if value is None:  # a file cut short parses as items without their elements
        raise InputError("an ROI without its ROI Number (an incomplete or cut structure set)", path)
    try:
        number = int(str(value).strip())
    except ValueError:
        raise InputError("an ROI Number that is not an integer", path) from None
    if not _ROI_NUMBERS[0] <= number <= _ROI_NUMBERS[1]:
        raise InputError(f"ROI Number {number} is not from {_ROI_NUMBERS[0]} to {_ROI_NUMBERS[1]:,}", path)
    return number


def _points(values: Any, number: int, path: Path) -> np.ndarray:
    """Contour Data as an (N, 3) array of LPS mm."""
    try:
        points = np.asarray([float(v) for v in values], np.float64)
    except (TypeError, ValueError):
        points = np.array([np.nan])
    if points.size % 3 or not np.all(np.isfinite(points)):
        raise InputError(f"ROI {number}: Contour Data are not (x, y, z) triplets of finite numbers", path)
    return points.reshape(-1, 3)


def rasterize(roi: Roi, image: Volume, path: Path) -> np.ndarray:
    """The voxels of ``image``'s grid inside ``roi`` (bool (z, y, x)): each contour filled on its slice, even-odd.

    Raises:
        InputError: a contour whose points are not on one slice of the image (within :data:`SLICE_TOLERANCE` of a
            slice centre) or lie outside its slices.
    """
    from skimage.draw import polygon

    depth, rows, cols = image.shape[:3]
    inside = np.zeros((depth, rows, cols), bool)
    for points in roi.contours:
        index = image.physical_to_index(points)  # (N, 3): x (column), y (row), z (slice)
        slices = np.rint(index[:, 2])
        if np.ptp(slices) != 0 or np.max(np.abs(index[:, 2] - slices)) > SLICE_TOLERANCE:
            raise InputError(f"ROI {roi.number}: a contour is not on one slice of the image (drawn on another series, "
                             "or on another plane)", path)  # fmt: skip
        k = int(slices[0])
        beside = np.any(index[:, :2].min(axis=0) > (cols - 0.5, rows - 0.5)) or np.any(index[:, :2].max(axis=0) < -0.5)
        if not 0 <= k < depth or beside:
            raise InputError(f"ROI {roi.number}: a contour lies outside the image (drawn on another series?)", path)
        rr, cc = polygon(index[:, 1], index[:, 0], shape=(rows, cols))
        inside[k, rr, cc] ^= True
    return inside
