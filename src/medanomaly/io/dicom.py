"""One DICOM file (single- or multi-frame) to a :class:`~medanomaly.types.Volume`, with pydicom.

pydicom does the parsing and decoding (every transfer syntax pydicom-data ships: JPEG baseline,
extended and lossless, JPEG 2000, JPEG-LS, RLE, deflate, big endian; the decoders come from the
``pylibjpeg*`` and ``pyjpegls`` packages). This module only turns the decoded frames into voxels
with geometry:

* **Geometry** (LPS mm): ``ImageOrientationPatient`` gives the row/column cosines, their cross
  product the slice normal; ``ImagePositionPatient`` is the origin; ``PixelSpacing`` is
  (row spacing, column spacing) = (y, x). Enhanced multi-frame files carry the same tags in their
  shared / per-frame functional groups. Projection radiographs (CR/DX/MG) without patient
  geometry fall back to ``ImagerPixelSpacing``; images without any spacing use 1 mm.
* **Intensity** (:mod:`medanomaly.io.dicom_pixels`): the modality LUT (``RescaleSlope`` /
  ``RescaleIntercept``, or a ``ModalityLUTSequence``) is applied whenever present, so CT voxels
  are in HU; ``MONOCHROME1`` is inverted so that higher is brighter; palette colour (big endian
  included) and YBR images become RGB (``(z, y, x, 3)`` arrays).
* **Limits**: file size, the inflated size of deflated files and the declared pixel size are
  checked against :mod:`medanomaly.io.limits` before the memory is taken.
* **DICOMDIR**: read through the series it references (:mod:`medanomaly.io.dicomdir`).
* **Metadata**: only technical keys of :data:`medanomaly.types.SAFE_META_KEYS`; never a name,
  date, ID or free text other than the series description.

Example:
    >>> from medanomaly.data.sources import real_data
    >>> vol = read_dicom_file(real_data("pydicom/CT_small.dcm"))  # doctest: +SKIP
    >>> vol.meta["units"], vol.spacing  # doctest: +SKIP
    ('HU', (0.661468, 0.661468, 5.0))
"""

from __future__ import annotations

import io
import logging
from collections.abc import MutableSequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from medanomaly.errors import InputError, about_file, raise_if_out_of_memory
from medanomaly.io.dicom_geometry import (
    OffStack,
    direction_from_iop,
    in_plane_spacing,
    mark_unstated_spacing,
    orientation_unusable,
    stack_direction,
    stated_in_plane_spacing,
    stated_slice_thickness,
)
from medanomaly.io.dicom_pixels import (
    _first,
    ds_floats,
    _sequence_item,
    _short,
    apply_rescale,
    declared_pixels,
    decode_pixels,
    invert_monochrome1,
    invert_range,
    modality_lut_sequence,
    rescale_of,
    rescaled_dtype,
    stored_range,
    to_rgb,
)
from medanomaly.io.limits import BoundedInflater, check_file_bytes, check_voxel_bytes
from medanomaly.types import Volume

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

#: Projection modalities: a single 2D image with detector spacing, no patient position.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "IO", "PX", "RF", "XA"})
#: Non-image SOP classes we refuse with a clear reason (SEG is read: it has pixel data).
_COLOUR_PHOTOMETRICS = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR"})


# ------------------------------------------------------------------------------------ parsing
_DEFLATED = "1.2.840.10008.1.2.1.99"
_DEFLATED_BYTES = _DEFLATED.encode()


#: Inflated bytes parsed for the image header of a deflated file before the rest is inflated.
_DEFLATED_HEAD = 4 << 20


def check_deflated(source: BinaryIO, path: Path, limit: int | None = None) -> None:
    """Refuse a deflated DICOM over the voxel limit before pydicom inflates it in one piece.

    The first 4 MiB of the inflated dataset are parsed (up to the pixel data) and the declared
    pixel size checked; then the rest is inflated and thrown away, chunk by chunk, to refuse
    data that expand past the limit whatever the header says. ``source`` is positioned at the
    start of the file and left at an undefined position. Only files whose first 4 KiB name
    the deflated transfer syntax are inflated; any other file costs one 4 KiB peek.
    """
    from pydicom.filereader import read_dataset as read_elements
    from pydicom.filereader import read_preamble

    head = source.read(4096)
    if _DEFLATED_BYTES not in head:
        return
    source.seek(0)
    try:
        read_preamble(source, False)
        meta = read_elements(source, False, True, stop_when=lambda tag, vr, length: tag >> 16 != 2)
    except Exception:  # noqa: BLE001 - not a well-formed file meta: pydicom's own parse reports it
        return
    if str(meta.get("TransferSyntaxUID", "")).strip() != _DEFLATED:
        return
    inflater = BoundedInflater(source, path, limit)
    header = _parse_head(inflater.read(_DEFLATED_HEAD))
    if header is not None and "Rows" in header and "Columns" in header:
        check_voxel_bytes(*declared_pixels(header), path, limit=limit)
    inflater.drain()


