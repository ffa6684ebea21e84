"""Write files all-or-nothing: to a temporary file in the same folder, fsync, then ``os.replace``.

A reader (or a rerun after ``kill -9``) sees either the old file or the complete new one, never
half a file: the batch runner relies on this to resume without losing or repeating a series.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
    >>> atomic_write_text(p, "{}").read_text()
    '{}'
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_save_dataset", "atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, then move it into place.

    Args:
        path: the final file; its folder is created.
        write: writes the content into the open binary file handle.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` all-or-nothing."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` all-or-nothing."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NaN and infinities written as null) all-or-nothing."""
    from medanomaly.jsonio import finite_json

    return atomic_write_text(path, json.dumps(finite_json(obj), indent=2) + "\n")


def atomic_save_dataset(path: str | Path, dataset: Any) -> Path:
    """Save a pydicom/highdicom dataset as a DICOM file (with preamble and file meta) all-or-nothing."""
    return atomic_write(path, lambda fh: dataset.save_as(fh, enforce_file_format=True))
