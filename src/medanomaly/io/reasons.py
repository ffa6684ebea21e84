"""One-line reasons for :class:`~medanomaly.errors.InputError` made from library exceptions.

Readers wrap what pydicom, nibabel or ITK raise into ``InputError(reason, path)``; the error
already names the file, so the reason must not repeat it (nibabel and ITK put the full path in
their messages) and must stay on one line, cut at a readable length.

Example:
    >>> short_reason(ValueError('Cannot work out file type of "/data/a.nii"'), "/data/a.nii")
    'Cannot work out file type of the file'
"""

from __future__ import annotations

from pathlib import Path


def short_reason(exc: BaseException, path: str | Path | None = None, limit: int = 120) -> str:
    """``exc``'s message on one line, without ``path``, at most ``limit`` characters."""
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    if path is not None:
        for form in (f'"{path}"', f"'{path}'", str(path)):
            text = text.replace(form, "the file")
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["short_reason"]