def _parse_head(data: bytes) -> Dataset | None:
    """The elements before the pixel data of an explicit VR little endian dataset, or None."""
    from pydicom.filereader import read_dataset as read_elements

    try:
        return read_elements(io.BytesIO(data), False, True, stop_when=lambda tag, vr, length: tag >> 16 == 0x7FE0)
    except Exception:  # noqa: BLE001 - a header longer than the head: only the size ceiling applies
        return None


def is_dicomdir(ds: Dataset) -> bool:
    """True for a DICOMDIR (Media Storage Directory), which indexes files instead of holding pixels."""
    sop = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", ""))
    return sop == "1.2.840.10008.1.3.10" or "DirectoryRecordSequence" in ds


def read_dataset(path: Path, *, stop_before_pixels: bool = False, max_voxel_bytes: int | None = None) -> Dataset:
    """Parse a DICOM file with pydicom, turning every failure into :class:`InputError`.

    Files without the 128-byte preamble (old ACR-NEMA style) are accepted when pydicom's forced
    parse finds a real image header (SOP class or rows/columns). Before the whole file is read,
    its size, and for deflated files the inflated size, are checked against
    :mod:`medanomaly.io.limits`.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        size = path.stat().st_size
        if size == 0:
            raise InputError("empty file", path)
        # Whole files are parsed from memory: pydicom makes hundreds of small read/tell calls
        # per file, which cost ~20 % of a series read on a buffered file object.
        if stop_before_pixels:
            with path.open("rb") as fh:
                check_deflated(fh, path, max_voxel_bytes)
            source: Any = path
        else:
            check_file_bytes(size, path, limit=max_voxel_bytes)
            source = io.BytesIO(path.read_bytes())
            check_deflated(source, path, max_voxel_bytes)
            source.seek(0)
        try:
            ds = pydicom.dcmread(source, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError:
            if not stop_before_pixels:
                source.seek(0)
            ds = pydicom.dcmread(source, stop_before_pixels=stop_before_pixels, force=True)
            if "SOPClassUID" not in ds and "Rows" not in ds:
                raise InputError("not a DICOM file", path) from None
        ensure_transfer_syntax(ds)
        return ds
    except InputError:
        raise
    except Exception as exc:  # pydicom raises many types on garbage; all mean "unreadable"
        raise_if_out_of_memory(exc)
        raise InputError(f"not a readable DICOM file ({_short(exc, path)})", path) from None


def ensure_transfer_syntax(ds: Dataset) -> None:
    """A file meta without TransferSyntaxUID gets the encoding pydicom actually parsed with."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    ds.file_meta = meta or FileMetaDataset()
    if implicit in (True, None):
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little in (True, None) else ExplicitVRBigEndian


# ------------------------------------------------------------------------------------ metadata
#: Modality defined terms of DICOM PS3.3 C.7.3.1.1.1, current and retired. Another value (a name typed into the
#: field, a vendor's free text) is kept as "OT": it would be printed in errors ("got <modality>") and results.
DICOM_MODALITIES = frozenset(
    "AR ASMT AU BDUS BI BMD CFM CR CT CTPROTOCOL DMS DG DOC DX ECG EEG EMG EOG EPS ES FID GM HC HD IO IOL IVOCT IVUS "
    "KER KO LEN LS MG MR M3D NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PA PLAN POS PR PT PX REG RESP RF RG "
    "RTDOSE RTIMAGE RTINTENT RTPLAN RTRAD RTRECORD RTSEGANN RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US "
    "VA XA XAPROTOCOL XC AS CD CF CP CS DD DF DM DS EC FA FS LP MA MS OPR ST VF".split()
)


def modality_code(value: Any, absent: str = "") -> str:
    """A Modality value as a DICOM defined term (upper case), "OT" for any other text, ``absent`` when empty.

    Example:
        >>> modality_code(" ct "), modality_code("JANE DOE"), modality_code(None, "OT")
        ('CT', 'OT', 'OT')
    """
    text = str(value or "").strip().upper()
    if not text:
        return absent
    return text if text in DICOM_MODALITIES else "OT"


