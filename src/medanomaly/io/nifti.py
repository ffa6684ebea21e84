"""NIfTI-1 and NIfTI-2 (``.nii``, ``.nii.gz``), and FreeSurfer's MGH (``.mgh``, ``.mgz``: ``T1.mgz``, ``brain.mgz``,
``aseg.mgz``), read with nibabel: geometry as nibabel, FSL, MRtrix and FreeSurfer see it, NaN kept.

Why nibabel and not SimpleITK for NIfTI: ITK builds the geometry from the qform even where a
file sets its sform (which nibabel, FSL, MRtrix and the NIfTI standard's "sform first" use): on
4 of the 13 mricron templates that moved the origin by up to 126 mm and flipped the x axis of
jhu189. ITK also turned NaN voxels into 0 and does not read NIfTI-2. Here:

* **geometry**: nibabel's ``affine``: the sform when ``sform_code > 0``, else the qform when
  ``qform_code > 0``, else the pixel sizes alone. It is converted from RAS to LPS (x and y
  negated) and split into spacing (column norms), direction (unit columns) and origin, so
  ``Volume.affine_lps`` equals ``diag(-1, -1, 1, 1) @ nibabel affine`` exactly (sheared
  affines included). Which one was used is recorded in ``meta["description"]``, e.g.
  ``"NIfTI-1 geometry from sform (code 4: MNI)"``;
  The header's spatial unit (``xyzt_units``) is converted to mm (metres x 1000, microns / 1000; unknown
  taken as mm), as ITK converts it; nibabel leaves the affine in the header's unit;
* **voxels**: stored values, scaled by ``scl_slope``/``scl_inter`` when the header sets them
  (then float32, or float64 for double data), NaN and Inf kept as they are;
* **limits**: the declared size (dimensions x bytes per voxel of the result) is checked
  against :mod:`medanomaly.io.limits` from the 348/540-byte header, before any data is read or
  decompressed;
* **4D**: one volume is read (``volume=N``, the CLI's ``--frame N``: :func:`medanomaly.io.frames.read_frame`), only
  its bytes (nibabel slices the file), the limit checked on that volume; without ``volume`` a 4D image is refused in
  one line saying so;
* **refused** (one line): 5D and higher images with more than one volume (a vector image's components excepted),
  CIFTI-2 (not a volume), complex voxels, a singular affine.

The header's free-text fields (``descrip``, ``aux_file``, intent name) are never copied.

MGH: the same path (nibabel's ``MGHImage``: geometry from its vox2ras matrix, in mm; its fourth dimension, frames,
read one at a time as a NIfTI's volumes; no scaling; MGZ is gzipped and its size checked from the header first).

Example:
    >>> from medanomaly.data.sources import real_data
    >>> read_nifti(real_data("mricron/ch2.nii.gz")).meta["description"]  # doctest: +SKIP
    'NIfTI-1 geometry from sform (code 4: MNI)'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError, raise_if_out_of_memory
from medanomaly.io.assumed_spacing import spacing_assumed_meta
from medanomaly.io.frames import check_volume
from medanomaly.io.limits import check_voxel_bytes
from medanomaly.io.nifti_header import check_extensions, pair_magic
from medanomaly.io.reasons import short_reason
from medanomaly.geometry import is_valid_direction
from medanomaly.types import FLOAT32_MAX, Volume

#: NIfTI xform codes (``sform_code`` / ``qform_code``).
XFORM_NAMES = {0: "unknown", 1: "scanner", 2: "aligned", 3: "Talairach", 4: "MNI", 5: "template"}
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def nifti_geometry_source(header: Any) -> str:
    """Which transform nibabel's ``affine`` comes from: ``"sform (code 4: MNI)"``, ``"qform
    (code 1: scanner)"`` or ``"pixel sizes (no sform or qform)"``."""
    for name in ("sform", "qform"):
        code = int(header[f"{name}_code"])
        if code > 0:
            return f"{name} (code {code}: {XFORM_NAMES.get(code, 'other')})"
    return "pixel sizes (no sform or qform)"


