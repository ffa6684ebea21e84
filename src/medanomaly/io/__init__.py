"""Medical image I/O: ``read(path) -> Volume`` and ``write(volume, path)``.

Formats are dispatched on the path:

=====================================  ==========================================  ========
input                                  module                                       writes
=====================================  ==========================================  ========
folder of DICOM files (a series)       :mod:`medanomaly.io.dicom_series` (pydicom)  series
one DICOM file (incl. multi-frame)     :mod:`medanomaly.io.dicom` (pydicom)         --
a DICOMDIR                             :mod:`medanomaly.io.dicomdir` (pydicom)      --
``.nii`` ``.nii.gz`` (NIfTI-1 and -2)  :mod:`medanomaly.io.nifti` (nibabel)         yes
``.hdr`` + ``.img`` (NIfTI-1 pair)     :mod:`medanomaly.io.nifti` (nibabel)         --
``.mgh`` ``.mgz`` (FreeSurfer MGH)     :mod:`medanomaly.io.nifti` (nibabel)         --
``.mnc`` (MINC-1 and -2)               :mod:`medanomaly.io.neuro` (nibabel)   --
``.par`` + ``.rec`` (Philips PAR/REC)  :mod:`medanomaly.io.neuro` (nibabel)   --
``.HEAD`` + ``.BRIK[.gz]`` (AFNI)      :mod:`medanomaly.io.neuro` (nibabel)   --
``.nrrd`` ``.nhdr`` ``.mha`` ``.mhd``  :mod:`medanomaly.io.itk` (SimpleITK)         yes
``.png`` ``.jpg`` ``.bmp`` ``.tif``      :mod:`medanomaly.io.png` (SimpleITK)         yes
MedMNIST ``.npz``                      :mod:`medanomaly.io.npz` (NumPy)             --
=====================================  ==========================================  ========

Every reader keeps geometry (spacing, origin, direction, LPS mm) and puts only safe technical
metadata in ``Volume.meta``. Every reader checks the declared (and, for deflated DICOM, the
decompressed) size against one limit before allocating (:mod:`medanomaly.io.limits`: 1 GiB of
voxel data by default, ``max_voxel_bytes=`` or ``$MEDANOMALY_MAX_VOXEL_BYTES``). Every failure
is one :class:`~medanomaly.errors.InputError` line naming the file and the reason. See
``docs/io.md``.

Example:
    >>> from medanomaly.io import read
    >>> from medanomaly.data.sources import real_data
    >>> read(real_data("pydicom/CT_small.dcm")).meta["units"]  # doctest: +SKIP
    'HU'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medanomaly.errors import InputError, about_file
from medanomaly.types import Volume

__all__ = ["read", "read_mask", "write", "check_writable", "count_volumes", "detect_format"]


#: The two files of a NIfTI-1 pair (header + voxels, as SPM writes them), read as one image from either.
NIFTI_PAIR_SUFFIXES = (".hdr", ".img")


def _has_dicm_magic(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def detect_format(path: str | Path) -> str:
    """The format ``read`` would use: dicom-folder, dicom, nifti, mgh, minc, parrec, afni, nrrd, metaimage, png..., npz.

    Raises:
        InputError: missing path or a file of no known format.
    """
    from medanomaly.io.itk import itk_format
    from medanomaly.io.neuro import neuro_kind
    from medanomaly.io.nifti import MGH_SUFFIXES
    from medanomaly.io.png import PICTURE_SUFFIXES

    path = Path(path).expanduser()
    if not path.exists():
        raise InputError("no such file or folder", path)
    if path.is_dir():
        return "dicom-folder"
    if not path.is_file():  # /dev/zero (endless), a named pipe (a read waits for a writer), a socket
        raise InputError("not a regular file (a device, a named pipe or a socket)", path)
    if path.stat().st_size == 0:
        raise InputError("empty file", path)
    fmt = itk_format(path)
    if fmt:
        return fmt
    suffix = path.suffix.lower()
    if suffix in PICTURE_SUFFIXES:
        return PICTURE_SUFFIXES[suffix]
    if suffix == ".npz":
        return "npz"
    if suffix in MGH_SUFFIXES:  # FreeSurfer's T1.mgz, brain.mgz, aseg.mgz
        return "mgh"
    if neuro_kind(path):  # MINC (the MNI's templates), PAR/REC (a Philips scanner's export), AFNI
        return str(neuro_kind(path))
    if suffix in NIFTI_PAIR_SUFFIXES:  # SPM's NIfTI-1 pair (or ANALYZE 7.5, which nibabel tells apart)
        return "nifti"
    if suffix in (".dcm", ".dicom", ".ima", "") or _has_dicm_magic(path):
        return "dicom"
    raise InputError(f"unsupported file type '{suffix}' (DICOM, NIfTI (.nii, .nii.gz, .hdr/.img), MGH/MGZ, MINC, "
                     "PAR/REC, AFNI, NRRD, MHA, PNG/JPEG, npz)", path)  # fmt: skip


#: The format-specific options :func:`read` takes.
READ_OPTIONS = frozenset({"split", "volume"})


def read(
    path: str | Path, series_uid: str | None = None, *, max_voxel_bytes: int | None = None, **options: Any
) -> Volume:
    """Read a medical image into a :class:`Volume` with its geometry.

    Args:
        path: a DICOM series folder, a DICOM file or DICOMDIR, NIfTI, FreeSurfer MGH/MGZ, MINC, PAR/REC, NRRD,
            MetaImage, PNG/JPEG or MedMNIST ``.npz``.
        series_uid: for a folder or DICOMDIR holding several series, the SeriesInstanceUID to
            read; for a DICOM file, checked against the file's.
        max_voxel_bytes: refuse images with more voxel data than this (bytes), checked from the
            header before allocating; default ``$MEDANOMALY_MAX_VOXEL_BYTES``, else 1 GiB.
        **options: format-specific options: ``split`` for ``.npz`` ("train", "val", "test"); ``volume`` (0-based) for
            a 4D NIfTI, MGH, MINC, PAR/REC, AFNI, NRRD or MetaImage, read alone
            (:func:`medanomaly.io.frames.read_frame`).

    Returns:
        Volume (z, y, x) or (z, y, x, 3); CT in HU; spacing/origin in mm (LPS); NaN kept.

    Raises:
        InputError: the path is missing, empty, truncated, of unknown format, over the voxel
            limit, or (folders) holds several series, inconsistent slice gaps or no readable
            image, a 4D image without ``volume`` (or ``volume`` on a 3D one), or the memory the process may take
            ran out while decoding it. The message is one line naming the file and the reason.
    """
    unknown = sorted(set(options) - READ_OPTIONS)
    if unknown:  # a misspelt option (``frame=`` for ``volume=``) was ignored: the whole 4D image, or its refusal
        raise TypeError(f"read() got unknown option(s) {', '.join(unknown)}: it takes {', '.join(sorted(READ_OPTIONS))}")
    path = Path(path).expanduser()
    with about_file(path):
        return _read(path, series_uid, max_voxel_bytes, options)


def _read(path: Path, series_uid: str | None, max_voxel_bytes: int | None, options: dict[str, Any]) -> Volume:
    """:func:`read`'s work, by format."""
    from medanomaly.io.limits import max_voxel_bytes as resolve_limit

    fmt = detect_format(path)
    limit = resolve_limit(max_voxel_bytes)
    if fmt == "dicom-folder":
        from medanomaly.io.dicom_series import read_dicom_folder

        return read_dicom_folder(path, series_uid=series_uid, max_voxel_bytes=limit)
    if fmt == "dicom":
        from medanomaly.io.dicom import read_dicom_file

        vol = read_dicom_file(path, series_uid=series_uid, max_voxel_bytes=limit)
        found = vol.meta.get("series_uid")
        if series_uid is not None and found != series_uid:
            raise InputError(f"file belongs to series {found}, not {series_uid}", path)
        return vol
    if series_uid is not None:  # a NIfTI, NRRD, PNG or npz holds one image: asking for a series was ignored
        raise InputError(f"a series (SeriesInstanceUID) is chosen in a DICOM folder or file, not in a {fmt} image",
                         path)  # fmt: skip
    if fmt == "npz":
        from medanomaly.io.npz import read_npz

        return read_npz(path, split=options.get("split"), max_voxel_bytes=limit)
    if fmt in ("nifti", "mgh"):
        from medanomaly.io.nifti import read_nifti

        return read_nifti(path, max_voxel_bytes=limit, volume=options.get("volume"))
    if fmt in ("minc", "parrec", "afni"):
        from medanomaly.io.neuro import read_neuro

        return read_neuro(path, max_voxel_bytes=limit, volume=options.get("volume"))
    if fmt in ("nrrd", "metaimage"):
        from medanomaly.io.itk import read_itk

        return read_itk(path, max_voxel_bytes=limit, volume=options.get("volume"))
    from medanomaly.io.png import read_picture

    return read_picture(path, max_voxel_bytes=limit)