def safe_meta(ds: Dataset) -> dict[str, Any]:
    """Technical metadata only (see SAFE_META_KEYS). No names, dates, IDs, institutions; a Modality that is not a
    DICOM defined term (:data:`DICOM_MODALITIES`) becomes "OT"."""
    meta: dict[str, Any] = {"source_format": "dicom"}
    modality = modality_code(ds.get("Modality"))
    if modality:
        meta["modality"] = modality
    for key, kw in (("series_uid", "SeriesInstanceUID"), ("study_uid", "StudyInstanceUID"),
                    ("frame_of_reference_uid", "FrameOfReferenceUID")):
        if ds.get(kw):
            meta[key] = str(ds.get(kw))
    if ds.get("SOPClassUID"):
        meta["sop_class_uid"] = str(ds.SOPClassUID)
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax:
        meta["transfer_syntax"] = getattr(tsyntax, "name", str(tsyntax))
    for key, kw in (("body_part", "BodyPartExamined"), ("view", "ViewPosition"), ("laterality", "ImageLaterality")):
        value = str(ds.get(kw) or "").strip()
        if value:
            meta[key] = value
    description = str(ds.get("SeriesDescription") or "").strip()
    if description:
        meta["description"] = description[:64]
    for key, kw in (("window_center", "WindowCenter"), ("window_width", "WindowWidth")):
        value = ds_floats(_first(ds.get(kw)), 1)
        if value is not None:
            meta[key] = value[0]
    if stated_in_plane_spacing(ds, _functional(ds, "PixelMeasuresSequence")) is None:
        meta["spacing_assumed"] = True  # 1 mm: lengths and areas are in pixels
    return meta


# ------------------------------------------------------------------------------------ one file
def _frame_positions(ds: Dataset, n_frames: int) -> list[list[float]] | None:
    """Per-frame ImagePositionPatient of an enhanced multi-frame file, when every frame has one."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame or len(per_frame) != n_frames:
        return None
    positions = []
    for group in per_frame:
        item = _sequence_item(group, "PlanePositionSequence")
        pos = ds_floats(item.get("ImagePositionPatient") if item is not None else None, 3)
        if pos is None:
            return None
        positions.append(pos)
    return positions


def _functional(ds: Dataset, keyword: str) -> Dataset | None:
    """An item of a functional group: shared first, else the first frame's."""
    shared = _sequence_item(ds, "SharedFunctionalGroupsSequence")
    item = _sequence_item(shared, keyword) if shared is not None else None
    if item is None:
        first = _sequence_item(ds, "PerFrameFunctionalGroupsSequence")
        item = _sequence_item(first, keyword) if first is not None else None
    return item


#: Attributes a FrameIncrementPointer names when the frames follow each other in time (a cine loop, an echo).
_TIME_INCREMENTS = frozenset({0x00181063, 0x00181065})  # FrameTime, FrameTimeVector


def _frames_are_time(ds: Dataset) -> bool:
    """Whether the frames of a multi-frame image are time points, not slices: its FrameIncrementPointer names
    FrameTime or FrameTimeVector and no frame has a position of its own (an ultrasound or XA cine loop)."""
    pointer = ds.get("FrameIncrementPointer")
    tags = pointer if isinstance(pointer, MutableSequence) else [pointer] if pointer is not None else []
    return any(int(t) in _TIME_INCREMENTS for t in tags) and _frame_positions(ds, int(ds.get("NumberOfFrames") or 1)) is None


def image_orientation(ds: Dataset) -> Any:
    """The ImageOrientationPatient that applies to the frames: the shared functional group's, else the top level's."""
    orientation = _functional(ds, "PlaneOrientationSequence")
    return (orientation.get("ImageOrientationPatient") if orientation is not None else None) or ds.get(
        "ImageOrientationPatient")  # fmt: skip


