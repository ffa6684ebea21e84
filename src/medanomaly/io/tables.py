"""CSV tables users bring (manifests, LUNA16 / INbreast / CBIS-DDSM / BUSI tables, lesion sets), read in one way.

:func:`read_csv` opens a table as UTF-8 (a byte-order mark is skipped), after checking its size against the table
limit (:data:`MAX_TABLE_BYTES`), and turns what Python's ``csv`` module raises while the
caller reads it into one :class:`~medanomaly.errors.InputError` naming the file and line: a byte that is not UTF-8
(a table saved as Latin-1 or a binary file given as a CSV was a UnicodeDecodeError traceback), a field over
the ``csv`` module's limit, or a column name given twice (``csv`` would keep the last column's values silently).

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.csv"
    >>> _ = path.write_bytes(b"path,label\\na.nrrd,\\xe9\\n")
    >>> with read_csv(path, "manifest") as rows:
    ...     list(rows)
    Traceback (most recent call last):
    ...
    medanomaly.errors.InputError: .../m.csv: line 2: not UTF-8 text (save the manifest as UTF-8)
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medanomaly.errors import InputError
from medanomaly.io.limits import format_bytes

__all__ = ["MAX_TABLE_BYTES", "read_csv"]

#: Largest table read (LUNA16's candidates_V2.csv, the largest public one here, is about 60 MB).
MAX_TABLE_BYTES = 1 << 30


@contextmanager
def read_csv(path: str | Path, what: str = "CSV table", delimiter: str = ",") -> Iterator[csv.DictReader]:
    """A ``csv.DictReader`` over ``path`` (``what`` names it in messages); see the module docstring.

    Raises:
        InputError: the file is missing or over the size limit, or (while the block reads it) holds a byte that is
            not UTF-8 or a field the ``csv`` module refuses; the message names the file and line.
    """
    path = Path(path)
    if not path.is_file():  # a pipe (`<(...)`) has no size to check: it had been "not found"
        reason = "is not a regular file (a device, a named pipe or a socket): save it as a file" if path.exists() else (
            "not found")  # fmt: skip
        raise InputError(f"{what} {reason}", path)
    size = path.stat().st_size
    if size > MAX_TABLE_BYTES:
        raise InputError(f"{what} of {format_bytes(size)} exceeds the limit of {format_bytes(MAX_TABLE_BYTES)}", path)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        try:
            _check_unique_columns(reader.fieldnames or [], what, path)
            yield reader
        except UnicodeDecodeError:
            raise InputError(f"line {_first_undecodable_line(path)}: not UTF-8 text (save the {what} as UTF-8)",
                             path) from None  # fmt: skip
        except csv.Error as exc:
            raise InputError(f"line {reader.line_num}: not a readable {what} ({exc})", path) from None


def _check_unique_columns(names: list[str], what: str, path: Path) -> None:
    """Two columns of one name (case and spaces aside): ``csv.DictReader`` keeps the last one's values silently."""
    seen: set[str] = set()
    for name in names:
        key = name.strip().lower()
        if key in seen:
            raise InputError(f"line 1: column {name.strip()!r} appears twice in the {what} (only the last one would "
                             "be read)", path)  # fmt: skip
        seen.add(key)


def _first_undecodable_line(path: Path) -> int:
    """The number of the first line that is not UTF-8 (the decoder reads ahead in blocks, so the reader's line
    count does not say), 0 if none is found."""
    with path.open("rb") as raw:
        for number, line in enumerate(raw, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0
