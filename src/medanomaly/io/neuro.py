"""The neuroimaging research formats, read with nibabel as :mod:`medanomaly.io.nifti` reads NIfTI: MINC (``.mnc``:
MINC-1, netCDF; MINC-2, HDF5: the MNI's and BrainWeb's format), Philips PAR/REC (``.par`` + ``.rec``: the research
export of Philips MR scanners) and AFNI (``+orig.HEAD`` + ``+orig.BRIK`` or ``.BRIK.gz``: the NIMH's AFNI).

* **geometry**: nibabel's ``affine`` (MINC: its world axes and step signs; PAR/REC: the scanner's patient axes from
  the angulation and offcentre lines; AFNI: its origin, voxel steps and orientation code, ``ORIGIN``, ``DELTA``,
  ``ORIENT_SPECIFIC``), RAS -> LPS, split into spacing, direction and origin exactly as for NIfTI
  (:func:`medanomaly.io.nifti.affine_lps_mm`, :func:`~medanomaly.io.nifti.split_affine`): one conversion for every
  nibabel format;
* **voxels**: the scaled values nibabel gives (MINC: each slice's ``image-min``/``image-max`` window onto its stored
  range; PAR/REC: the displayed values, ``dv``, each slice with its own rescale slope and intercept; AFNI: each
  sub-brick times its ``BRICK_FLOAT_FACS`` factor), as float32;
* **limits**: the voxel limit is checked on the header's shape (4 bytes a voxel, what is returned) before any voxel is
  read; a PAR/REC's ``.rec`` must lie beside its ``.par`` (and the reverse), an AFNI ``.BRIK`` (or ``.BRIK.gz``)
  beside its ``.HEAD``, and voxels shorter than the header declares are refused (nibabel's ``permit_truncated``
  stays off); a text header (``.par``, ``.HEAD``) over :data:`MAX_TEXT_HEADER_BYTES` is refused before it is parsed;
* **4D**: a PAR/REC of several dynamics, echoes or image types, or an AFNI dataset of several sub-bricks (a time
  series), is read one volume at a time (``volume=N``, the CLI's ``--frame N``), as a 4D NIfTI (an AFNI dataset of one
  sub-brick is 3D); so is a 4D MINC whose dimensions, by their names in the file, are one non-spatial dimension
  (``time``) first and ``xspace`` / ``yspace`` / ``zspace`` after it (nibabel's affine covers those three). Any other
  4D MINC (a vector dimension, time not first, names nibabel does not give) is refused in one line: its axis order is
  the file's, and a guess would put time on a spatial axis.

Why these: the MNI's templates and BrainWeb's simulated brains are MINC, PAR/REC is how many MR research groups export
from a Philips scanner, and AFNI's datasets are many a brain MRI study's working format; all were
``unsupported file type``.

Example (nibabel's own test files):
    >>> from pathlib import Path
    >>> import nibabel
    >>> data = Path(nibabel.__file__).parent / "tests" / "data"
    >>> read_neuro(data / "tiny.mnc").meta["source_format"]
    'minc'
    >>> read_neuro(data / "phantom_EPI_asc_CLEAR_2_1.PAR", volume=2).meta["description"]
    'PAR/REC geometry from its angulation and offcentre, volume 2 of 3'
    >>> read_neuro(data / "scaled+tlrc.HEAD").shape  # one sub-brick: 3D
    (43, 54, 47)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError, raise_if_out_of_memory
from medanomaly.io.frames import check_volume
from medanomaly.io.limits import check_voxel_bytes
from medanomaly.io.nifti import affine_lps_mm, split_affine
from medanomaly.io.reasons import short_reason
from medanomaly.types import Volume

__all__ = ["AFNI_SUFFIXES", "MINC_SUFFIXES", "NEURO_KINDS", "PARREC_SUFFIXES", "afni_files", "neuro_kind", "neuro_layout",
           "neuro_volumes", "read_neuro"]

#: File endings of MINC (1 and 2: nibabel tells them apart by their first bytes).
MINC_SUFFIXES = (".mnc",)
#: The two files of a Philips PAR/REC pair (header + voxels), read from either.
PARREC_SUFFIXES = (".par", ".rec")
#: The files of an AFNI dataset (header + voxels, the voxels gzipped or not), read from either.
AFNI_SUFFIXES = (".head", ".brik", ".brik.gz")
#: The formats of this module, by their name in messages and ``meta["source_format"]``.
NEURO_KINDS = ("minc", "parrec", "afni")
#: Largest text header (a PAR, an AFNI HEAD) parsed, bytes: a scanner's is some kilobytes; nibabel reads it whole.
MAX_TEXT_HEADER_BYTES = 16 * 2**20


def neuro_kind(path: str | Path) -> str | None:
    """``minc``, ``parrec`` or ``afni`` by the file's name, or None for another file.

    Example:
        >>> neuro_kind("anat+orig.BRIK.gz"), neuro_kind("T1.PAR"), neuro_kind("brain.nii")
        ('afni', 'parrec', None)
    """
    name = Path(path).name.lower()
    for kind, suffixes in zip(NEURO_KINDS, (MINC_SUFFIXES, PARREC_SUFFIXES, AFNI_SUFFIXES), strict=True):
        if name.endswith(suffixes):
            return kind
    return None


def kind_of(path: Path) -> str:
    """The format of a file this module reads (:data:`NEURO_KINDS`)."""
    return neuro_kind(path) or "minc"


def _partner(path: Path) -> Path:
    """A PAR/REC file's other half (``.par`` <-> ``.rec``, in either case), or InputError when it is not beside it."""
    want = ".rec" if path.suffix.lower() == ".par" else ".par"
    for suffix in (want, want.upper()):
        if path.with_suffix(suffix).is_file():
            return path.with_suffix(suffix)
    raise InputError(f"one file of a PAR/REC pair: its {want} is not beside it", path)