def _geometry(
    ds: Dataset, n_frames: int, path: Path
) -> tuple[tuple[float, float, float], list[float], np.ndarray, np.ndarray, bool]:
    """Spacing (x, y, z mm), origin (LPS mm), direction, the frame order (sorted along the normal) and whether the
    slice spacing is stated (frame positions, a slice spacing or thickness, RT dose offsets; one frame needs none)."""
    measures = _functional(ds, "PixelMeasuresSequence")
    direction = direction_from_iop(image_orientation(ds))
    sx, sy = in_plane_spacing(ds, measures)
    stated_sz = stated_slice_thickness(ds, measures)
    sz = stated_sz or 1.0
    origin = ds_floats(ds.get("ImagePositionPatient"), 3) or [0.0, 0.0, 0.0]
    frame_order = np.arange(n_frames)
    positions = _frame_positions(ds, n_frames) if n_frames > 1 else None
    if positions is None and n_frames == 1:
        single = _frame_positions(ds, 1)
        if single:
            origin = single[0]
    if positions is not None:
        proj = np.asarray(positions) @ direction[:, 2]
        frame_order = np.argsort(proj, kind="stable")
        proj = proj[frame_order]
        gaps = np.diff(proj)
        if np.any(gaps <= 1e-6) or np.ptp(gaps) > max(1e-2, 0.01 * float(np.median(gaps))):
            raise InputError(f"frames are not equally spaced (gaps {np.round(gaps, 3).tolist()[:6]} mm)", path)
        try:  # frames stepping sideways were stacked straight, every voxel of a tilted stack misplaced
            direction, sz = stack_direction(direction, np.asarray(positions)[frame_order],
                                            max(1e-2, 0.01 * float(np.median(gaps))))  # fmt: skip
        except OffStack as exc:
            where = "" if exc.index is None else f"frame {int(frame_order[exc.index]) + 1} "
            raise InputError(f"{where}{exc.reason}", path) from None
        origin = positions[int(frame_order[0])]
    grid_offsets = ds_floats(ds.get("GridFrameOffsetVector"), n_frames) if n_frames > 1 else None
    if positions is None and grid_offsets is not None:  # RT dose: offsets along the normal
        gaps = np.diff(grid_offsets)
        if len(gaps) and np.all(gaps > 0) and np.ptp(gaps) <= 1e-3 * max(1.0, abs(float(gaps[0]))):
            sz = stated_sz = float(gaps[0])
    z_stated = n_frames == 1 or positions is not None or stated_sz is not None
    return (sx, sy, sz), origin, direction, frame_order, z_stated


def _greyscale(
    array: np.ndarray, ds: Dataset, photometric: str, frame_order: np.ndarray, meta: dict[str, Any]
) -> np.ndarray:
    """The modality transform (LUT sequence, else rescale per frame) and MONOCHROME1 inversion."""
    meta["photometric"] = "MONOCHROME2"
    lut = modality_lut_sequence(array, ds)
    if lut is not None:  # a LUT sequence takes precedence over rescale, as in pydicom
        array, (lo, hi) = lut
        meta["rescale_applied"] = True
        if str((ds.ModalityLUTSequence[0].get("ModalityLUTType") or "")).strip().upper() == "HU":
            meta["units"] = "HU"
        if photometric == "MONOCHROME1":
            array = invert_range(array, lo, hi)
            if "window_center" in meta:
                meta["window_center"] = float(lo + hi - meta["window_center"])
        return array
    if photometric == "MONOCHROME1":
        array = invert_monochrome1(array, ds)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    n_frames = array.shape[0]
    if len(per_frame) == n_frames:  # enhanced objects may rescale each frame differently
        rescales = [rescale_of(ds, group) for group in per_frame]
        rescales = [rescales[int(i)] for i in frame_order]
    else:
        rescales = [rescale_of(ds)] * n_frames
    rescale = rescales[0]
    meta["rescale_applied"] = rescale is not None
    if rescale is not None:
        pairs = [r or (1.0, 0.0) for r in rescales]
        if any(slope == 0 for slope, _ in pairs):
            raise InputError("RescaleSlope 0: every pixel would be the intercept (a blank image)")
        dtype = np.result_type(*{rescaled_dtype(stored_range(ds), a, b) for a, b in pairs})
        if len(set(pairs)) == 1:
            array = apply_rescale(array, *pairs[0], dtype)
            meta.update(rescale_slope=pairs[0][0], rescale_intercept=pairs[0][1])
        else:
            out = np.empty(array.shape, dtype)
            for k, (slope, intercept) in enumerate(pairs):
                apply_rescale(array[k], slope, intercept, dtype, out=out[k])
            array = out
        if meta.get("modality") == "CT":
            meta["units"] = "HU"
    if photometric == "MONOCHROME1" and "window_center" in meta:
        # The VOI window applies before the MONOCHROME1 inversion: mirror its centre so that
        # it selects the same tissue in the inverted (higher = brighter) values.
        slope, intercept = rescale or (1.0, 0.0)
        lo, hi = stored_range(ds)
        meta["window_center"] = float((lo + hi) * slope + 2 * intercept - meta["window_center"])
    return array


