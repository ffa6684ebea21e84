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
* **Intensity**: the modality LUT (``RescaleSlope``/``RescaleIntercept``) is applied whenever
  present, so CT voxels are in HU; ``MONOCHROME1`` is inverted so that higher is brighter;
  palette colour and YBR images become RGB (``(z, y, x, 3)`` arrays).
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
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.types import Volume

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

#: Projection modalities: a single 2D image with detector spacing, no patient position.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "IO", "PX", "RF", "XA"})
#: Non-image SOP classes we refuse with a clear reason (SEG is read: it has pixel data).
_COLOUR_PHOTOMETRICS = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR"})


# ------------------------------------------------------------------------------------ parsing
def read_dataset(path: Path, *, stop_before_pixels: bool = False) -> Dataset:
    """Parse a DICOM file with pydicom, turning every failure into :class:`InputError`.

    Files without the 128-byte preamble (old ACR-NEMA style) are accepted when pydicom's forced
    parse finds a real image header (SOP class or rows/columns).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        if path.stat().st_size == 0:
            raise InputError("empty file", path)
        # Whole files are parsed from memory: pydicom makes hundreds of small read/tell calls
        # per file, which cost ~20 % of a series read on a buffered file object.
        source: Any = path if stop_before_pixels else io.BytesIO(path.read_bytes())
        try:
            return pydicom.dcmread(source, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError:
            if not stop_before_pixels:
                source.seek(0)
            ds = pydicom.dcmread(source, stop_before_pixels=stop_before_pixels, force=True)
            if "SOPClassUID" not in ds and "Rows" not in ds:
                raise InputError("not a DICOM file", path) from None
            if not hasattr(ds, "file_meta") or "TransferSyntaxUID" not in ds.file_meta:
                from pydicom.dataset import FileMetaDataset
                from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

                ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = (
                    ImplicitVRLittleEndian if ds.is_implicit_VR else ExplicitVRLittleEndian
                )
            return ds
    except InputError:
        raise
    except Exception as exc:  # pydicom raises many types on garbage; all mean "unreadable"
        raise InputError(f"not a readable DICOM file ({_short(exc)})", path) from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _floats(value: Any, n: int) -> list[float] | None:
    """``n`` finite floats from a DS/FD multi-value, or None when missing or malformed."""
    if value is None:
        return None
    try:
        out = [float(v) for v in (value if isinstance(value, Sequence) and not isinstance(value, str) else [value])]
    except (TypeError, ValueError):
        return None
    if len(out) != n or not all(np.isfinite(out)):
        return None
    return out


def _first(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        return value[0] if len(value) else None
    return value


def _sequence_item(ds: Dataset, *keywords: str) -> Dataset | None:
    """Walk nested sequences by keyword, taking the first item each time."""
    node: Any = ds
    for kw in keywords:
        seq = node.get(kw) if node is not None else None
        if not seq:
            return None
        node = seq[0]
    return node


# ------------------------------------------------------------------------------------ geometry
def direction_from_iop(iop: Sequence[float] | None) -> np.ndarray:
    """3x3 direction matrix (columns: row cosine, column cosine, normal) from ImageOrientationPatient."""
    values = _floats(iop, 6)
    if values is None:
        return np.eye(3)
    row = np.asarray(values[:3])
    col = np.asarray(values[3:])
    if np.linalg.norm(row) < 1e-6 or np.linalg.norm(col) < 1e-6:
        return np.eye(3)
    row = row / np.linalg.norm(row)
    col = col - row * float(row @ col)  # re-orthogonalise small rounding errors
    col = col / np.linalg.norm(col)
    return np.column_stack([row, col, np.cross(row, col)])


def in_plane_spacing(ds: Dataset, pixel_measures: Dataset | None = None) -> tuple[float, float]:
    """(x, y) pixel spacing in mm.

    PixelSpacing, else ImagerPixelSpacing (projection radiographs), else the calibration of the
    first 2D tissue region of an ultrasound image (``SequenceOfUltrasoundRegions``, physical
    units cm -> mm), else 1 mm.
    """
    for source in (pixel_measures, ds):
        if source is None:
            continue
        for kw in ("PixelSpacing", "ImagerPixelSpacing"):
            ps = _floats(source.get(kw), 2)
            if ps is not None and ps[0] > 0 and ps[1] > 0:
                return ps[1], ps[0]
    for region in ds.get("SequenceOfUltrasoundRegions") or []:
        cm = 3  # PhysicalUnits code for cm; RegionSpatialFormat 1 = 2D tissue or flow
        if region.get("RegionSpatialFormat") == 1 and region.get("PhysicalUnitsXDirection") == cm and region.get(
            "PhysicalUnitsYDirection"
        ) == cm:
            dx, dy = _floats(region.get("PhysicalDeltaX"), 1), _floats(region.get("PhysicalDeltaY"), 1)
            if dx and dy and dx[0] > 0 and dy[0] > 0:
                return abs(dx[0]) * 10.0, abs(dy[0]) * 10.0
    return 1.0, 1.0


def slice_thickness(ds: Dataset, pixel_measures: Dataset | None = None) -> float:
    """Nominal slice spacing (mm) for a single slice: SpacingBetweenSlices, SliceThickness, else 1."""
    for source in (pixel_measures, ds):
        if source is None:
            continue
        for kw in ("SpacingBetweenSlices", "SliceThickness"):
            value = _floats(source.get(kw), 1)
            if value is not None and value[0] > 0:
                return value[0]
    return 1.0


# ------------------------------------------------------------------------------------ intensity
def rescale_of(ds: Dataset, frame_group: Dataset | None = None) -> tuple[float, float] | None:
    """(slope, intercept) of the modality LUT, from the frame's functional group or the dataset."""
    sources = []
    if frame_group is not None:
        sources.append(_sequence_item(frame_group, "PixelValueTransformationSequence"))
    shared = _sequence_item(ds, "SharedFunctionalGroupsSequence")
    if shared is not None:
        sources.append(_sequence_item(shared, "PixelValueTransformationSequence"))
    sources.append(ds)
    for source in sources:
        if source is None:
            continue
        slope = _floats(source.get("RescaleSlope"), 1)
        intercept = _floats(source.get("RescaleIntercept"), 1)
        if slope is not None or intercept is not None:
            return (slope[0] if slope else 1.0), (intercept[0] if intercept else 0.0)
    return None