def afni_files(path: Path) -> tuple[Path, Path]:
    """(HEAD, BRIK or BRIK.gz) of the AFNI dataset ``path`` is a file of, or InputError when one is not beside it."""
    name = path.name
    stem = name[: -len(".brik.gz")] if name.lower().endswith(".brik.gz") else name[: -len(path.suffix)]
    found = {}
    for want in (".HEAD", ".BRIK", ".BRIK.gz"):
        for candidate in (path.with_name(stem + want), path.with_name(stem + want.lower())):
            if candidate.is_file():
                found.setdefault(want.split(".")[1].lower(), candidate)
    if "head" not in found or "brik" not in found:
        missing = ".HEAD" if "head" not in found else ".BRIK (or .BRIK.gz)"
        raise InputError(f"one file of an AFNI dataset: its {missing} is not beside it", path)
    return found["head"], found["brik"]


def _check_text_header(path: Path) -> None:
    """A text header larger than :data:`MAX_TEXT_HEADER_BYTES` refused before nibabel reads it whole."""
    size = path.stat().st_size
    if size > MAX_TEXT_HEADER_BYTES:
        raise InputError(f"a {size / 2**20:,.0f} MiB header: more than the {MAX_TEXT_HEADER_BYTES // 2**20} MiB a "
                         "scanner's text header could be; not parsed", path)  # fmt: skip


def _open(path: Path, kind: str) -> Any:
    """nibabel's image of a file of ``kind`` (its other file found beside it), header parsed, no voxels read."""
    import nibabel as nib

    if kind == "minc":
        return nib.load(str(path))
    if kind == "afni":
        from nibabel.brikhead import AFNIImage

        head, brik = afni_files(path)
        _check_text_header(head)
        return AFNIImage.from_file_map({"header": nib.FileHolder(str(head)), "image": nib.FileHolder(str(brik))})
    from nibabel.parrec import PARRECImage

    par = path if path.suffix.lower() == ".par" else _partner(path)
    _partner(par)
    _check_text_header(par)
    return PARRECImage.from_filename(str(par), permit_truncated=False, scaling="dv")


