"""Valid JSON written atomically: the one helper every writer of JSON uses, and the one all-or-nothing file writer.

JSON has no NaN or Infinity: :func:`finite_json` turns them into ``null`` (and NumPy values into
plain Python), and :func:`write_json` writes through :func:`atomic_write`: a temporary file in the
target folder, fsynced, then renamed over the target, so a killed process (or a power cut) never
leaves half a file. Every writer that has a file handle uses :func:`atomic_write` (text here, DICOM
and results in :mod:`medanomaly.deploy.atomic`); libraries that insist on a path (SimpleITK,
matplotlib) write through :func:`medanomaly.io.staged.write_staged`.

Example:
    >>> finite_json({"auc": float("nan"), "n": 3})
    {'auc': None, 'n': 3}
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from medanomaly.errors import InputError, named_os_error

__all__ = [
    "FileLimitError",
    "JsonLimitError",
    "MAX_JSON_BYTES",
    "atomic_write",
    "finite_json",
    "new_file_mode",
    "read_bytes_limited",
    "read_folder_json",
    "read_json",
    "write_json",
    "write_text_atomic",
]

MAX_JSON_BYTES = 256 << 20  # the largest JSON we write (findings with contours, manifests) is a few MiB


class FileLimitError(ValueError):
    """A small input file (JSON, YAML, a key) over its size limit, or a device where a file is needed."""


class JsonLimitError(FileLimitError):
    """A JSON file over :data:`MAX_JSON_BYTES` or nested deeper than the parser can follow."""


def read_bytes_limited(path: str | Path, max_bytes: int, kind: str = "file",
                       error: type[FileLimitError] = FileLimitError) -> bytes:  # fmt: skip
    """The bytes of ``path``, at most ``max_bytes``: a regular file's size is checked before it is read, and a named
    pipe (``--key-file <(pass show key)``, a config from ``<(...)``) is read up to the limit and refused beyond it.
    A device (``/dev/zero``) or socket is refused: its "size" was 0, so the limit passed and the read grew until the
    machine killed the process.

    Raises:
        FileLimitError (or ``error``): over the limit, or not a regular file or a pipe; errors of ``open`` otherwise.
    """
    import stat

    with open(path, "rb") as handle:  # a pipe waits here for its writer, as `cat` would
        mode = os.fstat(handle.fileno())
        if not (stat.S_ISREG(mode.st_mode) or stat.S_ISFIFO(mode.st_mode)):
            raise error(f"not a regular file (a device or a socket) where {kind} is needed")
        if stat.S_ISREG(mode.st_mode) and mode.st_size > max_bytes:
            raise error(f"{mode.st_size:,} bytes, over the {max_bytes:,}-byte limit for {kind}")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise error(f"over the {max_bytes:,}-byte limit for {kind}")
    return data


def read_json(path: str | Path, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse the JSON file ``path`` with its size checked before it is read (:func:`read_bytes_limited`).

    Errors are those of ``open`` (FileNotFoundError, OSError, UnicodeDecodeError) and ``ValueError`` for
    text that is not JSON, so callers keep one ``except`` per cause; a file over ``max_bytes`` or nested
    so deep that the parser would recurse past Python's limit (``[[[[...`` 100,000 times: a
    RecursionError trace before) is a :class:`JsonLimitError`, a ValueError saying which.
    """
    text = read_bytes_limited(path, max_bytes, "a JSON file", JsonLimitError).decode("utf-8")
    try:
        return json.loads(text)
    except RecursionError:
        raise JsonLimitError("JSON nested too deeply to read") from None



def read_folder_json(folder: str | Path, name: str, kind: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON file ``name`` of ``folder`` (a run, a package, a data set's listing), or one :class:`InputError`
    naming ``folder``: ``not {kind} (no NAME)``, ``NAME: over the limit`` or ``NAME is truncated or not valid JSON``.

    Example:
        >>> read_folder_json("/nowhere", "model.json", "a trained run")
        Traceback (most recent call last):
        ...
        medanomaly.errors.InputError: /nowhere: not a trained run (no model.json)
    """
    folder = Path(folder)
    try:
        return read_json(folder / name, max_bytes)
    except FileNotFoundError:
        raise InputError(f"not {kind} (no {name})", folder) from None
    except JsonLimitError as exc:
        raise InputError(f"{name}: {exc}", folder) from None
    except (OSError, UnicodeDecodeError, ValueError):
        raise InputError(f"{name} is truncated or not valid JSON", folder) from None

def finite_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None and NumPy values made plain."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return finite_json(value.item())  # NumPy scalars
    if hasattr(value, "tolist"):
        return finite_json(value.tolist())
    return value


def new_file_mode() -> int:
    """The permissions a new file gets here: 0666 less the process's umask (read without changing it on Linux, else
    set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any], private: bool = False) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, fsync it, then move it into place.

    A reader (or a rerun after ``kill -9``) sees either the old file or the complete new one; on any
    failure, Ctrl-C included, the temporary file is removed and the old file is untouched.

    Args:
        path: the final file; its folder is created.
        write: writes the content into the open binary file handle.
        private: keep the file readable by its owner only (0600: tokens, re-identification lookups); else its
            permissions are those of any new file (0666 less the umask; a temporary file is 0600, and every JSON
            output was left so, unreadable by the rest of a team that shares the run folder).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        if not private:
            os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a write or flush into a full disk names no file
            raise named_os_error(exc, path) from None
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` all-or-nothing (:func:`atomic_write`). A lone surrogate (a byte of a file name that is
    not UTF-8, e.g. a skipped training image's name in a report) is written as its escape ``\\udcff``: it was a
    UnicodeEncodeError traceback after the work.

    Raises:
        InputError: the folder cannot be written (permission, full disk), naming the file.
    """
    try:
        return atomic_write(path, lambda fh: fh.write(text.encode("utf-8", "backslashreplace")))
    except OSError as exc:
        raise InputError(f"cannot write ({exc.strerror or exc.__class__.__name__})", Path(path)) from None


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """Write ``data`` as valid JSON (NaN -> null) atomically."""
    return write_text_atomic(path, json.dumps(finite_json(data), indent=indent, allow_nan=False))