def stored_range(ds: Dataset) -> tuple[int, int]:
    """Range of stored pixel values from BitsStored and PixelRepresentation."""
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation") or 0):
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def rescaled_dtype(value_range: tuple[int, int], slope: float, intercept: float) -> np.dtype:
    """Smallest faithful dtype for ``stored * slope + intercept`` (int16 for usual CT HU, else
    int32, float32 when slope or intercept is fractional)."""
    if float(slope).is_integer() and float(intercept).is_integer():
        ends = [value_range[0] * slope + intercept, value_range[1] * slope + intercept]
        lo, hi = min(ends), max(ends)
        for candidate in (np.int16, np.int32):
            info = np.iinfo(candidate)
            if lo >= info.min and hi <= info.max:
                return np.dtype(candidate)
    return np.dtype(np.float32)


def apply_rescale(
    array: np.ndarray, slope: float, intercept: float, dtype: np.dtype, out: np.ndarray | None = None
) -> np.ndarray:
    """``array * slope + intercept`` in ``dtype`` (see :func:`rescaled_dtype`), into ``out`` if given."""
    if out is None:
        out = np.empty(array.shape, dtype)
    if dtype.kind == "f":
        np.multiply(array, np.float32(slope), out=out, casting="unsafe")
        if intercept != 0.0:
            out += np.float32(intercept)
    elif slope == 1.0:  # one pass: stored + intercept, computed wide, cast into out
        np.add(array, np.int32(intercept), out=out, casting="unsafe")
    else:
        np.copyto(out, array, casting="unsafe")
        out *= int(slope)
        if intercept != 0.0:
            out += int(intercept)
    return out


