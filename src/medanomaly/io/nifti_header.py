"""Checks on a NIfTI file's raw header bytes, made before nibabel parses it (:mod:`medanomaly.io.nifti`).

* :func:`pair_magic`: whether the file's own magic says "pair" (nibabel reports the class it chose, not the file's).
* :func:`check_extensions`: nibabel reads every header extension whole into memory (``fileobj.read(esize - 8)``), before
  any size of ours can be checked, and an extension's size is the file's word: a 400 KB ``.nii.gz`` of a 4 x 4 x 4
  image declaring a 400 MB extension of zeros took 490 MB of memory to ``info`` (an extension of 2 GiB, or a chain of
  them, would end a service that holds other jobs). The extension chain is walked here as nibabel walks it, reading
  only each extension's 8-byte head and skipping its content in small pieces; extensions larger than
  :data:`MAX_EXTENSION_BYTES` in all, or of a size nibabel would read as "to the end of the file" (under 16 bytes, or
  a single file whose ``vox_offset`` lies before its extensions), are refused in one line.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from medanomaly.errors import InputError

__all__ = ["MAX_EXTENSION_BYTES", "check_extensions", "pair_magic"]

#: Most bytes of header extensions read (AFNI, GIFTI and JSON extensions are kilobytes; CIFTI-2's, megabytes, and
#: CIFTI-2 is refused as not a volume anyway).
MAX_EXTENSION_BYTES = 16 * 2**20
#: Bytes read when skipping an extension's content.
_CHUNK = 2**20


def _open(path: Path) -> BinaryIO:
    import gzip

    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


def _head(path: Path, size: int) -> bytes:
    """The first ``size`` bytes (inflated for ``.gz``); short or empty when the file cannot be read (nibabel says
    why)."""
    import zlib

    try:
        with _open(path) as fh:
            return fh.read(size)
    except (OSError, EOFError, zlib.error):
        return b""


def pair_magic(path: Path) -> bool:
    """Whether the file's own header says "pair" (NIfTI-1 ``ni1`` at byte 344, NIfTI-2 ``ni2`` at byte 4)."""
    head = _head(path, 348)
    return head[344:348] == b"ni1\0" or head[4:8] == b"ni2\0"


def _layout(head: bytes) -> tuple[str, int, float, bool] | None:
    """``(byte order, header size, vox_offset, single file)`` of a NIfTI-1 or -2 header, or None (not NIfTI)."""
    for order in "<>":
        if len(head) >= 4 and struct.unpack(order + "i", head[:4])[0] == 348 and len(head) >= 348:
            magic = head[344:348]
            if magic in (b"n+1\0", b"ni1\0"):
                return order, 348, struct.unpack(order + "f", head[108:112])[0], magic == b"n+1\0"
        if len(head) >= 4 and struct.unpack(order + "i", head[:4])[0] == 540 and len(head) >= 540:
            magic = head[4:8]
            if magic in (b"n+2\0", b"ni2\0"):
                return order, 540, float(struct.unpack(order + "q", head[168:176])[0]), magic == b"n+2\0"
    return None


def check_extensions(path: Path, limit: int = MAX_EXTENSION_BYTES) -> None:
    """Refuse header extensions that nibabel would read into memory past ``limit`` bytes, before it reads them.

    Raises:
        InputError: naming ``path``: extensions over the limit, or one whose size field would make nibabel read to
            the end of the file.
    """
    import zlib

    try:
        with _open(path) as fh:
            head = fh.read(544)
            layout = _layout(head)
            if layout is None or len(head) < layout[1] + 4 or head[layout[1]] == 0:
                return  # not NIfTI (nibabel says why), or no extensions
            order, header, vox_offset, single = layout
            fh.seek(header + 4)
            _walk(fh, order, vox_offset - (header + 4) if single else -1, limit, path)
    except (OSError, EOFError, zlib.error):
        return  # a truncated or corrupt file: nibabel's load says why


def _walk(fh: BinaryIO, order: str, size: float, limit: int, path: Path) -> None:
    """nibabel's extension loop (``Nifti1Extensions.from_fileobj``), reading heads only and counting the bytes."""
    total = 0
    while size >= 16 or size < 0:
        ext = fh.read(8)
        if len(ext) < 8:
            return  # the end (a pair's header) or a truncated extension: nibabel decides
        esize = struct.unpack(order + "i", ext[:4])[0]
        if esize < 16:  # nibabel would read(esize - 8) with a negative count: the whole rest of the file
            raise InputError(f"malformed NIfTI header extension (size {esize}: at least 16 bytes)", path)
        total += esize
        if total > limit:
            raise InputError(f"NIfTI header extensions of more than {limit / 2**20:g} MiB (one declares "
                             f"{esize / 2**20:.4g} MiB): refused before reading them", path)  # fmt: skip
        remaining = esize - 8
        while remaining > 0:
            got = len(fh.read(min(remaining, _CHUNK)))
            if not got:
                return  # truncated: nibabel says so
            remaining -= got
        size -= esize