def _check_voxel_offset(image: Any, path: Path) -> None:
    """Refuse a single-file NIfTI whose ``vox_offset`` points inside its header: nibabel read the header's bytes as
    the voxels (values 0..16256 from a 4 x 4 x 4 image), ITK read from byte 348 (two voxels shifted in); the standard
    puts them at byte 352 (NIfTI-2: 544) or later."""
    import nibabel as nib

    if not isinstance(image, nib.Nifti1Image):  # a pair's .img starts its voxels at byte 0
        return
    least = 544 if isinstance(image, nib.Nifti2Image) else 352
    offset = int(getattr(image.dataobj, "offset", least))  # the header's vox_offset, as nibabel reads the voxels
    if offset < least:
        raise InputError(f"vox_offset {offset} points inside the {least - 4}-byte header: its bytes would be read as "
                         f"the voxels (a single-file NIfTI's voxels start at byte {least} or later)", path)


#: File endings of FreeSurfer's MGH format (``.mgz``: gzipped).
MGH_SUFFIXES = (".mgh", ".mgz")


def _kind(path: Path) -> str:
    """``mgh`` or ``nifti``: the format's name in messages and ``meta["source_format"]``."""
    return "mgh" if path.name.lower().endswith(MGH_SUFFIXES) else "nifti"


def _load_mgh(path: Path) -> Any:
    """nibabel's ``MGHImage`` (header parsed, no data read), or InputError."""
    from nibabel.freesurfer.mghformat import MGHImage

    try:
        return MGHImage.from_filename(str(path), mmap=False)
    except KeyError as exc:  # nibabel's lookup of the header's data type code
        raise InputError(f"not a readable mgh image (unknown data type code {exc.args[0]!r})", path) from None
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on damaged headers (and gzip on bad MGZ)
        raise_if_out_of_memory(exc)
        raise InputError(f"not a readable mgh image ({short_reason(exc, path)})", path) from None


#: nibabel's "w2 should be positive, but is -6.2e-01": the qform's quaternion has b^2 + c^2 + d^2 over 1, so it
#: gives no rotation (its first component would be the square root of a negative number).
QUATERNION_REASON = "its qform quaternion is not a rotation: quatern_b^2 + quatern_c^2 + quatern_d^2 is over 1"


def _load(path: Path) -> Any:
    """nibabel's image object (header parsed, no data read), or InputError."""
    import nibabel as nib

    if _kind(path) == "mgh":
        return _load_mgh(path)
    partner = {".hdr": ".img", ".img": ".hdr"}.get(path.suffix.lower())
    if partner and not any(path.with_suffix(s).is_file() for s in (partner, partner.upper())):
        raise InputError(f"one file of a NIfTI pair: its {partner} is not beside it", path)
    if not partner and pair_magic(path):  # nibabel read its header bytes as the voxels, without a word
        raise InputError("the header of a NIfTI pair (magic ni1 / ni2) named as a single-file NIfTI: its voxels are in "
                         "a separate .img; name it .hdr beside its .img", path)  # fmt: skip
    headers = [path.with_suffix(s) for s in (".hdr", ".HDR")] if partner == ".hdr" else [path]
    check_extensions(next((h for h in headers if h.is_file()), path))  # before nibabel reads them into memory
    try:
        image = nib.load(str(path), mmap=False)  # read into memory: no mapping of a file that may change
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on damaged headers
        raise_if_out_of_memory(exc)
        reason = QUATERNION_REASON if "w2 should be positive" in str(exc) else short_reason(exc, path)
        raise InputError(f"not a readable nifti image ({reason})", path) from None
    if not isinstance(image, nib.Nifti1Pair):  # a single file (Nifti1/2Image) or a .hdr + .img pair (SPM's)
        kind = type(image).__name__.removesuffix("Image")
        if "Analyze" in kind:
            raise InputError("ANALYZE 7.5 image (a .hdr without NIfTI magic): its orientation is not defined; convert "
                             "it to NIfTI", path)  # fmt: skip
        reason = "CIFTI-2 file: surface/grayordinate data, not a volume" if kind == "Cifti2" else f"{kind} file"
        raise InputError(f"{reason}: medanomaly reads NIfTI volumes", path)
    return image


