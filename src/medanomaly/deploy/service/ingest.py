"""Uploads: limits first, the format from the bytes (never the name), and zips opened safely.

An upload is DICOM files (each with the ``DICM`` preamble), one single-file NIfTI (``n+1``/``n+2``
header, gzipped or not) or NRRD (``NRRD000``) file, or a zip of those. Every file is stored under a
name the service makes (``00001.dcm``): the client's file names, which may carry patient names,
are never used or logged. A zip is checked *before* anything is extracted: member count, no
absolute or ``..`` paths, no symlinks, the declared total size and compression ratio; extraction
then counts the real bytes again (a zip may lie about its sizes).
"""

from __future__ import annotations

import shutil
import stat
import struct
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from medanomaly.io.detached import detached_names

__all__ = ["IngestLimits", "UploadRefused", "check_free_space", "check_zip", "modality_folder", "sniff", "store_modalities",
           "store_upload"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class IngestLimits:
    """Upload limits (bytes are of the request body or of the unzipped content); ``min_free_bytes`` is the free
    space the data folder's disk keeps after an upload (the job's outputs, the job store and the system need it)."""

    max_body_bytes: int = 1 << 30
    max_files: int = 2000
    max_zip_members: int = 5000
    max_unzipped_bytes: int = 2 << 30
    max_zip_ratio: float = 200.0
    min_free_bytes: int = 512 << 20


class UploadRefused(Exception):
    """An upload the service refuses: the HTTP status and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def sniff(head: bytes) -> str | None:
    """The format of a file from its first bytes (at least 352): dicom, nifti, mgh, nrrd, minc, zip, the header of a
    two-file image (par: Philips PAR, afni: AFNI .HEAD; the voxel file of either has no signature) or None.

    Example:
        >>> sniff(b"\\0" * 128 + b"DICM" + b"\\0" * 220), sniff(b"NRRD0004\\n"), sniff(b"hello")
        ('dicom', 'nrrd', None)
        >>> sniff(b"\\x89HDF\\r\\n\\x1a\\n" + bytes(344)), sniff(b"CDF\\x01" + bytes(348))  # MINC-2, MINC-1
        ('minc', 'minc')
        >>> sniff(struct.pack(">7i", 1, 256, 256, 256, 1, 0, 0) + bytes(330))  # FreeSurfer's T1.mgz, inflated
        'mgh'
    """
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"NRRD000"):
        return "nrrd"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(MINC_MAGIC):  # an HDF5 or netCDF file that is no MINC is refused when it is read
        return "minc"
    if head.startswith(b"# === DATA DESCRIPTION FILE"):  # a Philips PAR header (its REC has no signature)
        return "par"
    if head.lstrip(b"\n").startswith(b"type = ") and b"\nname = " in head[:200]:  # an AFNI .HEAD (text attributes)
        return "afni"
    if head.startswith(b"\x1f\x8b"):
        try:  # a gzipped NIfTI: inflate only the header
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 540)
        except zlib.error:
            return None
    if len(head) >= 348 and head[344:348] == b"n+1\x00":  # single-file NIfTI only: a pair's header (ni1 / ni2)
        return "nifti"  # holds no voxels, and stored as image.nii its header bytes were read as the image
    if len(head) >= 8 and head[4:8] == b"n+2\x00":
        return "nifti"
    return "mgh" if _is_mgh_header(head) else None


#: MINC-2 (HDF5) and MINC-1 (netCDF classic or 64-bit offset) file signatures.
MINC_MAGIC = (b"\x89HDF\r\n\x1a\n", b"CDF\x01", b"CDF\x02")

#: FreeSurfer MGH data type codes (uchar, int, float, short).
MGH_TYPES = frozenset({0, 1, 3, 4})


def _is_mgh_header(head: bytes) -> bool:
    """Whether ``head`` starts a FreeSurfer MGH header: version 1, then four positive dimensions and a known type
    (big-endian int32s; MGH has no magic, so every field is checked)."""
    if len(head) < 28:
        return False
    version, *dims, kind = struct.unpack(">6i", head[:24])
    return version == 1 and all(0 < d < 1 << 20 for d in dims) and kind in MGH_TYPES


def check_free_space(folder: Path, upload_bytes: int, limits: IngestLimits) -> None:
    """Check, before an upload of ``upload_bytes`` is stored, that ``folder``'s disk has room for it and the reserve.

    Raises:
        UploadRefused: 507 when storing it would leave less than ``limits.min_free_bytes`` free.
    """
    usage = shutil.disk_usage(folder)
    if usage.total and usage.free < limits.min_free_bytes + upload_bytes:  # total 0: a mount that reports no size
        raise UploadRefused(507, "the server's disk is nearly full: the upload was not stored; retry later")


def _head(fh: BinaryIO) -> bytes:
    data = fh.read(4096)
    fh.seek(0)
    return data


def _copy(src: BinaryIO, dest: Path, budget: list[int], limit_reason: str) -> None:
    with dest.open("wb") as out:
        while chunk := src.read(_CHUNK):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise UploadRefused(413, limit_reason)
            out.write(chunk)


def check_zip(zf: zipfile.ZipFile, limits: IngestLimits) -> list[zipfile.ZipInfo]:
    """The file members of a zip, after every check that needs no extraction.

    Raises:
        UploadRefused: 413 too many members / too large unzipped / compression ratio of a zip bomb;
            400 an absolute or ``..`` path, or a symlink.
    """
    infos = zf.infolist()
    if len(infos) > limits.max_zip_members:
        raise UploadRefused(413, f"zip has {len(infos)} members, more than the limit of {limits.max_zip_members}")
    total = packed = 0
    for info in infos:
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or (parts and ":" in parts[0]) or ".." in parts:
            raise UploadRefused(400, "zip member with an absolute or '..' path refused")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UploadRefused(400, "zip member that is a symbolic link refused")
        total += info.file_size
        packed += info.compress_size
    if total > limits.max_unzipped_bytes:
        raise UploadRefused(413, f"zip unpacks to {total} bytes, more than the limit of {limits.max_unzipped_bytes}")
    if total > (1 << 20) and total > limits.max_zip_ratio * max(packed, 1):
        raise UploadRefused(413, f"zip compression ratio over {limits.max_zip_ratio:.0f}:1 refused (zip bomb)")
    return [i for i in infos if not i.is_dir()]


def _extract_zip(path: Path, dest: Path, limits: IngestLimits, counter: list[int]) -> list[tuple[Path, str]]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise UploadRefused(400, "not a readable zip (truncated or corrupt)") from None
    out: list[tuple[Path, str]] = []
    budget = [limits.max_unzipped_bytes]
    with zf:
        for info in check_zip(zf, limits):
            counter[0] += 1
            target = dest / f"{counter[0]:05d}.part"
            try:
                with zf.open(info) as src:
                    _copy(src, target, budget, "zip unpacks to more than the size limit (zip bomb)")
            except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
                raise UploadRefused(400, f"not a readable zip (truncated or corrupt: {type(exc).__name__})") from None
            with target.open("rb") as fh:
                out.append((target, sniff(_head(fh)) or "unknown"))
    return out


def store_upload(files: list[BinaryIO], dest: Path, limits: IngestLimits) -> tuple[str, int]:
    """Store uploaded files into ``dest`` under service-made names, zips unpacked and checked.

    Args:
        files: open binary files (the multipart parts), read from their start.
        dest: an empty folder.
        limits: the upload limits.

    Returns:
        ``(kind, n)``: ``"dicom"`` (``dest`` is a folder of n DICOM files) or ``"nifti"``/``"mgh"``/``"nrrd"``/
        ``"minc"`` (one file ``dest/image.nii.gz``, ``dest/image.mgz``, ``dest/image.nrrd`` or ``dest/image.mnc``).

    Raises:
        UploadRefused: 415 a file that is none of the accepted formats (or a mix), 400/413 see
            :func:`check_zip`.
    """
    if not files:
        raise UploadRefused(400, "no file in the upload (send multipart field 'files')")
    dest.mkdir(parents=True, exist_ok=True)
    counter = [0]
    found: list[tuple[Path, str]] = []
    budget = [limits.max_body_bytes]
    kinds = [sniff(_head(fh)) for fh in files]
    if None in kinds and not _a_pair(kinds):  # before anything is stored
        raise UploadRefused(415, f"unsupported content: not DICOM (no DICM preamble), NIfTI, MGH, NRRD, MINC or zip "
                                 f"({PAIR_ADVICE})")  # fmt: skip
    for fh, kind in zip(files, kinds, strict=True):
        kind = kind or "unknown"  # the voxel file of a PAR/REC or AFNI pair
        counter[0] += 1
        target = dest / f"{counter[0]:05d}.part"
        _copy(fh, target, budget, "upload larger than the size limit")
        if kind == "zip":
            found.extend(_extract_zip(target, dest, limits, counter))
            target.unlink()
        else:
            found.append((target, kind))
    return _finish(found, dest)


def modality_folder(index: int) -> str:
    """The folder (under the study's ``input``) of a multimodal model's modality number ``index`` (0-based, the
    model's order): a service-made name, never the modality's own (a name from a config or a client)."""
    return f"modality-{index + 1}"


def store_modalities(parts: Mapping[str, list[BinaryIO]], order: Sequence[str], dest: Path,
                     limits: IngestLimits) -> tuple[str, int, dict[str, str]]:  # fmt: skip
    """Store a multimodal upload: each modality's files (one image, a DICOM series or a zip of it) into its own
    folder of ``dest`` (:func:`modality_folder`), each checked as :func:`store_upload` checks an upload.

    Args:
        parts: modality name -> its uploaded files (the modalities sent; one may be missing).
        order: the model's modality names, in its order.
        dest: an empty folder.
        limits: the upload limits (the request body's limit bounds all modalities together).

    Returns:
        ``(kinds joined by "+" in the model's order, number of files, {modality: folder name})``.

    Raises:
        UploadRefused: what :func:`store_upload` refuses, the reason naming the modality.
    """
    kinds, total, folders = [], 0, {}
    for index, name in enumerate(order):
        if name not in parts:
            continue
        folders[name] = modality_folder(index)
        try:
            kind, n = store_upload(parts[name], dest / folders[name], limits)
        except UploadRefused as exc:
            raise UploadRefused(exc.status, f"{name}: {exc.reason}") from None
        kinds.append(kind)
        total += n
    return "+".join(kinds), total, folders


#: The name an uploaded NIfTI or MGH file is stored under: ``[kind][gzipped]`` (:func:`medanomaly.io.read` goes by it).
IMAGE_NAMES = {"nifti": {False: "image.nii", True: "image.nii.gz"}, "mgh": {False: "image.mgh", True: "image.mgz"},
               "minc": {False: "image.mnc"}}
#: The names a two-file image's header and voxel file are stored under, by the header's kind (:func:`sniff`).
PAIR_NAMES = {"par": ("image.PAR", "image.REC"), "afni": ("image+orig.HEAD", "image+orig.BRIK")}
#: Every name an uploaded image file is stored under (a study's input holds one of them, or DICOM files); a pair is
#: found by its header.
STORED_IMAGE_NAMES = (*(name for names in IMAGE_NAMES.values() for name in names.values()), "image.nrrd",
                      *(names[0] for names in PAIR_NAMES.values()))  # fmt: skip
#: What a two-file image's header is called in a refusal, by its kind.
HEADER_NAMES = {"par": "PAR", "afni": "AFNI HEAD"}
#: How a two-file image is sent.
PAIR_ADVICE = "a PAR/REC or AFNI HEAD/BRIK pair is sent as its two files, or a zip of them"


def _a_pair(kinds: list[str | None]) -> bool:
    """Whether the kinds of an upload's files are one two-file image: its header and one file of no known kind."""
    return len(kinds) == 2 and sum(k in PAIR_NAMES for k in kinds) == 1 and sum(k in (None, "unknown") for k in kinds) == 1


def _store_pair(found: list[tuple[Path, str]], dest: Path) -> tuple[str, int]:
    """Store a PAR/REC or AFNI pair under :data:`PAIR_NAMES` (an AFNI BRIK that is gzipped as ``.BRIK.gz``), where
    :func:`medanomaly.io.read` finds the voxel file beside its header."""
    (header, kind), (data, _) = sorted(found, key=lambda item: item[1] not in PAIR_NAMES)
    with data.open("rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    header_name, data_name = PAIR_NAMES[kind]
    header.rename(dest / header_name)
    data.rename(dest / (data_name + (".gz" if gz and kind == "afni" else "")))
    return kind, 2


def _finish(found: list[tuple[Path, str]], dest: Path) -> tuple[str, int]:
    kinds = {k for _, k in found}
    if _a_pair([k for _, k in found]):
        return _store_pair(found, dest)
    if len(found) == 1 and found[0][1] in PAIR_NAMES:
        raise UploadRefused(415, f"a {HEADER_NAMES[found[0][1]]} header without its voxel file ({PAIR_ADVICE})")
    if not found or "unknown" in kinds or "zip" in kinds or kinds & PAIR_NAMES.keys():
        raise UploadRefused(415, "unsupported content: every file (or zip member) must be DICOM, or one "
                                 f"NIfTI/MGH/NRRD/MINC ({PAIR_ADVICE})")  # fmt: skip
    if kinds == {"dicom"}:
        for path, _ in found:
            path.rename(path.with_suffix(".dcm"))
        return "dicom", len(found)
    if len(found) == 1:
        path, kind = found[0]
        with path.open("rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        if kind == "nrrd" and detached_names(path):  # its data would have to be another file of the server's
            raise UploadRefused(415, "NRRD header names a detached data file: send one .nrrd with its data inside")
        name = "image.nrrd" if kind == "nrrd" else IMAGE_NAMES[kind][gz]
        path.rename(dest / name)
        return kind, 1
    raise UploadRefused(415, "send DICOM files of one series, or exactly one NIfTI/MGH/NRRD/MINC file")


def remove_tree(path: Path) -> None:
    """Remove a study folder (ignores a folder already gone)."""
    shutil.rmtree(path, ignore_errors=True)