def invert_monochrome1(array: np.ndarray, ds: Dataset) -> np.ndarray:
    """MONOCHROME1 (higher = darker) to MONOCHROME2 over the stored value range."""
    lo, hi = stored_range(ds)
    if array.dtype.kind == "u":  # hi - v stays within [0, hi]: same dtype
        return (array.dtype.type(hi) - array).astype(array.dtype, copy=False)
    return (lo + hi - array.astype(np.int64)).astype(array.dtype)


def to_rgb(array: np.ndarray, ds: Dataset, photometric: str) -> np.ndarray:
    """Palette colour to 8-bit RGB with pydicom's LUT; YBR arrives as RGB already.

    pydicom's ``pixel_array`` converts every YBR variant (native, JPEG, JPEG 2000 ICT/RCT) to
    RGB itself. 16-bit palette entries are scaled to 8 bits (``>> 8``), as GDCM/SimpleITK do.
    """
    from pydicom.pixels import apply_color_lut

    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(array, ds)
        if rgb.dtype.itemsize > 1:
            rgb = (rgb >> 8).astype(np.uint8)
        return rgb
    return array


def is_truncated_image(ds: Dataset) -> bool:
    """True for an image object (rows, or an *Image Storage* SOP class) without pixel data."""
    sop = str(getattr(ds.get("SOPClassUID"), "name", "") or "")
    return "Rows" in ds or "Image Storage" in sop or "SOPClassUID" not in ds


def missing_pixels_reason(ds: Dataset) -> str:
    """Why a dataset without pixel data cannot be read as an image (one line)."""
    if is_truncated_image(ds):
        return "truncated DICOM (pixel data missing or cut off)"
    sop = getattr(ds.get("SOPClassUID"), "name", None)
    return f"DICOM without pixel data ({sop}): not an image"


_NATIVE_LE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})  # implicit / explicit VR LE


def _native_pixels(ds: Dataset, out: np.ndarray | None = None) -> np.ndarray | None:
    """Uncompressed little-endian greyscale single-frame pixels as a NumPy view, or None.

    The fast path of series reading: pydicom has already parsed the PixelData element; for
    native little-endian data the pixels are that buffer, so we view it with NumPy instead of
    running pydicom's generic decoder (about 0.5 ms per slice). Cases needing more (sign
    extension of signed BitsStored < BitsAllocated, big endian, colour, frames, odd bit depths,
    short buffers) return None and go through ``ds.pixel_array``. Unused high bits of unsigned
    data are masked exactly as pydicom does; the tests check both paths agree. With ``out``, the
    pixels are copied into that (rows, cols) array instead (None if it does not fit).
    """
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax not in _NATIVE_LE or "PixelData" not in ds:
        return None
    get = ds.get
    allocated = get("BitsAllocated")
    if allocated not in (8, 16, 32) or (get("SamplesPerPixel") or 1) != 1:
        return None
    frames = get("NumberOfFrames")
    if frames not in (None, "", 1, "1"):
        return None
    stored = get("BitsStored") or allocated
    signed = bool(get("PixelRepresentation"))
    if signed and stored != allocated:
        return None
    rows, cols = get("Rows"), get("Columns")
    if not rows or not cols:
        return None
    data = ds.PixelData
    count = int(rows) * int(cols)
    if len(data) < count * allocated // 8:
        return None  # let pydicom report the truncation
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    array = np.frombuffer(data, dtype=dtype, count=count).reshape(int(rows), int(cols))
    if out is not None:  # copy into a caller's buffer (must match shape and dtype)
        if out.shape != array.shape or out.dtype != array.dtype:
            return None
        if not signed and stored < allocated:
            np.bitwise_and(array, dtype.type((1 << stored) - 1), out=out)
        else:
            np.copyto(out, array)
        return out
    if not signed and stored < allocated:
        array = array & dtype.type((1 << stored) - 1)
    return array


_JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def _pillow_jpeg_frames(ds: Dataset) -> np.ndarray | None:
    """8-bit colour JPEG baseline frames decoded by Pillow in a thread pool, or None.

    Why not pydicom's own path: it decodes to YCbCr and converts to RGB in float64 NumPy
    (about 30 ms per 640x480 frame, 10 s for the 120-frame echo). Pillow's libjpeg does the
    YCbCr->RGB step in C and releases the GIL, so frames decode in parallel (about 10x faster).
    Used only for YBR JPEG baseline (so the JPEG holds YCbCr and Pillow's conversion is the
    right one); anything unexpected returns None and goes through pydicom. The tests check both
    paths agree (JPEG rounding: at most a few grey levels).
    """
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if tsyntax != _JPEG_BASELINE or ds.get("SamplesPerPixel") != 3 or not photometric.startswith("YBR"):
        return None
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image
    from pydicom.encaps import generate_frames

    n_frames = number_of_frames(ds)
    rows, cols = int(ds.Rows), int(ds.Columns)

    def decode(frame: bytes) -> np.ndarray | None:
        with Image.open(io.BytesIO(frame)) as image:
            if image.mode != "RGB" or image.size != (cols, rows):
                return None
            return np.asarray(image)

    try:
        frames = list(generate_frames(ds.PixelData, number_of_frames=n_frames))
        if len(frames) != n_frames:
            return None
        if n_frames > 2:
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                decoded = list(pool.map(decode, frames))
        else:
            decoded = [decode(f) for f in frames]
    except Exception:  # noqa: BLE001 - any Pillow trouble: let pydicom decode (and report) instead
        return None
    if any(d is None for d in decoded):
        return None
    out = np.stack(decoded)  # type: ignore[arg-type]
    return out if n_frames > 1 else out[0]


def number_of_frames(ds: Dataset) -> int:
    """NumberOfFrames as an int (1 when missing or malformed)."""
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def decode_pixels(ds: Dataset, path: Path) -> tuple[np.ndarray, str]:
    """Decoded pixels (frames, rows, cols[, 3]) and the photometric interpretation they are in.

    YBR data that the JPEG decoders convert to RGB on the fly come back as RGB already.
    """
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError(missing_pixels_reason(ds), path)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        array = _native_pixels(ds)
        if array is None:
            array = _pillow_jpeg_frames(ds)
        if array is None:
            array = ds.pixel_array
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - decoders raise anything, incl. Rust panics (pyo3)
        text = str(exc)
        if "less than expected" in text or "ends early" in text or "too short" in text.lower():
            raise InputError("truncated DICOM (pixel data ends early)", path) from None
        raise InputError(f"cannot decode pixel data ({_short(exc)})", path) from None
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    n_frames = number_of_frames(ds)
    samples = int(ds.get("SamplesPerPixel") or 1)
    if n_frames == 1:
        array = array[np.newaxis]
    if samples == 1 and array.ndim != 3 or samples > 1 and array.ndim != 4:
        raise InputError(f"unexpected decoded pixel shape {array.shape}", path)
    # pydicom's pixel_array converts every YBR variant to RGB; report what the array now holds.
    if photometric.startswith("YBR"):
        photometric = "RGB"
    return array, photometric


# ------------------------------------------------------------------------------------ metadata
def safe_meta(ds: Dataset) -> dict[str, Any]:
    """Technical metadata only (see SAFE_META_KEYS). No names, dates, IDs, institutions."""
    meta: dict[str, Any] = {"source_format": "dicom"}
    modality = str(ds.get("Modality") or "").strip()
    if modality:
        meta["modality"] = modality
    for key, kw in (("series_uid", "SeriesInstanceUID"), ("study_uid", "StudyInstanceUID")):
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
        value = _floats(_first(ds.get(kw)), 1)
        if value is not None:
            meta[key] = value[0]
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
        pos = _floats(item.get("ImagePositionPatient") if item is not None else None, 3)
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


