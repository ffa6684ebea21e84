"""Valid JSON written atomically: the one helper every writer of JSON uses.

JSON has no NaN or Infinity: :func:`finite_json` turns them into ``null`` (and NumPy values into
plain Python), and :func:`write_json` writes a temp file in the target folder then renames it, so a
killed process never leaves half a file.

Example:
    >>> finite_json({"auc": float("nan"), "n": 3})
    {'auc': None, 'n': 3}
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from medanomaly.errors import InputError

__all__ = ["finite_json", "write_json", "write_text_atomic"]


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


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically (temp file + rename).

    Raises:
        InputError: the folder cannot be written (permission, full disk), naming the file.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write ({exc.strerror or exc.__class__.__name__})", path) from None
    return path


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """Write ``data`` as valid JSON (NaN -> null) atomically."""
    return write_text_atomic(path, json.dumps(finite_json(data), indent=indent, allow_nan=False))
