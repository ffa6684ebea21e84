"""Resource limits of the readers, checked before any large allocation.

Every reader asks this module before it decodes: the *declared* size of the voxel data (from
the header: rows x columns x frames x bytes, NIfTI/NRRD dimensions x data type) and, for
compressed containers whose header cannot be trusted (deflated DICOM), the *decompressed* size,
measured by streaming the data through zlib without keeping it. A file over the limit is
refused with one :class:`~medanomaly.errors.InputError` before the big buffer exists, so a
1 MB "deflate bomb" holding 1 GiB of pixels costs a few MB to refuse, not gigabytes.

The limit is, in order of precedence: the ``max_voxel_bytes`` option of
:func:`medanomaly.io.read`, the environment variable ``MEDANOMALY_MAX_VOXEL_BYTES`` (bytes; the
suffixes K, M, G, T in powers of 1024 are accepted, e.g. ``4G``), else
:data:`DEFAULT_MAX_VOXEL_BYTES` (1 GiB).

Example:
    >>> check_voxel_bytes((2, 512, 512), 2, "ct.dcm") == 2 * 512 * 512 * 2
    True
    >>> format_bytes(3 * 1024**3)
    '3 GiB'
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from medanomaly.errors import InputError
from medanomaly.io.memory import available_memory_bytes

#: Default limit on the voxel data one read may produce (bytes): 1 GiB.
DEFAULT_MAX_VOXEL_BYTES = 1 << 30
#: Environment variable overriding the default.
ENV_VAR = "MEDANOMALY_MAX_VOXEL_BYTES"
#: Allowance on top of the limit for headers and non-pixel elements of a DICOM file (bytes).
HEADER_ALLOWANCE = 16 << 20
#: Deflated data is inflated in chunks of this size while measuring (bytes).
_CHUNK = 1 << 20
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _parse_bytes(text: str) -> int:
    """``"4G"`` -> 4 GiB, ``"1000"`` -> 1000; ValueError for anything else."""
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = raw[-1:] if raw[-1:] in _UNITS else ""
    value = float(raw[: len(raw) - len(unit)] if unit else raw)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(text)
    return int(value * _UNITS[unit])


def max_voxel_bytes(override: int | None = None) -> int:
    """The limit in bytes: ``override``, else ``$MEDANOMALY_MAX_VOXEL_BYTES``, else 1 GiB.

    Raises:
        InputError: the override or the environment variable is not a positive size.
    """
    if override is not None:
        if isinstance(override, bool) or not isinstance(override, int) or override <= 0:
            raise InputError(f"max_voxel_bytes must be a positive number of bytes, got {override!r}")
        return override
    env = os.environ.get(ENV_VAR, "").strip()
    if not env:
        return DEFAULT_MAX_VOXEL_BYTES
    try:
        return _parse_bytes(env)
    except (ValueError, IndexError):
        raise InputError(f"{ENV_VAR}={env!r} is not a size in bytes (e.g. 2000000000 or 4G)") from None


def format_bytes(n: float) -> str:
    """Human size in powers of 1024: ``'1.5 GiB'``, ``'12 MiB'``, ``'800 B'``."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{int(n)} B"


def memory_shortfall(need: int, share: float, available: int | None = None) -> int | None:
    """The memory available (bytes; default :func:`medanomaly.io.memory.available_memory_bytes`: the system's, a
    container's limit, ``ulimit -v``) when work that needs ``need`` bytes would
    take more than ``share`` of it, for the caller to refuse the work in its own words; None when it fits or when the
    available memory cannot be read."""
    available = available_memory_bytes() if available is None else available
    return available if available is not None and need > share * available else None


def _limit_hint(limit: int) -> str:
    return f"the limit of {format_bytes(limit)} (raise it with {ENV_VAR} or max_voxel_bytes=)"


def check_voxel_bytes(
    shape: Sequence[int], itemsize: int, path: str | Path, *, limit: int | None = None, what: str = "image"
) -> int:
    """Refuse an image whose declared voxel data exceed the limit; returns its size in bytes.

    Args:
        shape: the declared array shape (any order), e.g. (frames, rows, columns, samples).
        itemsize: bytes per value of the decoded array.
        path: the file or folder, named in the error.
        limit: the limit in bytes (default: :func:`max_voxel_bytes`).
        what: what the shape describes, for the message ("image", "series", ...).

    Raises:
        InputError: negative dimensions, or more voxel data than the limit.
    """
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise InputError(f"negative image dimension in the header: {dims}", path)
    total = math.prod(dims) * int(itemsize)
    limit = max_voxel_bytes(limit)
    if total > limit:
        shown = dims[:]
        while len(shown) > 1 and shown[-1] == 1:  # a trailing single channel says nothing
            shown.pop()
        size = " x ".join(str(d) for d in shown)
        raise InputError(
            f"{what} of {size} x {itemsize} byte(s) = {format_bytes(total)} of voxel data exceeds {_limit_hint(limit)}",
            path,
        )
    return total


