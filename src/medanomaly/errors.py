"""Errors users see. The CLI prints ``str(error)`` on one line and exits with code 2.

Messages name the file (never a patient) and the reason, e.g.
``lung1.dcm: truncated DICOM (pixel data ends early)``.
"""

from __future__ import annotations

from pathlib import Path


class MedanomalyError(Exception):
    """Base class for every error medanomaly raises on purpose."""


class InputError(MedanomalyError, ValueError):
    """Bad input: a file, folder, config or argument that cannot be used.

    Args:
        reason: what is wrong, in plain words.
        path: the offending file or folder (shown by name, relative where possible).
    """

    def __init__(self, reason: str, path: str | Path | None = None) -> None:
        self.reason = reason
        self.path = Path(path) if path is not None else None
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)


class ConfigError(InputError):
    """A config that does not validate (unknown name, wrong type, missing field)."""