def volume_from_dataset(ds: Dataset, path: Path) -> Volume:
    """Decode one parsed DICOM dataset (any number of frames) into a Volume with geometry."""
    array, photometric = decode_pixels(ds, path)
    n_frames = array.shape[0]
    meta = safe_meta(ds)
    meta["n_frames"] = n_frames

    orientation = _functional(ds, "PlaneOrientationSequence")
    measures = _functional(ds, "PixelMeasuresSequence")
    iop = (orientation.get("ImageOrientationPatient") if orientation is not None else None) or ds.get(
        "ImageOrientationPatient"
    )
    direction = direction_from_iop(iop)
    sx, sy = in_plane_spacing(ds, measures)
    sz = slice_thickness(ds, measures)
    origin = _floats(ds.get("ImagePositionPatient"), 3) or [0.0, 0.0, 0.0]

    frame_order = np.arange(n_frames)
    positions = _frame_positions(ds, n_frames) if n_frames > 1 else None
    if positions is None and n_frames == 1:
        single = _frame_positions(ds, 1)
        if single:
            origin = single[0]
    if positions is not None:
        normal = direction[:, 2]
        proj = np.asarray(positions) @ normal
        order = np.argsort(proj, kind="stable")
        frame_order = order
        if not np.all(order == np.arange(n_frames)):
            array = array[order]
        proj = proj[order]
        gaps = np.diff(proj)
        if np.any(gaps <= 1e-6) or np.ptp(gaps) > max(1e-2, 0.01 * float(np.median(gaps))):
            raise InputError(f"frames are not equally spaced (gaps {np.round(gaps, 3).tolist()[:6]} mm)", path)
        sz = float((proj[-1] - proj[0]) / (n_frames - 1))
        origin = positions[int(order[0])]
    grid_offsets = _floats(ds.get("GridFrameOffsetVector"), n_frames) if n_frames > 1 else None
    if positions is None and grid_offsets is not None:  # RT dose: offsets along the normal
        gaps = np.diff(grid_offsets)
        if len(gaps) and np.all(gaps > 0) and np.ptp(gaps) <= 1e-3 * max(1.0, abs(float(gaps[0]))):
            sz = float(gaps[0])

    if photometric in _COLOUR_PHOTOMETRICS:
        array = to_rgb(array, ds, photometric)
        meta.update(photometric="RGB", channels=3)
    else:
        if photometric == "MONOCHROME1":
            array = invert_monochrome1(array, ds)
        meta["photometric"] = "MONOCHROME2"
        per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
        if len(per_frame) == n_frames:  # enhanced objects may rescale each frame differently
            rescales = [rescale_of(ds, group) for group in per_frame]
            rescales = [rescales[int(i)] for i in frame_order]
        else:
            rescales = [rescale_of(ds)] * n_frames
        rescale = rescales[0]
        if rescale is not None:
            pairs = [r or (1.0, 0.0) for r in rescales]
            dtype = np.result_type(*{rescaled_dtype(stored_range(ds), a, b) for a, b in pairs})
            if len(set(pairs)) == 1:
                array = apply_rescale(array, *pairs[0], dtype)
                meta.update(rescale_slope=pairs[0][0], rescale_intercept=pairs[0][1])
            else:
                out = np.empty(array.shape, dtype)
                for k, (slope, intercept) in enumerate(pairs):
                    apply_rescale(array[k], slope, intercept, dtype, out=out[k])
                array = out
            meta["rescale_applied"] = True
        else:
            meta["rescale_applied"] = False
        if meta.get("modality") == "CT" and rescale is not None:
            meta["units"] = "HU"
        if photometric == "MONOCHROME1" and "window_center" in meta:
            # The VOI window applies before the MONOCHROME1 inversion: mirror its centre so that
            # it selects the same tissue in the inverted (higher = brighter) values.
            slope, intercept = rescale or (1.0, 0.0)
            lo, hi = stored_range(ds)
            meta["window_center"] = float((lo + hi) * slope + 2 * intercept - meta["window_center"])
    return Volume(np.ascontiguousarray(array), spacing=(sx, sy, sz), origin=origin, direction=direction, meta=meta)


def read_dicom_file(path: str | Path) -> Volume:
    """Read one DICOM file (single- or multi-frame, any shipped transfer syntax) into a Volume.

    Args:
        path: a DICOM Part 10 file.

    Returns:
        Volume with voxels (z, y, x) or (z, y, x, 3) for colour; CT in HU; spacing in mm.

    Raises:
        InputError: not DICOM, truncated, no pixel data, or undecodable pixel data.
    """
    path = Path(path)
    return volume_from_dataset(read_dataset(path), path)