def check_file_bytes(size: int, path: str | Path, *, limit: int | None = None) -> None:
    """Refuse a file larger than the limit (plus :data:`HEADER_ALLOWANCE`) before reading it whole.

    For uncompressed formats the file holds at least the voxel data it decodes to, so a file
    over the limit cannot produce an image within it.
    """
    limit = max_voxel_bytes(limit)
    if size > limit + HEADER_ALLOWANCE:
        raise InputError(f"file of {format_bytes(size)} exceeds {_limit_hint(limit)}", path)


class BoundedInflater:
    """Raw-deflate data from a stream, inflated chunk by chunk and never past the limit.

    :meth:`read` returns the first inflated bytes (to parse a header from); :meth:`drain`
    inflates the rest while throwing it away and refuses data that expand past the limit plus
    :data:`HEADER_ALLOWANCE`. Memory stays at a few MB whatever the expansion ratio.

    Args:
        stream: binary stream positioned at the start of the deflated data.
        path: the file named in errors.
        limit: the voxel limit in bytes (default: :func:`max_voxel_bytes`).
    """

    def __init__(self, stream: BinaryIO, path: str | Path, limit: int | None = None) -> None:
        self.stream = stream
        self.path = path
        self.limit = max_voxel_bytes(limit)
        self.ceiling = self.limit + HEADER_ALLOWANCE
        self.total = 0
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._done = False

    def _next(self) -> bytes:
        """The next inflated chunk (at most 1 MiB); b"" at the end of the data."""
        try:
            while not self._done:
                tail = self._inflater.unconsumed_tail
                if tail:
                    out = self._inflater.decompress(tail, _CHUNK)
                else:
                    data = self.stream.read(_CHUNK)
                    if not data or self._inflater.eof:
                        self._done = True
                        out = self._inflater.flush() if not self._inflater.eof else b""
                    else:
                        out = self._inflater.decompress(data, _CHUNK)
                self.total += len(out)
                if self.total > self.ceiling:
                    raise InputError(f"deflated data expand to more than {_limit_hint(self.limit)}", self.path)
                if out:
                    return out
        except zlib.error:
            raise InputError("corrupt deflated data (not a valid deflate stream)", self.path) from None
        return b""

    def read(self, size: int) -> bytes:
        """Up to ``size`` inflated bytes (fewer at the end of the data)."""
        parts: list[bytes] = []
        got = 0
        while got < size:
            chunk = self._next()
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def drain(self) -> int:
        """Inflate (and discard) the rest; returns the total inflated size in bytes.

        Raises:
            InputError: the data expand past the limit, or are not valid deflate data.
        """
        while self._next():
            pass
        return self.total


#: The fewest pixels (voxels) along an image axis that a model takes: a 1 x 1 or a 1 x 160 picture was resized up
#: to the model's grid and called (the classifier abstained, the 2D anomaly model scored it); 4 is ITK's own least.
MIN_PIXELS_PER_AXIS = 4


def check_least_size(volume: Any, path: Any = None) -> None:
    """Refuse an image with fewer than :data:`MIN_PIXELS_PER_AXIS` pixels along y or x (or slices, for a volume),
    in one line: "image too small: 1 x 160 pixels (a model takes at least 4 along each axis)"."""
    sizes = volume.shape[1:3] if volume.is_2d else volume.shape[:3]
    if min(sizes) < MIN_PIXELS_PER_AXIS:
        what = "pixels" if volume.is_2d else "voxels"
        raise InputError(f"image too small: {' x '.join(map(str, sizes))} {what} (a model takes at least "
                         f"{MIN_PIXELS_PER_AXIS} along each axis)", path)  # fmt: skip


def name_max(folder: str | Path) -> int:
    """The longest file name (bytes) the file system of ``folder`` (or of its nearest existing parent) takes: 255 on
    most, and 255 when it cannot be asked."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def check_name_fits(path: str | Path, *companions: str | Path) -> None:
    """Refuse, before the work, an output ``path`` (and the ``companions`` written beside it: a log, a sidecar) whose
    name is longer than its folder takes: the file was written after the work and failed there, "File name too
    long", the work lost.

    Raises:
        InputError: a name over :func:`name_max` bytes, naming ``path``.
    """
    limit = name_max(Path(path).parent)
    longest = max(len(os.fsencode(Path(p).name)) for p in (path, *companions))
    if longest > limit:
        raise InputError(f"the output's file name is too long ({longest} bytes; the folder takes {limit})", path)


def check_inflated_size(stream: BinaryIO, path: str | Path, *, limit: int | None = None) -> int:
    """The size raw-deflate data from ``stream`` expand to; InputError past the limit.

    Example:
        >>> import io, zlib
        >>> c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        >>> data = c.compress(bytes(1000)) + c.flush()
        >>> check_inflated_size(io.BytesIO(data), "x.dcm")
        1000
    """
    return BoundedInflater(stream, path, limit).drain()


__all__ = [
    "DEFAULT_MAX_VOXEL_BYTES",
    "ENV_VAR",
    "BoundedInflater",
    "HEADER_ALLOWANCE",
    "MIN_PIXELS_PER_AXIS",
    "check_file_bytes",
    "check_least_size",
    "check_inflated_size",
    "check_voxel_bytes",
    "format_bytes",
    "max_voxel_bytes",
]