def _load(path: Path) -> Any:
    """nibabel's image (header parsed, no voxels read), or InputError."""
    kind = kind_of(path)
    try:
        with warnings.catch_warnings():  # nibabel warns on what it assumes (spacing, sort order): the reader decides
            warnings.simplefilter("ignore")
            return _open(path, kind)
    except InputError:
        raise
    except ModuleNotFoundError as exc:  # MINC-2 is HDF5: h5py is a dependency, but an install may lack it
        raise InputError(f"not a readable minc image (MINC-2 needs the {exc.name} package)", path) from None
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on damaged headers
        raise_if_out_of_memory(exc)
        raise InputError(f"not a readable {kind} image ({short_reason(exc, path)})", path) from None


#: MINC's names of its spatial dimensions.
MINC_SPACE = ("xspace", "yspace", "zspace")


@dataclass(frozen=True)
class _Layout:
    """What the header says: the spatial shape in nibabel's axis order, the LPS affine (mm), and for a 4D image the
    axis that holds its volumes and how many there are."""

    xyz: tuple[int, int, int]
    affine: np.ndarray
    volume_axis: int | None = None
    volumes: int = 1


def _volume_axis(image: Any, shape: tuple[int, ...], path: Path) -> int | None:
    """The axis of a 4D image's volumes (None for a 3D one): the last for PAR/REC and AFNI; for MINC the first, when
    the file names it as no spatial dimension and the other three as ``xspace`` / ``yspace`` / ``zspace``."""
    if len(shape) != 4:
        return None
    if kind_of(path) != "minc":
        return 3
    names = tuple(str(n) for n in getattr(getattr(image.dataobj, "minc_file", None), "_dim_names", None) or ())
    if len(names) == 4 and names[0] not in MINC_SPACE and sorted(names[1:]) == list(MINC_SPACE):
        return 0
    raise InputError(f"4D MINC image (dimensions {', '.join(names) or shape}): medanomaly reads one volume of a MINC "
                     "whose first dimension is time and the other three space; take one volume out (mincreshape "
                     "-dimrange time=N,0) and read that", path)  # fmt: skip


def _layout(image: Any, path: Path, volume: int | None) -> _Layout:
    """The header's :class:`_Layout`, without reading a voxel, the volume checked against it."""
    shape = tuple(int(d) for d in image.shape)
    if len(shape) == 4 and shape[3] == 1 and kind_of(path) == "afni":  # AFNI's one sub-brick: a 3D image
        shape = shape[:3]
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise InputError(f"dimensions {list(shape)}: medanomaly reads 3D images and one volume of a 4D one", path)
    axis = _volume_axis(image, shape, path)
    xyz = tuple(d for i, d in enumerate(shape) if i != axis)
    volumes = 1 if axis is None else shape[axis]
    check_volume(volumes, volume, path, slices=xyz[2])
    try:
        affine = affine_lps_mm(image)
    except Exception as exc:  # noqa: BLE001 - an affine nibabel cannot build from a damaged header
        raise InputError(f"not a readable {kind_of(path)} image (geometry: {short_reason(exc, path)})", path) from None
    return _Layout((xyz[0], xyz[1], xyz[2]), affine, axis, volumes)