def count_volumes(path: str | Path) -> int:
    """How many volumes a file holds along a fourth dimension, from its header alone: a 4D NIfTI, MGH, MINC, PAR/REC,
    AFNI, NRRD or MetaImage's count (:func:`medanomaly.io.frames.read_frame` reads one), 1 for every other image.

    Raises:
        InputError: a missing file, or a header that cannot be read.
    """
    path = Path(path).expanduser()
    fmt = detect_format(path)
    if fmt in ("nifti", "mgh"):
        from medanomaly.io.nifti import nifti_volumes

        return nifti_volumes(path)
    if fmt in ("minc", "parrec", "afni"):
        from medanomaly.io.neuro import neuro_volumes

        return neuro_volumes(path)
    if fmt in ("nrrd", "metaimage"):
        from medanomaly.io.itk import itk_volumes

        return itk_volumes(path)
    return 1


def check_writable(path: str | Path) -> Path:
    """Raise :class:`InputError` now if :func:`write` could not write ``path``'s format.

    Commands call it before a long computation, so a typo in the output name, or a name longer than its folder
    takes (:func:`medanomaly.io.limits.check_name_fits`), fails at once.

    Example:
        >>> check_writable("mask.nii.gz").name
        'mask.nii.gz'
    """
    from medanomaly.io.itk import itk_format, itk_path
    from medanomaly.io.limits import check_name_fits
    from medanomaly.io.png import PICTURE_SUFFIXES

    raw = str(path)
    path = Path(path).expanduser()
    check_name_fits(path)
    if itk_format(path) or path.suffix.lower() in PICTURE_SUFFIXES:
        itk_path(path)  # a name ITK cannot take (not UTF-8), before the work
        return path
    if raw.endswith(("/", "\\")) or not path.suffix or path.is_dir():
        return path
    raise InputError(f"cannot write '{path.suffix}' (use .nii.gz, .nrrd, .mha, .png, or a folder for DICOM)", path)