#: NIfTI intent code of a vector per voxel (``NIFTI_INTENT_VECTOR``): how ITK, and so ``medanomaly.io.write``, stores
#: a multi-component image (5D, x y z 1 c).
INTENT_VECTOR = 1007
#: Most components a vector NIfTI may hold (a model input's channel limit).
MAX_COMPONENTS = 64


def _image_shape(image: Any, path: Path) -> tuple[tuple[int, int, int], int, int]:
    """:func:`_spatial_shape` of a nibabel image (its shape, and its intent code: a vector image's components)."""
    return _spatial_shape(image.shape, path, int(image.header.get("intent_code", 0)))


def _spatial_shape(shape: tuple[int, ...], path: Path, intent: int = 0) -> tuple[tuple[int, int, int], int, int]:
    """((x, y, z), components, volumes) of a NIfTI shape: the fourth dimension counts volumes (time points, contrasts),
    the dimensions after it must be 1, except the fifth of a vector image (``intent`` :data:`INTENT_VECTOR`, time 1),
    whose components become channels."""
    dims = tuple(int(d) for d in shape) + (1,) * max(0, 3 - len(shape))
    if min(dims) < 1:  # a fourth dimension of 0 read as "truncated data", of -3 as "negative count"
        raise InputError(f"dimensions {list(dims)}: a dimension below 1 (the header declares no voxels)", path)
    components = 1
    if intent == INTENT_VECTOR and len(dims) == 5 and dims[3] == 1:
        components, dims = dims[4], dims[:3]
        if not 1 <= components <= MAX_COMPONENTS:
            raise InputError(f"vector image of {components} components; at most {MAX_COMPONENTS} are read", path)
    extra = int(np.prod(dims[3:])) if len(dims) > 3 else 1
    volumes = dims[3] if len(dims) > 3 else 1
    if extra != volumes:
        raise InputError(f"{len(shape)}D image ({extra} volumes): medanomaly reads 2D/3D images and one volume of a "
                         "4D image", path)  # fmt: skip
    return (dims[0], dims[1], dims[2]), components, volumes


def _scaling(image: Any) -> tuple[float, float] | None:
    """(scl_slope, scl_inter) when they change the values, else None.

    nibabel moves the header's scaling into the data proxy when it loads a file (and reports
    slope 0 or NaN as "no scaling"), so the proxy is where to read it.
    """
    slope = float(getattr(image.dataobj, "slope", 1.0))
    inter = float(getattr(image.dataobj, "inter", 0.0))
    return None if slope == 1.0 and inter == 0.0 else (slope, inter)


def _result_dtype(image: Any) -> np.dtype:
    """dtype of the voxels we return: stored, or float32/float64 when scl_slope/inter apply."""
    stored = np.dtype(image.header.get_data_dtype())
    if stored.kind == "c":
        raise InputError("complex voxels are not supported")
    scaling = _scaling(image)
    if scaling is None:
        return stored.newbyteorder("=") if stored.fields is None else stored
    if stored.itemsize == 8 or (stored.kind in "iu" and _scaled_bound(stored, *scaling) > FLOAT32_MAX):
        return np.dtype(np.float64)  # float32 would overflow: scl_slope 1e38 on int16 gave inf in 60 of 64 voxels
    return np.dtype(np.float32)


def _scaled_bound(stored: np.dtype, slope: float, inter: float) -> float:
    """The largest magnitude an integer type's values reach once scaled: ``max |stored| * |slope| + |inter|``."""
    limits = np.iinfo(stored)
    return max(abs(float(limits.min)), abs(float(limits.max))) * abs(slope) + abs(inter)


