"""Write files all-or-nothing for the deploy layer: bytes, text, JSON and DICOM datasets.

All go through :func:`medanomaly.jsonio.atomic_write` (a temporary file in the same folder, fsync,
then ``os.replace``): a reader (or a rerun after ``kill -9``) sees either the old file or the complete
new one, never half a file; the batch runner relies on this to resume without losing or repeating a
series. Unlike :func:`medanomaly.jsonio.write_text_atomic`, an unwritable folder is the OSError
itself (the batch runner and the PACS loop report it with the series).

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
    >>> atomic_write_text(p, "{}").read_text()
    '{}'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medanomaly.jsonio import atomic_write, finite_json

__all__ = ["atomic_save_dataset", "atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` all-or-nothing."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` all-or-nothing."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NaN and infinities written as null) all-or-nothing."""
    return atomic_write_text(path, json.dumps(finite_json(obj), indent=2) + "\n")


def atomic_save_dataset(path: str | Path, dataset: Any) -> Path:
    """Save a pydicom/highdicom dataset as a DICOM file (with preamble and file meta) all-or-nothing."""
    return atomic_write(path, lambda fh: dataset.save_as(fh, enforce_file_format=True))
