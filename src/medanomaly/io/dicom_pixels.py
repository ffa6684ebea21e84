"""DICOM pixel data: decode (every shipped transfer syntax) and map to voxel values.

Split from :mod:`medanomaly.io.dicom` (which turns a parsed dataset into a Volume with
geometry). This module knows the pixel side only:

* **decode**: native little-endian greyscale as a NumPy view of the PixelData buffer (fast path
  of series reading), colour JPEG baseline through Pillow in a thread pool, everything else
  through pydicom's decoders (``pylibjpeg*``, ``pyjpegls``); decoder failures, even Rust panics,
  become one :class:`~medanomaly.errors.InputError`;
* **limits**: the declared size of the decoded pixels is checked against
  :mod:`medanomaly.io.limits` before any decoder runs;
* **intensity**: the modality LUT, as ``RescaleSlope``/``RescaleIntercept`` or as a
  ``ModalityLUTSequence`` (PS3.3 C.11.1); ``MONOCHROME1`` inversion; palette colour to RGB,
  reading 16-bit LUT data in the file's byte order (pydicom assumes the machine's, which turns
  big-endian palettes into black images).

Example:
    >>> import numpy as np
    >>> apply_rescale(np.array([0, 1000], np.uint16), 1.0, -1024.0, np.dtype(np.int16)).tolist()
    [-1024, -24]
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.io.limits import check_voxel_bytes
from medanomaly.io.reasons import short_reason, without_header_values
from medanomaly.processes import usable_cpus
from medanomaly.types import FLOAT32_MAX

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

def _short(exc: BaseException, path: str | Path | None = None) -> str:
    """One-line reason from a DICOM library's exception (see :func:`medanomaly.io.reasons.short_reason`), with any
    header value it quotes hidden (:func:`medanomaly.io.reasons.without_header_values`)."""
    return without_header_values(short_reason(exc, path))


def ds_floats(value: Any, n: int) -> list[float] | None:
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
        slope = ds_floats(source.get("RescaleSlope"), 1)
        intercept = ds_floats(source.get("RescaleIntercept"), 1)
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
    int32, float32 when slope or intercept is fractional, float64 where float32 would overflow: a RescaleSlope of
    1e38 had made every pixel inf)."""
    ends = [value_range[0] * slope + intercept, value_range[1] * slope + intercept]
    lo, hi = min(ends), max(ends)
    if float(slope).is_integer() and float(intercept).is_integer():
        for candidate in (np.int16, np.int32):
            info = np.iinfo(candidate)
            if lo >= info.min and hi <= info.max:
                return np.dtype(candidate)
    return np.dtype(np.float64 if max(abs(lo), abs(hi)) > FLOAT32_MAX else np.float32)


def apply_rescale(
    array: np.ndarray, slope: float, intercept: float, dtype: np.dtype, out: np.ndarray | None = None
) -> np.ndarray:
    """``array * slope + intercept`` in ``dtype`` (see :func:`rescaled_dtype`), into ``out`` if given."""
    if out is None:
        out = np.empty(array.shape, dtype)
    if dtype.kind == "f":
        np.multiply(array, dtype.type(slope), out=out, casting="unsafe")
        if intercept != 0.0:
            out += dtype.type(intercept)
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
    return invert_range(array, *stored_range(ds))


