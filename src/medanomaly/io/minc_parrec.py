"""MINC (``.mnc``: MINC-1, netCDF; MINC-2, HDF5: the MNI's and BrainWeb's format) and Philips PAR/REC (``.par`` +
``.rec``: the research export of Philips MR scanners), read with nibabel, as :mod:`medanomaly.io.nifti` reads NIfTI.

* **geometry**: nibabel's ``affine`` (MINC: its world axes and step signs; PAR/REC: the scanner's patient axes from
  the angulation and offcentre lines), RAS -> LPS, split into spacing, direction and origin exactly as for NIfTI
  (:func:`medanomaly.io.nifti.affine_lps_mm`, :func:`~medanomaly.io.nifti.split_affine`): one conversion for every
  nibabel format;
* **voxels**: the scaled values nibabel gives (MINC: each slice's ``image-min``/``image-max`` window onto its stored
  range; PAR/REC: the displayed values, ``dv``, each slice with its own rescale slope and intercept), as float32;
* **limits**: the voxel limit is checked on the header's shape (4 bytes a voxel, what is returned) before any voxel is
  read; a PAR/REC's ``.rec`` must lie beside its ``.par`` (and the reverse), and a ``.rec`` shorter than its
  ``.par`` declares is refused (nibabel's ``permit_truncated`` stays off);
* **4D**: a PAR/REC of several dynamics, echoes or image types is read one volume at a time (``volume=N``, the CLI's
  ``--frame N``), as a 4D NIfTI; a 4D MINC (time as its first axis) is refused in one line (convert one volume with
  ``mincreshape``): its axis order is the file's, and a guess would put time on a spatial axis.

Why these two: the MNI's templates and BrainWeb's simulated brains are MINC, and PAR/REC is how many MR research
groups export from a Philips scanner; both were ``unsupported file type``.

Example (nibabel's own test files):
    >>> from pathlib import Path
    >>> import nibabel
    >>> data = Path(nibabel.__file__).parent / "tests" / "data"
    >>> read_minc_parrec(data / "tiny.mnc").meta["source_format"]
    'minc'
    >>> read_minc_parrec(data / "phantom_EPI_asc_CLEAR_2_1.PAR", volume=2).meta["description"]
    'PAR/REC geometry from its angulation and offcentre, volume 2 of 3'
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError, raise_if_out_of_memory
from medanomaly.io.frames import check_volume
from medanomaly.io.limits import check_voxel_bytes
from medanomaly.io.nifti import affine_lps_mm, split_affine
from medanomaly.io.reasons import short_reason
from medanomaly.types import Volume

__all__ = ["MINC_SUFFIXES", "PARREC_SUFFIXES", "minc_parrec_layout", "minc_parrec_volumes", "read_minc_parrec"]

#: File endings of MINC (1 and 2: nibabel tells them apart by their first bytes).
MINC_SUFFIXES = (".mnc",)
#: The two files of a Philips PAR/REC pair (header + voxels), read from either.
PARREC_SUFFIXES = (".par", ".rec")


def kind_of(path: Path) -> str:
    """``minc`` or ``parrec``: the format's name in messages and ``meta["source_format"]``."""
    return "minc" if path.suffix.lower() in MINC_SUFFIXES else "parrec"


def _partner(path: Path) -> Path:
    """A PAR/REC file's other half (``.par`` <-> ``.rec``, in either case), or InputError when it is not beside it."""
    want = ".rec" if path.suffix.lower() == ".par" else ".par"
    for suffix in (want, want.upper()):
        if path.with_suffix(suffix).is_file():
            return path.with_suffix(suffix)
    raise InputError(f"one file of a PAR/REC pair: its {want} is not beside it", path)


def _load(path: Path) -> Any:
    """nibabel's image (header parsed, no voxels read), or InputError."""
    kind = kind_of(path)
    try:
        with warnings.catch_warnings():  # nibabel warns on what it assumes (spacing, sort order): the reader decides
            warnings.simplefilter("ignore")
            if kind == "minc":
                import nibabel as nib

                return nib.load(str(path))
            from nibabel.parrec import PARRECImage

            par = path if path.suffix.lower() == ".par" else _partner(path)
            _partner(par)
            return PARRECImage.from_filename(str(par), permit_truncated=False, scaling="dv")
    except InputError:
        raise
    except ModuleNotFoundError as exc:  # MINC-2 is HDF5: h5py is a dependency, but an install may lack it
        raise InputError(f"not a readable minc image (MINC-2 needs the {exc.name} package)", path) from None
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on damaged headers
        raise_if_out_of_memory(exc)
        raise InputError(f"not a readable {kind} image ({short_reason(exc, path)})", path) from None