def _voxels(image: Any, xyz: tuple[int, int, int], dtype: np.dtype, components: int = 1,
            volume: int | None = None) -> np.ndarray:  # fmt: skip
    """The voxels (of volume ``volume`` of a 4D image) as a C-contiguous (z, y, x[, c]) array: scaled, native byte
    order, NaN kept."""
    if volume is None:
        raw = np.asarray(image.dataobj.get_unscaled())
    else:  # nibabel's proxy reads only the bytes of this volume (its public slicing would scale them its own way)
        raw = np.asarray(image.dataobj._get_unscaled((slice(None),) * 3 + (volume,)))
    if components > 1:  # a vector image (x, y, z, 1, c)
        out = _voxels_scaled(raw.reshape((*xyz, components), order="A"), image, dtype)
        return np.ascontiguousarray(out.transpose(2, 1, 0, 3))
    raw = raw.reshape(xyz, order="A")  # only drops / adds singleton axes: no copy
    if raw.dtype.fields is not None:  # RGB24 / RGBA32 records -> (x, y, z, 3) uint8
        raw = np.stack([raw[name] for name in ("R", "G", "B")], axis=-1)
        return np.ascontiguousarray(np.moveaxis(raw, (0, 1, 2), (2, 1, 0)))
    return np.ascontiguousarray(_voxels_scaled(raw, image, dtype).transpose(2, 1, 0))


def _voxels_scaled(raw: np.ndarray, image: Any, dtype: np.dtype) -> np.ndarray:
    """``raw`` with the header's scaling applied (as ``dtype``), in native byte order."""
    scaling = _scaling(image)
    if scaling is None:
        return raw if raw.dtype.isnative else raw.astype(raw.dtype.newbyteorder("="))
    slope, inter = scaling
    out = raw.astype(dtype)  # keeps the Fortran layout: the caller's transpose is C-contiguous
    if slope != 1.0:
        out *= dtype.type(slope)
    if inter:
        out += dtype.type(inter)
    return out


def split_affine(affine_lps: np.ndarray, path: Path, kind: str = "NIfTI") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spacing, direction, origin) with ``direction @ diag(spacing) == affine[:3, :3]``, or InputError naming the
    ``kind`` of file and its affine."""
    matrix = affine_lps[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    # the Volume's own test of the direction (a looser det of the scaled matrix let a near-singular
    # qform through to a ValueError: found by the reader fuzz test)
    if not np.all(np.isfinite(affine_lps)) or np.any(spacing <= 0) or not is_valid_direction(matrix / spacing):
        raise InputError(f"degenerate {kind} geometry (affine {np.round(affine_lps[:3], 4).tolist()})", path)
    return spacing, matrix / spacing, affine_lps[:3, 3]


#: Millimetres per unit of the header's spatial unit (``xyzt_units``); "unknown" (0) is taken as mm, as by ITK.
MM_PER_UNIT = {"meter": 1000.0, "mm": 1.0, "micron": 0.001, "unknown": 1.0}


def affine_lps_mm(image: Any) -> np.ndarray:
    """nibabel's ``affine`` (any of its images) in LPS millimetres: the header's spatial unit converted (``xyzt_units`` metres or microns:
    nibabel leaves the affine in them, so a lesion of 1 mL in a file stored in metres measured 0.000 mL, one in
    microns a billion times its size; ITK converts them, and so does this reader now)."""
    scale = MM_PER_UNIT.get(_spatial_unit(image.header), 1.0)
    return _RAS_TO_LPS @ np.diag([scale, scale, scale, 1.0]) @ np.asarray(image.affine, dtype=np.float64)


def _units_note(header: Any) -> str:
    """``", metres to mm"`` (or microns) for the description when the header's unit is not millimetres."""
    return {"meter": ", metres to mm", "micron": ", microns to mm"}.get(_spatial_unit(header), "")


def _spatial_unit(header: Any) -> str:
    """The header's spatial unit as nibabel names it: ``meter``, ``mm``, ``micron`` or ``unknown``."""
    return str(header.get_xyzt_units()[0]) if hasattr(header, "get_xyzt_units") else "unknown"


