"""Detached voxel data named by NRRD and MetaImage headers: kept inside the header's own folder.

An NRRD header may keep its voxels in other files (``data file: scan.raw``; a numbered pattern
``data file: slice%03d.raw 1 40 1``; or ``data file: LIST`` followed by one name a line), and so may a
MetaImage header (``ElementDataFile = scan.raw``, with the same three forms). SimpleITK follows any path it
is given, so a header of a few lines could read ``/etc/shadow`` or ``../../other-study/scan.raw`` as pixels;
the service, which stores an uploaded NRRD and serves its image back, would then hand that file to whoever
uploaded the header. :func:`check_detached_data` refuses, before ITK opens anything, every named file that is
not a relative path inside the header's folder (symlinks resolved). Files beside the header, the normal
``.nhdr`` + ``.raw`` pair, are read as before.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> header = folder / "x.nhdr"
    >>> _ = header.write_text("NRRD0004\\ntype: short\\ndimension: 1\\nsizes: 4\\ndata file: /etc/passwd\\n")
    >>> try:
    ...     check_detached_data(header)
    ... except InputError as exc:
    ...     print(exc.reason)
    header names a data file outside its folder ('/etc/passwd'): refused
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from medanomaly.errors import InputError

__all__ = ["check_detached_data", "detached_names"]

#: How much of a file is read to find its header (a LIST of 10,000 slice names fits).
HEADER_BYTES = 1 << 20

#: The most files of a numbered pattern (``slice%03d.raw 1 40 1``) each checked; a longer range is checked by its
#: first name only (a header of a few bytes must not make a list of a billion names).
MAX_NUMBERED = 100_000

_NRRD_KEY = re.compile(r"^(data ?file)\s*:\s*(.*)$", re.IGNORECASE)
_META_KEY = re.compile(r"^ElementDataFile\s*=\s*(.*)$")
_NUMBERED = re.compile(r"^(\S+)\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)(\s+\d+)?$")


def detached_names(path: str | Path) -> list[str]:
    """The data files an NRRD or MetaImage header names (a numbered pattern filled in with each of its numbers, up
    to :data:`MAX_NUMBERED`), in the header's own words; an empty list for a header with its data inline."""
    if not Path(path).is_file():
        return []
    with open(path, "rb") as fh:
        head = fh.read(HEADER_BYTES)
    text = head.decode("latin-1")
    if head.startswith(b"NRRD"):
        lines = re.split(r"\r?\n\r?\n", text, maxsplit=1)[0].splitlines()
        return _names(lines, _NRRD_KEY, group=2)
    lines = text.splitlines()
    if any(_META_KEY.match(line.strip()) for line in lines[:200]):
        return _names(lines, _META_KEY, group=1, inline="LOCAL")
    return []


def _names(lines: list[str], key: re.Pattern[str], group: int, inline: str = "") -> list[str]:
    for i, line in enumerate(lines):
        found = key.match(line.strip())
        if not found:
            continue
        value = found.group(group).strip()
        if not value or value == inline:
            return []
        if value.split()[0] == "LIST":  # one name a line, to the end of the header
            return [name.strip() for name in lines[i + 1 :] if name.strip()]
        numbered = _NUMBERED.match(value)
        if numbered and "%" in numbered.group(1):
            first, last, step = (int(numbered.group(k)) for k in (2, 3, 4))
            numbers = range(first, last + (1 if step > 0 else -1), step) if step else range(first, first + 1)
            return [_fill(numbered.group(1), n) for n in (numbers if len(numbers) <= MAX_NUMBERED else numbers[:1])]
        return [value]
    return []


def _fill(pattern: str, number: int) -> str:
    try:
        return pattern % number
    except (TypeError, ValueError):
        return re.sub(r"%[-+ #0-9.]*[a-zA-Z]", str(number), pattern)


def check_detached_data(path: str | Path) -> None:
    """Refuse an NRRD or MetaImage header that names a data file outside its own folder, or one that is not there
    (MetaIO said "Cannot open data file" or, for a LIST or a numbered pattern, "cannot open slice", naming none).

    Raises:
        InputError: an absolute path, a ``..`` step, or a name that resolves (through symlinks) outside the
            header's folder; a named file that does not exist; naming the header and the offending name.
    """
    path = Path(path)
    folder = path.parent.resolve()
    for name in detached_names(path):
        parts = Path(name.replace("\\", "/")).parts
        escapes = os.path.isabs(name) or ".." in parts or re.match(r"^[A-Za-z]:", name)
        shown = name if len(name) <= 80 else name[:77] + "..."
        if escapes or not (folder / name).resolve().is_relative_to(folder):
            raise InputError(f"header names a data file outside its folder ({shown!r}): refused", path)
        if not (folder / name).is_file():
            raise InputError(f"header names a data file that is not beside it ({shown!r})", path)