def _layout(image: Any, path: Path, volume: int | None) -> tuple[tuple[int, ...], np.ndarray]:
    """(the spatial shape in nibabel's axis order; the LPS affine in mm) from the header alone, the volume checked."""
    shape = tuple(int(d) for d in image.shape)
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise InputError(f"dimensions {list(shape)}: medanomaly reads 3D images and one volume of a 4D one", path)
    if len(shape) == 4 and kind_of(path) == "minc":
        raise InputError(f"4D MINC image ({shape[0]} volumes along its first axis): not read; take one volume out "
                         "(mincreshape -dimrange time=N,0) and read that", path)  # fmt: skip
    check_volume(shape[3] if len(shape) == 4 else 1, volume, path, slices=shape[2])
    try:
        affine = affine_lps_mm(image)
    except Exception as exc:  # noqa: BLE001 - an affine nibabel cannot build from a damaged header
        raise InputError(f"not a readable {kind_of(path)} image (geometry: {short_reason(exc, path)})", path) from None
    return shape[:3], affine


def minc_parrec_layout(path: str | Path) -> tuple[tuple[int, int, int], int, int, tuple[float, float, float]]:
    """(size x, y, z; channels 1; bytes per voxel 4; spacing x, y, z mm) from the header alone, as
    :func:`read_minc_parrec` reads it (an archive's index lists it so).

    Raises:
        InputError: what :func:`read_minc_parrec` refuses in the header (a 4D image read whole, too).
    """
    path = Path(path)
    image = _load(path)
    shape, affine = _layout(image, path, None)
    spacing, _, _ = split_affine(affine, path, kind_of(path))
    return (shape[0], shape[1], shape[2]), 1, 4, (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def minc_parrec_volumes(path: str | Path) -> int:
    """How many volumes a PAR/REC holds along its fourth dimension (1 for a 3D one, and for a MINC), header only."""
    path = Path(path)
    shape = _load(path).shape
    return int(shape[3]) if len(shape) == 4 and kind_of(path) == "parrec" else 1


def read_minc_parrec(path: str | Path, *, max_voxel_bytes: int | None = None, volume: int | None = None) -> Volume:
    """Read a MINC or PAR/REC image (see the module docstring).

    Args:
        path: a ``.mnc`` file, or either file of a ``.par`` + ``.rec`` pair.
        max_voxel_bytes: limit on the voxel data (float32, of the one volume read).
        volume: of a 4D PAR/REC, the volume to read (0-based).

    Returns:
        Volume (z, y, x) float32; ``meta["source_format"]`` ``minc`` or ``parrec`` (PAR/REC: ``modality`` MR).

    Raises:
        InputError: an unreadable, truncated or half-present file, a 4D MINC, a 4D PAR/REC without ``volume`` (or a
            volume past its last), a degenerate affine, or more voxel data than the limit.
    """
    path = Path(path)
    kind = kind_of(path)
    image = _load(path)
    xyz, affine = _layout(image, path, volume)
    check_voxel_bytes(xyz, 4, path, limit=max_voxel_bytes)
    spacing, direction, origin = split_affine(affine, path, kind)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = image.dataobj[..., volume] if volume is not None else image.dataobj[...]
        array = np.asarray(data, dtype=np.float32).reshape(xyz)
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise_if_out_of_memory(exc)
        raise InputError(f"not a readable {kind} image (truncated or corrupt data: {short_reason(exc, path)})",
                         path) from None  # fmt: skip
    meta: dict[str, Any] = {"source_format": kind, "description": _description(kind, image, volume)}
    if kind == "parrec":
        meta["modality"] = "MR"
    return Volume(np.ascontiguousarray(array.transpose(2, 1, 0)), spacing=tuple(spacing), origin=tuple(origin),
                  direction=direction, meta=meta)  # fmt: skip


def _description(kind: str, image: Any, volume: int | None) -> str:
    """Where the geometry came from, and which volume of how many."""
    what = "MINC geometry from its world axes" if kind == "minc" else "PAR/REC geometry from its angulation and offcentre"
    return what + ("" if volume is None else f", volume {volume} of {image.shape[3]}")
