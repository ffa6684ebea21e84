"""NRRD and MetaImage (``.mha``/``.mhd``) read, and NIfTI/NRRD/MetaImage written, through SimpleITK.

SimpleITK reads NRRD's ``space directions`` and ``space origin`` and MetaImage's
``TransformMatrix``/``Offset``; we keep what it gives and only add safe metadata (the
``modality`` key that our NRRD writer stores). Geometry is cross-checked in the tests against
pynrrd. NIfTI is *read* by :mod:`medanomaly.io.nifti` (nibabel: sform before qform, NaN kept,
NIfTI-2); :func:`read_itk` hands ``.nii``/``.nii.gz`` over to it.

The image header is read first (``ImageFileReader.ReadImageInformation``: sizes, pixel type,
components) and the declared voxel data checked against :mod:`medanomaly.io.limits` before
ITK allocates or decompresses anything, so a 1 KB NRRD header claiming 1000^3 floats, or a
small gzip NRRD that inflates to gigabytes, is refused at the cost of reading its header.

Example:
    >>> from medanomaly.data.sources import real_data
    >>> read_itk(real_data("pyradiomics/lung1_image.nrrd")).spacing  # doctest: +SKIP
    (0.5703, 0.5703, 5.0)
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError, raise_if_out_of_memory
from medanomaly.io.assumed_spacing import spacing_assumed_meta
from medanomaly.io.detached import check_detached_data
from medanomaly.io.limits import check_voxel_bytes
from medanomaly.io.frames import check_volume
from medanomaly.io.staged import write_staged
from medanomaly.geometry import is_orthonormal
from medanomaly.types import Volume

log = logging.getLogger(__name__)

#: What native readers print on file descriptor 2 that is a remark on a readable file, not an error (libpng's
#: default warning handler: ``libpng warning: sCAL: invalid unit`` three times for ITK's own example PNGs).
#: How libjpeg's error and warning texts begin (ITK's JPEG reader prints them on standard output).
_LIBJPEG = r"Premature end|Invalid JPEG|Corrupt JPEG|Not a JPEG|Bogus |Unsupported JPEG|JPEG datastream"
NATIVE_REMARKS = re.compile(r"^(libpng warning:|libpng error:|MetaObject:|MetaImage:|\w+ required and not defined\.|"
                            r"\*\* ERROR: NWAD:|"
                            rf"Uncompress failed|\s+ideal = \d+ : actual = \d+|{_LIBJPEG})")
#: Remarks after which ITK's voxels are not the file's, though it returns an image: MetaIO's zlib failure on data
#: marked ``CompressedData = True`` (the buffer came back uninitialised).
DATA_FAILURES = ("Uncompress failed",)
#: The libjpeg lines among the remarks.
LIBJPEG_REMARK = re.compile(rf"^({_LIBJPEG})")
_FD2 = threading.Lock()  # one capture of file descriptors 1 and 2 at a time (a second would restore the first's file)

#: File endings read and written by this module, with the name stored in ``meta["source_format"]``.
ITK_SUFFIXES = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
}
#: Modalities accepted from a file's ``modality`` metadata key.
KNOWN_MODALITIES = frozenset({"CT", "MR", "PT", "US", "CR", "DX", "MG", "NM", "XA", "OT", "SEG"})


def itk_format(path: Path) -> str | None:
    """``nifti`` / ``nrrd`` / ``metaimage`` for a path, or None."""
    name = path.name.lower()
    for suffix, fmt in ITK_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return None


def itk_volumes(path: str | Path) -> int:
    """How many volumes an NRRD or MetaImage file holds along its fourth dimension (1 for 2D/3D), from its header.

    Raises:
        InputError: an unreadable header, or one naming a data file outside its folder.
    """
    path = Path(path)
    size = _read_header(path, itk_format(path) or "itk").GetSize()
    return int(size[3]) if len(size) == 4 else 1


def _read_header(path: Path, fmt: str) -> Any:
    """A SimpleITK ``ImageFileReader`` that has read ``path``'s header (no voxels), or one InputError: a detached data
    file outside the header's folder, or a header ITK cannot read (MetaIO's own first remark, else ITK's reason)."""
    import SimpleITK as sitk

    check_detached_data(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(itk_path(path))
    remarks: list[str] = []
    try:
        with native_remarks_logged(path) as remarks:
            reader.ReadImageInformation()
    except RuntimeError as exc:
        raise_if_out_of_memory(exc)
        reason = _remark_reason(remarks[0]) if remarks else itk_reason(exc, path)
        raise InputError(f"not a readable {fmt} image ({reason})", path) from None
    return reader


def read_itk(path: str | Path, *, max_voxel_bytes: int | None = None, volume: int | None = None) -> Volume:
    """Read an NRRD or MetaImage file with SimpleITK, keeping its LPS geometry.

    Args:
        path: ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd`` file (``.nii``/``.nii.gz`` are passed
            to :func:`medanomaly.io.nifti.read_nifti`).
        max_voxel_bytes: limit on the voxel data (see :mod:`medanomaly.io.limits`): of the whole file, 4D included
            (ITK's NRRD reader reads every volume before one is taken).
        volume: of a 4D image, the volume to keep (0-based).

    Returns:
        Volume (z, y, x[, c]); intensities as stored (HU for CT NRRDs written in HU), NaN kept.

    Raises:
        InputError: unreadable or truncated file, more than 3 spatial dimensions, more voxel
            data than the limit, or a header naming a data file outside its folder
            (:mod:`medanomaly.io.detached`).
    """
    path = Path(path)
    fmt = itk_format(path) or "itk"
    if fmt == "nifti":
        from medanomaly.io.nifti import read_nifti

        return read_nifti(path, max_voxel_bytes=max_voxel_bytes, volume=volume)
    reader = _read_header(path, fmt)
    remarks: list[str] = []
    try:
        size = reader.GetSize()
        if len(size) not in (2, 3, 4):
            raise InputError(f"{len(size)}D image: medanomaly reads 2D/3D images and one volume of a 4D image", path)
        check_volume(size[3] if len(size) == 4 else 1, volume, path, slices=size[2] if len(size) > 2 else 1)
        check_declared_size(reader, path, max_voxel_bytes)
        if volume is not None:  # the fourth dimension collapsed: a 3D image of that volume
            reader.SetExtractIndex([0, 0, 0, volume])
            reader.SetExtractSize([*size[:3], 0])
        with native_remarks_logged(path) as remarks:  # MetaIO reports truncated data on the terminal
            image = reader.Execute()
        failed = [r for r in remarks if r.startswith(DATA_FAILURES)]
        if failed:  # ITK returned the image anyway: its buffer uninitialised (values changed from read to read)
            raise InputError(f"not a readable {fmt} image ({_remark_reason(failed[0])})", path)
    except RuntimeError as exc:  # MetaIO's own first remark says more than ITK's errno text
        raise_if_out_of_memory(exc)
        reason = _remark_reason(remarks[0]) if remarks else itk_reason(exc, path)
        raise InputError(f"not a readable {fmt} image ({reason})", path) from None
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    meta: dict[str, object] = {"source_format": fmt}
    if image.HasMetaDataKey("modality"):
        modality = image.GetMetaData("modality").strip().upper()
        if modality in KNOWN_MODALITIES:
            meta["modality"] = modality
            if modality == "CT":
                meta["units"] = "HU"
    if image.GetNumberOfComponentsPerPixel() > 1:
        meta["channels"] = image.GetNumberOfComponentsPerPixel()
    scale, unstated = 1.0, []
    if fmt == "nrrd":  # what ITK leaves out of the header, read once
        header = _nrrd_header(path)
        unstated = nrrd_unstated_axes(header)  # nan (unknown): ITK took 1 mm, so those "mm" are samples
        scale = nrrd_mm_per_unit(header, path)
    if scale != 1.0:  # ITK drops an NRRD's "space units": the grid is in the header's unit (converted before the
        image.SetSpacing([scale * s for s in image.GetSpacing()])  # Volume checks the voxel size in mm)
        image.SetOrigin([scale * o for o in image.GetOrigin()])
    volume = Volume.from_sitk(image, **meta)
    return volume.with_meta(**spacing_assumed_meta(volume.direction, unstated)) if unstated else volume


#: Millimetres per NRRD "space units" value (lengths only; "" or none is mm, as NRRD readers take it).
NRRD_MM_PER_UNIT = {"": 1.0, "mm": 1.0, "millimeter": 1.0, "millimeters": 1.0, "m": 1000.0, "meter": 1000.0,
                    "meters": 1000.0, "cm": 10.0, "um": 0.001, "\u00b5m": 0.001, "micron": 0.001, "microns": 0.001}


def nrrd_mm_per_unit(header: str, path: Path) -> float:
    """Millimetres per unit of an NRRD header's ``space units`` (1 without the field; ``header``: its text,
    :func:`_nrrd_header`; ``path`` is named in the error). ITK ignores the field: a grid
    written in metres (``space units: "m" "m" "m"``) was read as millimetres, every length 1000 times short.

    Raises:
        InputError: units that are not one length for every axis (``"mm" "mm" "s"``, ``"furlong"``).
    """
    found = re.search(r"^space units\s*:(.*)$", header, re.MULTILINE)
    if found is None:
        return 1.0
    units = {u.strip().lower() for u in re.findall(r'"([^"]*)"', found[1])}
    if len(units) > 1 or not units <= NRRD_MM_PER_UNIT.keys():
        shown = " ".join(f'"{u}"' for u in sorted(units)) or found[1].strip()[:40]
        raise InputError(f"NRRD space units {shown} are not one length (mm, cm, m or microns) for every axis", path)
    return NRRD_MM_PER_UNIT[units.pop()] if units else 1.0


def _nrrd_header(path: Path) -> str:
    """An NRRD file's header text (up to its blank line), read from its first bytes only."""
    from medanomaly.io.detached import HEADER_BYTES

    with open(path, "rb") as fh:
        head = fh.read(HEADER_BYTES).decode("utf-8", errors="replace")
    return re.split(r"\r?\n\r?\n", head, maxsplit=1)[0]


#: NRRD ``kinds`` of a spatial or time axis (the spec's domain kinds; an axis without a kind is one too). Any other
#: kind (``vector``, ``RGB-color``, ``list`` ...) is a pixel's components, whose ``nan`` spacing says nothing.
NRRD_DOMAIN_KINDS = frozenset({"domain", "space", "time", "???", "none"})


def nrrd_unstated_axes(header: str) -> list[int]:
    """The grid axes (0 = x, 1 = y, 2 = z) of an NRRD whose ``spacings`` (or ``space directions`` vector) is ``nan``
    along more than one sample: NRRD's word for an unknown spacing, which ITK reads as 1 mm (the reader then marks
    ``meta["spacing_assumed"]``, as for a DICOM without PixelSpacing). Axes of a non-spatial kind (a vector's
    components, written with a ``nan`` spacing as the spec asks) are not grid axes and are skipped.
    ``header``: its text (:func:`_nrrd_header`)."""
    def field(name: str) -> str | None:
        found = re.search(rf"^{name}\s*:(.*)$", header, re.MULTILINE)
        return found[1] if found else None

    counts = [int(v) for v in (field("sizes") or "").split() if v.isdigit()]
    per_axis = (field("spacings") or "").split()
    directions = field("space directions")
    if not per_axis and directions:  # one vector, or "none" for a non-spatial axis, per axis
        per_axis = re.findall(r"\([^)]*\)|none", directions)
    kinds = (field("kinds") or "").split()
    grid = [i for i in range(len(counts)) if i >= len(kinds) or kinds[i].lower() in NRRD_DOMAIN_KINDS][:3]
    return [axis for axis, i in enumerate(grid)
            if counts[i] > 1 and i < len(per_axis) and "nan" in per_axis[i].lower()]  # fmt: skip


def _remark_reason(remark: str) -> str:
    """A MetaIO remark as a reason: ``MetaImage: M_ReadElementsData: data not read completely`` -> ``truncated: data
    not read completely``; its internal function name says nothing to a user."""
    text = remark.rstrip(".").split(": ")[-1]
    if text.startswith("Uncompress failed"):
        return "data marked CompressedData = True do not decompress"
    return f"truncated: {text}" if "not read completely" in text else text


@contextmanager
def _captured_output() -> Iterator[dict[int, bytes]]:
    """File descriptors 1 and 2 redirected into temporary files for the block (one capture at a time); yields a
    dict that holds ``{fd: what was written}`` once the block is over and the descriptors are restored."""
    written: dict[int, bytes] = {}
    with _FD2, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        files = {1: out, 2: err}
        saved = {fd: os.dup(fd) for fd in files}
        for fd, captured in files.items():
            os.dup2(captured.fileno(), fd)
        try:
            yield written
        finally:
            for fd, captured in files.items():
                os.dup2(saved[fd], fd)
                os.close(saved[fd])
                captured.seek(0)
                written[fd] = captured.read()


@contextmanager
def native_remarks_logged(path: Path) -> Iterator[list[str]]:
    """Run a native (C/C++) reader with file descriptors 1 and 2 captured: its :data:`NATIVE_REMARKS` go to
    the debug log under ``path``'s name instead of the terminal (a bad input is one line on stderr, and
    a good one none), and into the list this yields (after the block); anything else written meanwhile
    is passed on to its descriptor unchanged, after the read. Used around libpng and libjpeg reads
    (:func:`medanomaly.io.png.read_picture`) and ITK's header reads (MetaIO prints four lines for a
    header it cannot parse): short, and serialised. libjpeg writes on standard output: "Premature end of JPEG
    file" came before ``info --json``'s JSON, which a reader of that output could then not parse."""
    remarks: list[str] = []
    written: dict[int, bytes] = {}  # stays empty if the capture could not start
    try:
        with _captured_output() as written:
            yield remarks
    finally:
        for fd, text in written.items():
            for raw in text.splitlines(keepends=True):
                line = raw.decode(errors="replace")
                if NATIVE_REMARKS.match(line):
                    log.debug("%s: %s", path.name, line.rstrip())
                    remarks.append(line.strip())
                else:  # another thread's output, or the reader's own: passed on byte for byte
                    os.write(fd, raw)


@contextmanager
def native_output_if_ok(path: Path) -> Iterator[None]:
    """Run a native decoder with file descriptors 1 and 2 captured: what it printed is passed on when the block
    succeeds, and only logged (debug, under ``path``'s name) when it raises: the error then says it in one line
    (a Rust decoder's panic message and backtrace had reached the terminal above it)."""
    failed, written = True, {}
    try:
        with _captured_output() as written:
            yield
            failed = False
    finally:
        for fd, text in written.items():
            if failed and text:
                log.debug("%s: the decoder printed %s", path.name, text.decode(errors="replace")[:2000])
            elif text:
                os.write(fd, text)


def check_declared_size(reader: Any, path: Path, max_voxel_bytes: int | None = None) -> None:
    """Refuse, from the header an ``ImageFileReader`` has read, more voxel data than the limit."""
    import SimpleITK as sitk

    size = reader.GetSize()
    for axis, count in enumerate(size):  # MetaIO reads "DimSize = 4 -5 6" as unsigned: -5 came back as 4294967291,
        if count >= 2**31:  # and the limit's "96 GiB of voxel data" hid the typo
            raise InputError(f"the header's size of axis {axis} (counting from 0) is {count - 2**32}: sizes must be "
                             "positive", path)
    probe = sitk.Image([1] * len(size), reader.GetPixelID())  # a 1-voxel image of the same pixel type
    itemsize = sitk.GetArrayViewFromImage(probe).itemsize  # bytes per component
    components = max(1, reader.GetNumberOfComponents())
    check_voxel_bytes((*size, components), itemsize, path, limit=max_voxel_bytes)


#: ITK messages (lower case) and the plain reason we give instead.
_ITK_REASONS = {
    "unable to determine imageio reader": "no ITK reader recognises its content",
    "file does not exist": "file not found",
    "could not open": "cannot open file",
    "premature end": "truncated file (data end early)",
    "read failed": "truncated file (data end early)",
    "zlib": "corrupt compressed data",
    "gzip": "corrupt compressed data",
    "do not sufficiently overlap": "the images do not overlap in space (not in one patient space?)",
    # a MetaImage ElementSpacing or NRRD space direction of 0 (nan and inf are parsed as 0): "Refusing to change
    # spacing from [1, 1, 1] to [0, 1, 1]" said nothing a user could act on
    "refusing to change spacing": "a voxel spacing of 0 (or not a number): spacings must be positive, mm",
    # teem's words for an NRRD "sizes" value of 0 or less ("sizes: 4 -5 6" said "axis 1 size is zero!")
    "size is zero": "an axis size of 0 or less in the header's sizes: sizes must be positive",
    # a MetaImage TransformMatrix or NRRD space directions whose axes are not independent, or an NRRD direction
    # of nan, for which ITK takes (0, 0, 1) (a sagittal image's unknown slice direction): "(0 1 1)", the matrix's
    # last row, was all it said
    "bad direction, determinant is 0": "the axes' directions are not independent: a zero, parallel or nan direction",
}


def itk_path(path: str | Path, *, name: str | Path | None = None) -> str:
    """``path`` as the text SimpleITK takes, or one InputError naming ``name`` (default ``path``) when it is not UTF-8
    (:func:`medanomaly.errors.utf8_path`): SimpleITK's C++ string conversion aborted the whole process on such a name
    ("terminate called after throwing an instance of 'std::logic_error'"), a batch with it."""
    from medanomaly.errors import utf8_path

    return utf8_path(path, "ITK", name=name)


_TOO_FEW_PIXELS = re.compile(r"number of pixels along dimension ([012]) is less than (\d+)")


def itk_reason(exc: RuntimeError, path: Path | None = None) -> str:
    """A short, one-line reason for an ITK exception: known messages in plain words, else its
    last line without the file name (the caller names the file) and cut at 120 characters."""
    text = " ".join(str(exc).split())
    lower = text.lower()
    too_small = _TOO_FEW_PIXELS.search(text)
    if too_small:  # a recursive Gaussian (smoothing, anti-aliasing before a resample) on a 1-3 pixel axis
        axis, least = "xyz"[int(too_small[1])], too_small[2]
        return f"image too small: fewer than {least} pixels along {axis} (this filter needs at least {least})"
    for needle, reason in _ITK_REASONS.items():
        if needle in lower:
            return reason
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[-1] if lines else "ITK error"
    text = text.split(": ", 1)[-1] if text.startswith(("itk::", "ITK ", "sitk::")) else text
    text = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", text)  # the filter's class and address: noise to a user
    text = re.sub(r"^(ReadImageInformation: )?\[nrrd\] _?\w+: ", "", text)  # teem's function name ("[nrrd] _nrrd...")
    if path is not None:
        text = text.replace(f'"{path}"', "the file").replace(str(path), "the file")
    return text if len(text) <= 120 else text[:117] + "..."


def write_itk(volume: Volume, path: str | Path, *, compress: bool = True) -> Path:
    """Write a Volume as NIfTI / NRRD / MetaImage (by extension), keeping its geometry.

    NRRD and MetaImage also store ``meta["modality"]``; NIfTI has no place for it. A sheared grid goes to NIfTI
    through nibabel (:func:`medanomaly.io.nifti.write_sheared_nifti`: ITK's writer would make it orthogonal).
    """
    import SimpleITK as sitk

    path = Path(path)
    fmt = itk_format(path)
    if fmt is None:
        raise InputError(f"unknown image extension (use one of {', '.join(ITK_SUFFIXES)})", path)
    if fmt == "nifti" and not is_orthonormal(volume.direction):  # ITK would make it orthogonal
        from medanomaly.io.nifti import write_sheared_nifti

        itk_path(path)  # the same names refused as ITK's own writes
        return write_sheared_nifti(volume, path)
    array = volume.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = volume.with_array(array).to_sitk() if array is not volume.array else volume.to_sitk()
    if "modality" in volume.meta:
        image.SetMetaData("modality", str(volume.meta["modality"]))

    def write(staged: Path) -> None:
        try:  # NIfTI's "** ERROR: NWAD: wrote only N of M bytes", MetaIO's "file stream is fail": write_staged says it
            with native_remarks_logged(path):
                sitk.WriteImage(image, itk_path(staged, name=path), useCompression=compress)
        except RuntimeError as exc:
            raise_if_out_of_memory(exc)
            raise InputError(f"cannot write image ({itk_reason(exc, staged)})", path) from None

    return write_staged(path, write)  # all-or-nothing: a failed write leaves an earlier file of this name whole