def invert_range(array: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``lo + hi - array``: mirror values within [lo, hi], keeping the dtype when it fits.

    Float pixel data (which has no stored bit range) is mirrored over its finite value range in
    floating point, so NaN stays NaN.
    """
    if array.dtype.kind == "f":
        finite = array[np.isfinite(array)]
        if finite.size == 0:
            return array
        return (finite.min() + finite.max() - array).astype(array.dtype, copy=False)
    if array.dtype.kind == "u" and lo == 0:  # hi - v stays within [0, hi]: same dtype
        return (array.dtype.type(hi) - array).astype(array.dtype, copy=False)
    return (lo + hi - array.astype(np.int64)).astype(array.dtype)


def modality_lut_sequence(array: np.ndarray, ds: Dataset) -> tuple[np.ndarray, tuple[int, int]] | None:
    """Apply a ``ModalityLUTSequence`` (PS3.3 C.11.1) with pydicom; None when the file has none.

    Returns:
        The LUT output (uint8 or uint16, as the LUT data) and the output range (0, 2**bits - 1),
        which MONOCHROME1 inversion mirrors over.
    """
    seq = ds.get("ModalityLUTSequence")
    if not seq:
        return None
    from pydicom.pixels import apply_modality_lut

    out = apply_modality_lut(array, ds)
    bits = int((seq[0].get("LUTDescriptor") or [0, 0, 16])[2] or 16)
    return out, (0, 2 ** min(bits, 16) - 1)


def to_rgb(array: np.ndarray, ds: Dataset, photometric: str) -> np.ndarray:
    """Palette colour to 8-bit RGB with pydicom's LUT; YBR arrives as RGB already. A lookup table pydicom cannot
    apply (a descriptor that does not fit its data, a colour missing) is one :class:`InputError`.

    pydicom's ``pixel_array`` converts every YBR variant (native, JPEG, JPEG 2000 ICT/RCT) to
    RGB itself. 16-bit palette entries are scaled to 8 bits (``>> 8``), as GDCM/SimpleITK do.
    pydicom reads plain (non-segmented) 16-bit LUT data in the machine's byte order; for a
    big-endian file the LUT bytes are swapped first, so the colours are those GDCM shows.
    """
    from pydicom.pixels import apply_color_lut

    if photometric != "PALETTE COLOR":
        return array
    try:
        rgb = apply_color_lut(array, _palette_in_native_order(ds))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:  # a descriptor that does not fit its LUT data
        raise InputError(f"palette colour lookup table not usable ({short_reason(exc)})") from None
    if rgb.dtype.itemsize > 1:
        rgb = (rgb >> 8).astype(np.uint8)
    return rgb


_PALETTE_KEYWORDS = tuple(f"{c}PaletteColorLookupTableData" for c in ("Red", "Green", "Blue", "Alpha"))


def _palette_in_native_order(ds: Dataset) -> Dataset:
    """``ds``, or a shallow copy whose 16-bit palette LUT data are in the machine's byte order."""
    import sys

    little = getattr(getattr(ds, "file_meta", None), "_tsyntax_encoding", (None, None))[1]
    if little is None:
        little = getattr(ds, "original_encoding", (None, None))[1]
    file_order = "<" if little in (True, None) else ">"
    native = "<" if sys.byteorder == "little" else ">"
    descriptor = ds.get("RedPaletteColorLookupTableDescriptor")
    if file_order == native or not descriptor or _PALETTE_KEYWORDS[0] not in ds:
        return ds
    entries = int(descriptor[0]) or 2**16
    if len(ds[_PALETTE_KEYWORDS[0]].value) != 2 * entries:  # 8-bit entries: no byte order
        return ds
    from pydicom.dataelem import DataElement

    copy = ds.group_dataset(0x0028)  # a new Dataset sharing the (unchanged) element objects
    copy.file_meta = ds.file_meta
    for keyword in _PALETTE_KEYWORDS:
        if keyword in ds:
            element = ds[keyword]
            swapped = np.frombuffer(element.value, f"{file_order}u2").astype(f"{native}u2")
            copy[element.tag] = DataElement(element.tag, element.VR, swapped.tobytes())  # new element
    return copy


def is_truncated_image(ds: Dataset) -> bool:
    """True for an image object (rows, or an *Image Storage* SOP class) without pixel data."""
    sop = str(getattr(ds.get("SOPClassUID"), "name", "") or "")
    return "Rows" in ds or "Image Storage" in sop or "SOPClassUID" not in ds


def missing_pixels_reason(ds: Dataset) -> str:
    """Why a dataset without pixel data cannot be read as an image (one line)."""
    if is_truncated_image(ds):
        return "truncated DICOM (pixel data missing or cut off)"
    sop = getattr(ds.get("SOPClassUID"), "name", None)
    if sop == "RT Structure Set Storage":  # contours of an image: read on its grid (medanomaly.io.rtstruct)
        return f"DICOM without pixel data ({sop}): not an image; measure its ROIs with quantify IMAGE --mask FILE"
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
            with ThreadPoolExecutor(max_workers=min(8, usable_cpus())) as pool:
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


def declared_pixels(ds: Dataset) -> tuple[tuple[int, ...], int]:
    """Shape (frames, rows, columns, samples) and bytes per sample the decoded pixels will have,
    from the header alone. Palette colour counts 3 samples (its RGB output)."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    samples = 3 if photometric == "PALETTE COLOR" else _int(ds.get("SamplesPerPixel"), 1)
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        itemsize = 4 if "FloatPixelData" in ds else 8
    else:
        itemsize = max(1, -(-_int(ds.get("BitsAllocated"), 16) // 8))
    shape = (number_of_frames(ds), _int(ds.get("Rows"), 0), _int(ds.get("Columns"), 0), samples)
    return shape, itemsize


def _int(value: Any, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _decoded(ds: Dataset, path: Path) -> np.ndarray:
    """``ds.pixel_array``; RLE Lossless with the decoders' own output held back when the decode fails: pylibjpeg-rle
    (Rust) panics on damaged segments ("index out of bounds") and the panic printed its message and, with
    RUST_BACKTRACE set, a 220-line backtrace on the terminal above our one line. (pydicom's own RLE decoder does
    not panic, but is five times slower: 22 vs 4.5 ms for a 512 x 512 slice.)"""
    from pydicom.uid import RLELossless

    if getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None) != RLELossless:
        return ds.pixel_array
    from medanomaly.io.itk import native_output_if_ok

    with native_output_if_ok(path):
        return ds.pixel_array


def decode_pixels(ds: Dataset, path: Path, max_voxel_bytes: int | None = None) -> tuple[np.ndarray, str]:
    """Decoded pixels (frames, rows, cols[, 3]) and the photometric interpretation they are in.

    YBR data that the JPEG decoders convert to RGB on the fly come back as RGB already. The
    declared size is checked against :mod:`medanomaly.io.limits` before any decoder runs.
    """
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError(missing_pixels_reason(ds), path)
    check_voxel_bytes(*declared_pixels(ds), path, limit=max_voxel_bytes)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        array = _native_pixels(ds)
        if array is None:
            array = _pillow_jpeg_frames(ds)
        if array is None:
            array = _decoded(ds, path)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - decoders raise anything, incl. Rust panics (pyo3)
        text = str(exc)
        if "less than expected" in text or "ends early" in text or "too short" in text.lower():
            raise InputError("truncated DICOM (pixel data ends early)", path) from None
        raise InputError(f"cannot decode pixel data ({_short(exc, path)})", path) from None
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