def neuro_layout(path: str | Path) -> tuple[tuple[int, int, int], int, int, tuple[float, float, float]]:
    """(size x, y, z; channels 1; bytes per voxel 4; spacing x, y, z mm) from the header alone, as
    :func:`read_neuro` reads it (an archive's index lists it so).

    Raises:
        InputError: what :func:`read_neuro` refuses in the header (a 4D image read whole, too).
    """
    path = Path(path)
    layout = _layout(_load(path), path, None)
    spacing, _, _ = split_affine(layout.affine, path, kind_of(path))
    return layout.xyz, 1, 4, (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def neuro_volumes(path: str | Path) -> int:
    """How many volumes a PAR/REC, an AFNI dataset or a MINC holds along its fourth dimension (1 for a 3D one), header
    only.

    Raises:
        InputError: a 4D MINC whose volumes are not its first dimension, by name (:func:`read_neuro` refuses it too).
    """
    path = Path(path)
    image = _load(path)
    shape = tuple(int(d) for d in image.shape)
    axis = _volume_axis(image, shape, path)
    return 1 if axis is None else shape[axis]


def read_neuro(path: str | Path, *, max_voxel_bytes: int | None = None, volume: int | None = None) -> Volume:
    """Read a MINC or PAR/REC image (see the module docstring).

    Args:
        path: a ``.mnc`` file, either file of a ``.par`` + ``.rec`` pair, or of an AFNI ``.HEAD`` + ``.BRIK`` pair.
        max_voxel_bytes: limit on the voxel data (float32, of the one volume read).
        volume: of a 4D PAR/REC, AFNI dataset or MINC, the volume to read (0-based).

    Returns:
        Volume (z, y, x) float32; ``meta["source_format"]`` ``minc``, ``parrec`` or ``afni`` (PAR/REC: ``modality``
        MR).

    Raises:
        InputError: an unreadable, truncated or half-present file, a 4D image without ``volume`` (or a volume past
            its last), a 4D MINC whose first dimension is not its volumes', a degenerate affine, or more voxel data
            than the limit.
    """
    path = Path(path)
    kind = kind_of(path)
    image = _load(path)
    layout = _layout(image, path, volume)
    check_voxel_bytes(layout.xyz, 4, path, limit=max_voxel_bytes)
    spacing, direction, origin = split_affine(layout.affine, path, kind)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = _voxels_float32(image, layout, volume)
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise_if_out_of_memory(exc)
        raise InputError(f"not a readable {kind} image (truncated or corrupt data: {short_reason(exc, path)})",
                         path) from None  # fmt: skip
    meta: dict[str, Any] = {"source_format": kind, "description": _description(kind, volume, layout.volumes)}
    if kind == "parrec":
        meta["modality"] = "MR"
    return Volume(np.ascontiguousarray(array.transpose(2, 1, 0)), spacing=tuple(spacing), origin=tuple(origin),
                  direction=direction, meta=meta)  # fmt: skip


#: Voxels read per chunk: nibabel gives MINC (and scaled PAR/REC, AFNI) data as float64, so a whole volume read at once
#: took twice the float32 volume the limit counts, then the float32 copy beside it.
CHUNK_VOXELS = 1 << 22


def _voxels_float32(image: Any, layout: _Layout, volume: int | None) -> np.ndarray:
    """The voxels (x, y, z) of one volume as float32, read a few slices at a time along z (at most
    :data:`CHUNK_VOXELS` of nibabel's float64 at once beside the float32 result)."""
    xyz = layout.xyz
    out = np.empty(xyz, np.float32)  # the image is 3D, or 4D read one volume (:func:`_layout`)
    step = max(1, CHUNK_VOXELS // max(1, xyz[0] * xyz[1]))
    for k in range(0, xyz[2], step):
        index: list[Any] = [slice(None), slice(None), slice(k, k + step)]
        if volume is not None and layout.volume_axis is not None:
            index.insert(layout.volume_axis, volume)
        out[:, :, k : k + step] = np.asarray(image.dataobj[tuple(index)], np.float32).reshape(xyz[0], xyz[1], -1)
    return out


def _description(kind: str, volume: int | None, volumes: int) -> str:
    """Where the geometry came from, and which volume of how many."""
    what = {"minc": "MINC geometry from its world axes", "parrec": "PAR/REC geometry from its angulation and offcentre",
            "afni": "AFNI geometry from its origin, steps and orientation code"}[kind]
    return what + ("" if volume is None else f", volume {volume} of {volumes}")