def _header_layout(
    image: Any, path: Path, volume: int | None = None
) -> tuple[tuple[int, int, int], int, np.dtype, int, np.ndarray]:
    """(size x, y, z; components; dtype of the voxels read; bytes per component; LPS affine in mm) from the header
    alone, or InputError naming ``path``: what :func:`nifti_layout` lists and :func:`read_nifti` checks first (a 4D
    image without ``volume``: :func:`medanomaly.io.frames.check_volume`)."""
    try:
        xyz, components, volumes = _image_shape(image, path)
        check_volume(volumes, volume, path, slices=xyz[2])
        dtype = _result_dtype(image)
        affine = affine_lps_mm(image)
    except InputError as exc:
        raise InputError(exc.reason, path) from None
    except Exception as exc:  # noqa: BLE001 - nibabel HeaderDataError and friends
        raise InputError(f"not a readable {_kind(path)} image (invalid header: {short_reason(exc, path)})",
                         path) from None  # fmt: skip
    rgb = dtype.fields is not None  # RGB24 records: three uint8 channels per stored value
    return xyz, 3 if rgb else components, dtype, dtype.itemsize // 3 if rgb else dtype.itemsize, affine


def unstated_pixel_axes(image: Any) -> list[int]:
    """The grid axes (0 = x, 1 = y, 2 = z) of a NIfTI without an sform whose header gives a pixel size (``pixdim``)
    of 0 along more than one voxel: its geometry comes from the pixel sizes, and nibabel takes such a size as 1 mm
    (the reader then marks ``meta["spacing_assumed"]``, as for a DICOM without PixelSpacing). The header is read
    again unchecked: nibabel has already replaced the size on its copy (a NaN size it leaves, and the affine is
    refused as degenerate)."""
    import nibabel as nib

    if "pixdim" not in image.header or int(image.header["sform_code"]) > 0:  # MGH, or the sform gives the geometry
        return []
    header_file = image.file_map.get("header", image.file_map["image"]).filename
    if header_file is None:  # an image made in memory: no raw header to read
        return []
    with nib.openers.ImageOpener(header_file) as fh:
        raw = type(image.header).from_fileobj(fh, check=False)
    dims, sizes = raw["dim"], raw["pixdim"]
    return [axis - 1 for axis in range(1, min(int(dims[0]), 3) + 1) if int(dims[axis]) > 1 and sizes[axis] == 0]


def nifti_layout(path: str | Path) -> tuple[tuple[int, int, int], int, int, tuple[float, float, float]]:
    """(size x, y, z; components; bytes per component; spacing x, y, z mm) of a NIfTI (or MGH) file from its header alone, as
    :func:`read_nifti` would read it (nibabel's geometry: the sform first; an index of an archive lists it so).

    Raises:
        InputError: what :func:`read_nifti` refuses in the header.
    """
    path = Path(path)
    xyz, channels, _, itemsize, affine = _header_layout(_load(path), path)
    spacing, _, _ = split_affine(affine, path)
    return xyz, channels, itemsize, tuple(float(v) for v in spacing)


def nifti_volumes(path: str | Path) -> int:
    """How many volumes a NIfTI or MGH file holds along its fourth dimension (1 for a 3D one), from its header alone.

    Raises:
        InputError: an unreadable header, or one :func:`read_nifti` refuses whatever the volume (5D, CIFTI...).
    """
    path = Path(path)
    return _image_shape(_load(path), path)[2]


