"""One-line reasons for :class:`~medanomaly.errors.InputError` made from library exceptions.

Readers wrap what pydicom, nibabel or ITK raise into ``InputError(reason, path)``; the error
already names the file, so the reason must not repeat it (nibabel and ITK put the full path in
their messages) and must stay on one line, cut at a readable length.

Example:
    >>> short_reason(ValueError('Cannot work out file type of "/data/a.nii"'), "/data/a.nii")
    'Cannot work out file type of the file'
    >>> short_reason(OSError("File /data/a.nii.gz is not a gzip file"), "/data/a.nii.gz")
    'the file is not a gzip file'
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path


def short_reason(exc: BaseException, path: str | Path | None = None, limit: int = 120) -> str:
    """``exc``'s message on one line, without ``path``, at most ``limit`` characters."""
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    if path is not None:
        for form in (f'"{path}"', f"'{path}'", str(path)):
            text = text.replace(form, "the file")
        text = re.sub(r"\b[Ff]ile the file\b", "the file", text)  # nibabel's "File <path> is not a gzip file"
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: A quoted part of a message: pydicom and the decoders quote the value they failed on.
_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_TAG = re.compile(r"\(?[0-9A-Fa-f]{4},\s?[0-9A-Fa-f]{4}\)?")


@lru_cache(maxsize=1)
def _dicom_names() -> frozenset[str]:
    """DICOM keywords, element names, VRs and standard UIDs: words a message may quote that are not a header value."""
    from pydicom.datadict import DicomDictionary
    from pydicom.uid import UID_dictionary

    names = {entry[4] for entry in DicomDictionary.values()} | {entry[2] for entry in DicomDictionary.values()}
    return frozenset(names | {entry[0] for entry in DicomDictionary.values()} | set(UID_dictionary) | {"the file"})


def without_header_values(text: str) -> str:
    """``text`` with every quoted part that is not a DICOM keyword, element name, tag, VR or standard UID replaced by
    ``'<value>'``: a DICOM error must not carry a header value, which may be PHI (``invalid literal for int() with
    base 10: 'JANEDOE'`` came from a NumberOfFrames holding a name).

    Example:
        >>> without_header_values("invalid literal for int() with base 10: 'JANEDOE'")
        "invalid literal for int() with base 10: '<value>'"
        >>> without_header_values("Missing required element: (0028,0100) 'Bits Allocated'")
        "Missing required element: (0028,0100) 'Bits Allocated'"
    """

    def keep_or_hide(match: re.Match) -> str:
        inner = match.group(1) if match.group(1) is not None else match.group(2)
        return match.group(0) if inner in _dicom_names() or _TAG.fullmatch(inner) else "'<value>'"

    return _QUOTED.sub(keep_or_hide, text)


__all__ = ["short_reason", "without_header_values"]