def read_mask(path: str | Path, image: Volume, label: int = 0, frame: int | None = None) -> Volume:
    """Read a mask drawn on ``image`` (a lesion mask, an ROI), as :func:`read` does; a DICOM RT Structure Set's
    contours are filled on the image's grid (:func:`medanomaly.io.rtstruct.structure_set_mask`: every ROI, or ROI
    Number ``label``).

    ``frame`` (the image's ``--frame``): a 4D mask gives that volume; any other mask is read whole (a cine's is cut to
    the frame by :func:`medanomaly.io.frames.frame_of_mask`).

    Raises:
        InputError: what :func:`read` refuses, a DICOM mask (a SEG, a series, a structure set) in another Frame of
            Reference than a DICOM image's, or a picture turned by another EXIF orientation than the image's (an
            image stored mirrored or upside down with its orientation tag, and a mask saved without one: each is read
            upright as a viewer shows it, so which way the mask was drawn is unknown; a 180-degree turn had passed
            every grid check and measured the wrong region).
    """
    path = Path(path).expanduser()
    if detect_format(path) == "dicom":
        from medanomaly.io.rtstruct import load_structure_set, structure_set_mask

        with about_file(path):
            contours = load_structure_set(path)
        if contours is not None:
            return structure_set_mask(contours, path, image, label)
    four_d = frame is not None and count_volumes(path) > 1  # 1 for every format without a fourth dimension
    mask = read(path, volume=frame) if four_d else read(path)  # a 4D mask: the volume of the image's --frame
    frames = (image.meta.get("frame_of_reference_uid"), mask.meta.get("frame_of_reference_uid"))
    if all(frames) and frames[0] != frames[1]:  # both DICOM: a SEG or a mask series of another patient or session
        raise InputError("the mask is in another frame of reference than the image (its Frame of Reference UID is "
                         "not the image's): its coordinates are not this image's", path)  # fmt: skip
    turns = (int(image.meta.get("exif_orientation", 1)), int(mask.meta.get("exif_orientation", 1)))
    if turns[0] != turns[1]:
        raise InputError(f"the image is turned by EXIF orientation {turns[0]} and the mask by {turns[1]} (1: as "
                         "stored): which way the mask was drawn is unknown; save both with one orientation", path)
    return mask


def write(volume: Volume, path: str | Path, **options: Any) -> Path:
    """Write a Volume; the format follows the extension.

    ``.nii``/``.nii.gz``/``.nrrd``/``.mha`` keep the full geometry; ``.png``/``.jpg`` write one
    slice (options ``window=(center, width)``, ``slice_index``); a path without suffix or
    ending in ``/`` writes a DICOM series folder (options of
    :func:`medanomaly.io.dicom_writer.write_dicom_series`).

    Returns:
        The written file (or folder).
    """
    from medanomaly.io.itk import itk_format
    from medanomaly.io.limits import check_name_fits
    from medanomaly.io.png import PICTURE_SUFFIXES

    raw = str(path)
    path = Path(path).expanduser()
    check_name_fits(path)
    if itk_format(path):
        from medanomaly.io.itk import write_itk

        return write_itk(volume, path, **options)
    if path.suffix.lower() in PICTURE_SUFFIXES:
        from medanomaly.io.png import write_picture

        return write_picture(volume, path, **options)
    if raw.endswith(("/", "\\")) or not path.suffix or path.is_dir():
        from medanomaly.io.dicom_writer import write_dicom_series

        write_dicom_series(volume, path, **options)
        return path
    raise InputError(f"cannot write '{path.suffix}' (use .nii.gz, .nrrd, .mha, .png, or a folder for DICOM)", path)