def read_nifti(path: str | Path, *, max_voxel_bytes: int | None = None, volume: int | None = None) -> Volume:
    """Read a NIfTI-1, NIfTI-2 or MGH volume with nibabel, geometry as nibabel's ``affine`` (LPS).

    Args:
        path: ``.nii`` or ``.nii.gz`` file, either file of a ``.hdr`` + ``.img`` pair, or ``.mgh`` / ``.mgz``.
        max_voxel_bytes: limit on the voxel data (see :mod:`medanomaly.io.limits`): of the one volume read.
        volume: of a 4D image, the volume to read (0-based); only its bytes are read.

    Returns:
        Volume (z, y, x) (or (z, y, x, 3) for RGB NIfTI); ``meta["description"]`` says which
        transform the geometry came from (and which volume of how many).

    Raises:
        InputError: unreadable or truncated file, CIFTI, several volumes without ``volume`` (or ``volume`` of a 3D
            image, or past the last), complex voxels, degenerate affine, or more voxel data than the limit.
    """
    path = Path(path)
    image = _load(path)
    xyz, channels, dtype, itemsize, affine = _header_layout(image, path, volume)
    components = 1 if dtype.fields is not None else channels  # RGB24: one record per voxel
    check_voxel_bytes((*xyz, channels), itemsize, path, limit=max_voxel_bytes)
    spacing, direction, origin = split_affine(affine, path)
    _check_voxel_offset(image, path)
    try:
        array = _voxels(image, xyz, dtype, components, volume)
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data (EOFError, zlib, OSError)
        raise_if_out_of_memory(exc)
        reason = f"truncated or corrupt data: {short_reason(exc, path)}"
        raise InputError(f"not a readable {_kind(path)} image ({reason})", path) from None
    meta: dict[str, Any] = {
        "source_format": _kind(path),
        "description": _geometry_note(image) + ("" if volume is None else f", volume {volume} of {image.shape[3]}"),
    }
    # a pixel size of 0: nibabel took 1 mm, so those "mm" are voxels
    meta.update(spacing_assumed_meta(direction, unstated_pixel_axes(image)))
    if dtype.fields is not None:
        meta.update(channels=3, photometric="RGB")
    elif components > 1:
        meta.update(channels=components)
    return Volume(array, spacing=tuple(spacing), origin=tuple(origin), direction=direction, meta=meta)


def _geometry_note(image: Any) -> str:
    """Where the geometry came from, for ``meta["description"]``: the NIfTI version and transform, or MGH's vox2ras."""
    import nibabel as nib

    if not isinstance(image, nib.Nifti1Pair):  # MGHImage
        return "FreeSurfer MGH geometry from its vox2ras matrix"
    version = "NIfTI-2" if isinstance(image, nib.Nifti2Image) else "NIfTI-1"
    return f"{version} geometry from {nifti_geometry_source(image.header)}{_units_note(image.header)}"


def write_sheared_nifti(volume: Volume, path: str | Path) -> Path:
    """Write a Volume on a sheared grid (a direction whose columns are not orthogonal) as NIfTI with nibabel, the
    sheared affine as the sform (code 1: scanner), no qform; all-or-nothing (:func:`medanomaly.io.staged.write_staged`).

    Why not SimpleITK, which writes every other NIfTI here: ITK's NIfTI writer coerces such a direction to an
    orthogonal one ("Non-orthogonal direction matrix coerced to orthogonal" on stderr) and the file then holds
    another geometry: a sheared image read, resampled or masked came back rotated, its lesions measured on the wrong
    grid. Readers that take the sform first (nibabel, FSL, this project) get the grid back exactly. Multi-component
    images are stored as ITK stores them (5D x y z 1 c, intent vector).
    """
    import nibabel as nib

    from medanomaly.io.staged import write_staged

    array = np.asarray(volume.array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    data = array.transpose(2, 1, 0) if array.ndim == 3 else array.transpose(2, 1, 0, 3)[:, :, :, None, :]
    affine = _RAS_TO_LPS @ volume.affine_lps  # the flip is its own inverse
    image = nib.Nifti1Image(data, affine)
    image.set_sform(affine, code=1)
    image.set_qform(None, code=0)
    image.header.set_xyzt_units(xyz="mm")
    if array.ndim == 4:
        image.header.set_intent(INTENT_VECTOR)
    return write_staged(Path(path), lambda staged: nib.save(image, staged))


__all__ = ["INTENT_VECTOR", "MAX_COMPONENTS", "MGH_SUFFIXES", "XFORM_NAMES", "affine_lps_mm", "nifti_volumes", "nifti_geometry_source", "nifti_layout", "read_nifti", "split_affine",
           "write_sheared_nifti"]