def volume_from_dataset(ds: Dataset, path: Path, max_voxel_bytes: int | None = None) -> Volume:
    """Decode one parsed DICOM dataset (any number of frames) into a Volume with geometry.

    The declared pixel size is checked against :mod:`medanomaly.io.limits` before decoding. A DICOM Segmentation
    becomes its label map (:mod:`medanomaly.io.dicom_seg_read`).
    """
    from medanomaly.io.dicom_seg_read import is_segmentation, read_segmentation

    if is_segmentation(ds):
        return read_segmentation(ds, path, safe_meta(ds), max_voxel_bytes)
    array, photometric = decode_pixels(ds, path, max_voxel_bytes)
    n_frames = array.shape[0]
    meta = safe_meta(ds)
    meta["n_frames"] = n_frames
    if n_frames > 1 and _frames_are_time(ds):
        meta["frame_axis"] = "time"
    spacing, origin, direction, frame_order, z_stated = _geometry(ds, n_frames, path)
    mark_unstated_spacing(meta, direction, z_stated or "frame_axis" in meta)
    if orientation_unusable(image_orientation(ds)):
        meta["orientation_assumed"] = True
    if not np.all(frame_order == np.arange(n_frames)):
        array = array[frame_order]
    if photometric in _COLOUR_PHOTOMETRICS:
        array = to_rgb(array, ds, photometric)
        meta.update(photometric="RGB", channels=3)
    else:
        with about_file(path):  # a rescale that cannot be applied names the file
            array = _greyscale(array, ds, photometric, frame_order, meta)
    return Volume(np.ascontiguousarray(array), spacing=spacing, origin=origin, direction=direction, meta=meta)


def read_dicom_file(path: str | Path, *, series_uid: str | None = None, max_voxel_bytes: int | None = None) -> Volume:
    """Read one DICOM file (single- or multi-frame, any shipped transfer syntax) into a Volume.

    A DICOMDIR is read through the series it references (:mod:`medanomaly.io.dicomdir`).

    Args:
        path: a DICOM Part 10 file.
        series_uid: for a DICOMDIR indexing several series, the one to read.
        max_voxel_bytes: limit on the decoded voxel data (see :mod:`medanomaly.io.limits`).

    Returns:
        Volume with voxels (z, y, x) or (z, y, x, 3) for colour; CT in HU; spacing in mm.

    Raises:
        InputError: not DICOM, truncated, no pixel data, undecodable pixel data, or over the
            voxel limit.
    """
    path = Path(path)
    ds = read_dataset(path, max_voxel_bytes=max_voxel_bytes)
    if is_dicomdir(ds):
        from medanomaly.io.dicomdir import read_dicomdir

        return read_dicomdir(path, ds, series_uid=series_uid, max_voxel_bytes=max_voxel_bytes)
    return volume_from_dataset(ds, path, max_voxel_bytes)


#: Bytes per word of the VRs whose values pydicom keeps as raw bytes in the file's byte order.
_WORD_BYTES = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def as_little_endian(ds: Dataset, copy: bool = True) -> Dataset:
    """``ds`` as highdicom and pydicom's pixel writer take it: a dataset in Explicit VR Big Endian (retired, still
    written by old archives and ``dcmconv +tb``; both refuse every big-endian dataset) relabelled Explicit VR Little
    Endian, the words of every value kept as raw bytes (OW, OL, OF, OD, OV: pixel data, palette lookup tables...)
    byte-swapped, in sequences too (OB, a binary SEG's usual VR, is a byte stream in either order; the other elements
    are decoded values already). A copy unless ``copy`` is False; a little-endian dataset (or one without file meta)
    is ``ds`` itself."""
    import copy as copying

    from pydicom.uid import ExplicitVRLittleEndian

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or syntax.is_little_endian:
        return ds
    ds = copying.deepcopy(ds) if copy else ds
    _swap_words(ds)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if hasattr(ds, "set_original_encoding"):  # its raw values are little endian now: it may be saved so
        ds.set_original_encoding(False, True, ds.original_character_set)
    return ds


def _swap_words(ds: Dataset) -> None:
    """Byte-swap, in place, the raw words of ``ds``'s OW / OL / OF / OD / OV values and those in its sequences."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or ():
                _swap_words(item)
        elif elem.VR in _WORD_BYTES and isinstance(elem.value, bytes) and len(elem.value) % _WORD_BYTES[elem.VR] == 0:
            size = _WORD_BYTES[elem.VR]
            elem.value = np.frombuffer(elem.value, f">u{size}").astype(f"<u{size}").tobytes()
