"""2D pictures (PNG, JPEG, BMP, TIFF) read and written through SimpleITK.

A picture becomes a one-slice :class:`~medanomaly.types.Volume` (1, y, x) or (1, y, x, 3) for
colour. RGB files whose three channels are identical (common for exported greyscale slices,
e.g. ITK's ``BrainT1Slice.png``) are read as greyscale; an alpha channel is dropped (an 8-bit grey + alpha PNG,
which SimpleITK cannot read, through Pillow). An EXIF orientation (a JPEG stored sideways) is applied, as
viewers apply it. A picture states no patient geometry: its pixel spacing is 1 mm with ``meta["spacing_assumed"]``
(lengths are in pixels). A JPEG's or TIFF's print resolution (72 dpi, ITK's spacing of 0.35 mm) says how large to
print it, not how large the patient is, and a PNG's is not read by ITK at all: it is kept as
``meta["print_resolution_dpi"]``, not used.

Example:
    >>> from medanomaly.data.sources import real_data
    >>> read_picture(real_data("itk/BrainT1Slice.png")).shape  # doctest: +SKIP
    (1, 217, 181)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medanomaly.errors import InputError, raise_if_out_of_memory
from medanomaly.io.assumed_spacing import spacing_assumed_meta
from medanomaly.io.staged import write_staged
from medanomaly.types import Volume

PICTURE_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff"}


def read_picture(path: str | Path, *, max_voxel_bytes: int | None = None) -> Volume:
    """Read a PNG/JPEG/BMP/TIFF picture into a one-slice Volume.

    The declared size (width x height x channels x bytes, from the header) is checked against
    :mod:`medanomaly.io.limits` before the pixels are decompressed.

    Raises:
        InputError: unreadable or truncated file, more pixel data than the limit, or an animated PNG (several
            frames, of which SimpleITK would read the first alone).
    """
    import SimpleITK as sitk

    from medanomaly.io.itk import check_declared_size, itk_path, native_remarks_logged

    path = Path(path)
    fmt = PICTURE_SUFFIXES.get(path.suffix.lower(), "picture")
    orientation = _checked_header(path, fmt)
    reader = sitk.ImageFileReader()
    reader.SetFileName(itk_path(path))
    remarks: list[str] = []
    try:
        with native_remarks_logged(path) as remarks:
            reader.ReadImageInformation()
            check_declared_size(reader, path, max_voxel_bytes)
            image = reader.Execute()
    except RuntimeError as exc:
        raise_if_out_of_memory(exc)
        grey = _grey_of_grey_alpha(path, max_voxel_bytes) if fmt == "png" else None
        if grey is None:
            reason = _unequal_pages(path) if fmt == "tiff" else None
            raise InputError(reason or f"not a readable {fmt} image (corrupt or truncated{_library_detail(remarks)})",
                             path) from None  # fmt: skip
        turned = {"exif_orientation": orientation} if orientation != 1 else {}
        return Volume(_upright(grey[None], orientation) if turned else grey[None],
                      meta={"source_format": fmt, "photometric": "MONOCHROME2", "spacing_assumed": True, **turned})  # fmt: skip
    vol = Volume.from_sitk(image, source_format=fmt)
    array = vol.array
    if array.ndim == 4:
        if array.shape[-1] in (2, 4):  # grey+alpha or RGBA: drop alpha
            array = array[..., : array.shape[-1] - 1]
        if array.shape[-1] == 1 or np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(
            array[..., 0], array[..., 2]
        ):
            array = array[..., 0]
    meta, spacing = dict(vol.meta), (1.0, 1.0, *vol.spacing[2:])
    # a picture states no patient geometry: its mm are pixels (a multi-page TIFF's pages 1 mm apart, too)
    meta.update(spacing_assumed_meta(vol.direction, [0, 1] + ([2] if array.shape[0] > 1 else [])))
    if vol.spacing[:2] != (1.0, 1.0):  # ITK took the JPEG's or TIFF's print resolution as spacing: kept aside
        meta["print_resolution_dpi"] = [round(25.4 / s, 3) for s in vol.spacing[:2]]
    if orientation != 1:
        if fmt == "tiff":  # libtiff's RGBA reader applied the orientation's flip and no quarter turn: undo it
            array = _upright(array, orientation - 4) if orientation >= 6 else array
            array = _upright(array, orientation) if orientation >= 5 else array
        else:
            array = _upright(array, orientation)
        if orientation >= 5 and "print_resolution_dpi" in meta:  # turned a quarter: its width and height swap
            meta["print_resolution_dpi"] = meta["print_resolution_dpi"][::-1]
        meta["exif_orientation"] = orientation
    if array.ndim == 4:
        meta.update(channels=int(array.shape[-1]), photometric="RGB")
    else:
        meta["photometric"] = "MONOCHROME2"
    return Volume(np.ascontiguousarray(array), spacing=spacing, origin=vol.origin, direction=vol.direction, meta=meta)


def _library_detail(remarks: list[str]) -> str:
    """``": <what the decoder said>"`` from libpng's or libjpeg's lines, which had reached the terminal above our one
    line ("libpng error: IDAT: CRC error", "Invalid JPEG file structure: missing SOS marker"), else ``""``."""
    from medanomaly.io.itk import LIBJPEG_REMARK

    for remark in reversed(remarks):  # the last word is the decoder's verdict
        if remark.startswith("libpng error:"):
            return ": " + remark.split(": ")[-1]
        if LIBJPEG_REMARK.match(remark):
            return ": " + remark
    return ""


#: EXIF Orientation tag (0x0112): how a viewer turns the stored pixels to show them upright.
EXIF_ORIENTATION = 0x0112


def _checked_header(path: Path, fmt: str) -> int:
    """The picture's EXIF orientation, 1 (as stored) to 8, from one read of its header by Pillow (JPEG, TIFF, PNG
    eXIf); 1 when there is none, or a value outside 1..8. SimpleITK ignores it in a JPEG or a PNG: a phone's or a
    scanner's JPEG stored sideways with orientation 6 was read sideways, though every viewer shows it upright.
    A file Pillow cannot open gives 1: SimpleITK's read then says why.

    Raises:
        InputError: an animated PNG (APNG: a cine loop exported as one file; SimpleITK read its first frame alone,
            the others lost without a word), or a TIFF of more than 8 bits per sample with an orientation other than
            1 (ITK reads such a file only through libtiff's 8-bit RGBA reader: a 16-bit radiograph came back as 8
            bits, without a word).
    """
    from PIL import Image

    try:
        with Image.open(path) as picture:
            frames = int(getattr(picture, "n_frames", 1)) if fmt == "png" else 1
            value = picture.getexif().get(EXIF_ORIENTATION, 1)
            bits = picture.tag_v2.get(258, (8,)) if fmt == "tiff" and hasattr(picture, "tag_v2") else (8,)
    except _pillow_errors():
        return 1
    if frames > 1:
        raise InputError(f"animated PNG with {frames} frames: only single-frame pictures are read (save each "
                         "frame as its own file, or the loop as a multi-frame DICOM or a NIfTI volume)", path)
    orientation = int(value) if isinstance(value, int) and 1 <= value <= 8 else 1
    deepest = max((int(b) for b in bits), default=8) if isinstance(bits, tuple) else int(bits)
    if orientation != 1 and deepest > 8:
        raise InputError(f"{deepest}-bit TIFF with orientation {orientation} (not top-left): ITK reads it only at "
                         "8 bits, losing its grey levels; save it with orientation 1", path)  # fmt: skip
    return orientation


def _upright(array: np.ndarray, orientation: int) -> np.ndarray:
    """``array`` (z, y, x[, c]) turned in each slice as EXIF ``orientation`` 2..8 says a viewer shows it (Pillow's
    ``ImageOps.exif_transpose``): mirrored (2), turned 180 degrees (3), flipped (4), transposed (5), turned 90
    degrees clockwise (6), transversed (7), turned 90 degrees counter-clockwise (8)."""
    turned = {
        2: lambda a: a[:, :, ::-1],
        3: lambda a: a[:, ::-1, ::-1],
        4: lambda a: a[:, ::-1, :],
        5: lambda a: a.swapaxes(1, 2),
        6: lambda a: np.rot90(a, k=-1, axes=(1, 2)),
        7: lambda a: a[:, ::-1, ::-1].swapaxes(1, 2),
        8: lambda a: np.rot90(a, k=1, axes=(1, 2)),
    }[orientation](array)
    return np.ascontiguousarray(turned)


def _pillow_errors() -> tuple[type[BaseException], ...]:
    """What Pillow raises on a header it cannot parse; the callers then leave the reason to SimpleITK's read."""
    from PIL import Image

    return (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


#: Pages of a TIFF looked at to tell why SimpleITK could not read it (a stack of thousands is not walked).
MAX_PAGES_CHECKED = 4096


def _unequal_pages(path: Path) -> str | None:
    """Why SimpleITK refused a multi-page TIFF whose pages differ in size (it reads pages as the slices of one
    volume), or None: that file was "corrupt or truncated", which it is not."""
    from PIL import Image

    try:
        with Image.open(path) as picture:
            sizes = []
            for page in range(min(int(getattr(picture, "n_frames", 1)), MAX_PAGES_CHECKED)):
                picture.seek(page)
                sizes.append(picture.size)
    except _pillow_errors():
        return None
    if len(set(sizes)) < 2:
        return None
    first, other = sizes[0], next(size for size in sizes if size != sizes[0])
    return (f"multi-page TIFF whose pages differ in size ({first[0]} x {first[1]} and {other[0]} x {other[1]} "
            "pixels): its pages are read as the slices of one volume; save each page as its own file")


def _grey_of_grey_alpha(path: Path, max_voxel_bytes: int | None) -> np.ndarray | None:
    """The grey channel (y, x) of an 8-bit grey + alpha PNG, which SimpleITK cannot read ("Unknown PixelType"), read
    with Pillow after its declared size is checked (1 mm pixels: such files keep no spacing we read); None when the
    file is not one."""
    from PIL import Image

    from medanomaly.io.limits import check_voxel_bytes

    try:
        with Image.open(path) as picture:
            if picture.format != "PNG" or picture.mode != "LA":
                return None
            check_voxel_bytes((1, picture.height, picture.width), 1, path, limit=max_voxel_bytes)
            return np.ascontiguousarray(np.asarray(picture.getchannel("L"), np.uint8))
    except _pillow_errors():
        return None


def to_uint8(array: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Map intensities to uint8 for display.

    Args:
        array: any numeric array.
        window: (center, width) in the array's unit (e.g. HU for CT: lung (-600, 1500),
            soft tissue (40, 400)); default: the 0.5-99.5 percentile range.
    """
    data = np.asarray(array, dtype=np.float32)
    if window is not None:
        center, width = window
        lo, hi = center - width / 2.0, center + width / 2.0
    else:
        finite = data[np.isfinite(data)]
        lo, hi = (np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0))
    if hi <= lo:
        hi = lo + 1.0
    out = np.clip((data - lo) / (hi - lo), 0.0, 1.0) * 255.0
    return np.nan_to_num(out).round().astype(np.uint8)


def write_picture(
    volume: Volume, path: str | Path, *, window: tuple[float, float] | None = None, slice_index: int | None = None
) -> Path:
    """Write one slice as PNG/JPEG/BMP/TIFF.

    uint8/uint16 voxels are written as they are; other types are mapped to uint8 with ``window``
    (center, width), or with the 0.5-99.5 percentile range when no window is given.

    Args:
        volume: a one-slice Volume, or any Volume with ``slice_index``.
        path: output file; the extension picks the format.
        window: display window for non-integer or signed data (e.g. HU).
        slice_index: which z slice to write for a 3D volume.
    """
    import SimpleITK as sitk

    from medanomaly.io.itk import itk_path, itk_reason

    path = Path(path)
    if path.suffix.lower() not in PICTURE_SUFFIXES:
        raise InputError(f"unknown picture extension (use one of {', '.join(PICTURE_SUFFIXES)})", path)
    if slice_index is None:
        if not volume.is_2d:
            raise InputError(f"a picture holds one slice; volume has {volume.shape[0]} (pass slice_index)", path)
        slice_index = 0
    plane = volume.array[slice_index]
    if plane.ndim == 3 and plane.shape[-1] not in (3, 4):
        raise InputError(f"a picture holds grey, RGB or RGBA pixels; this volume has {plane.shape[-1]} components "
                         "(write NIfTI, NRRD or MHA)", path)  # fmt: skip
    if window is not None or plane.dtype not in (np.uint8, np.uint16):
        plane = to_uint8(plane, window)
    if plane.dtype == np.uint16 and path.suffix.lower() in (".jpg", ".jpeg", ".bmp"):
        plane = (plane >> 8).astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(plane), isVector=plane.ndim == 3)
    image.SetSpacing(volume.spacing[:2])

    def write(staged: Path) -> None:
        try:
            sitk.WriteImage(image, itk_path(staged, name=path))
        except RuntimeError as exc:
            raise_if_out_of_memory(exc)
            raise InputError(f"cannot write picture ({itk_reason(exc, staged)})", path) from None

    return write_staged(path, write)  # all-or-nothing: a failed write leaves an earlier file of this name whole
