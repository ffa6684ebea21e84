"""SQLite state files (the service's job store, the PACS bridge's processed series) opened with one check.

A state file that is not SQLite (a truncated copy, another program's file), or a SQLite file whose table lacks the
columns medanomaly writes, used to end ``serve`` or ``pacs`` with a ``sqlite3.DatabaseError`` or an
``OperationalError`` traceback, at start or at the first query. :func:`open_state_db` opens it, applies the schema
(``CREATE ... IF NOT EXISTS``) and checks the table's columns; any problem is one line naming the file.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "s.sqlite"
    >>> db = open_state_db(path, "CREATE TABLE IF NOT EXISTS t (a TEXT)", {"t": ("a",)}, "state file")
    >>> db.execute("SELECT count(*) FROM t").fetchone()[0]
    0
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medanomaly.errors import InputError

__all__ = ["open_state_db"]


def open_state_db(path: Path, schema: str, tables: Mapping[str, Sequence[str]], what: str,
                  **connect: Any) -> sqlite3.Connection:  # fmt: skip
    """A connection to ``path`` with ``schema`` applied and each of ``tables`` holding its columns.

    Raises:
        InputError: the file is not a SQLite database, holds another program's tables and none of ours (left as it
            is), or one of its ``tables`` lacks a column (one line naming it).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, **connect)
    try:
        existing = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
                    if not name.startswith("sqlite_")}  # fmt: skip
        if existing and not existing & set(tables):  # another program's database: nothing of ours is added to it
            db.close()
            raise InputError(f"not a {what}: a SQLite database of another program (none of its {len(existing)} "
                             "tables is ours); give a new file", path)  # fmt: skip
        db.executescript(schema)
        present = {table: {row[1] for row in db.execute(f"PRAGMA table_info({table})")} for table in tables}
    except sqlite3.OperationalError as exc:  # a SQLite file whose tables are not ours
        db.close()
        raise InputError(f"not a {what} ({exc}; another program's file?)", path) from None
    except sqlite3.DatabaseError:
        db.close()
        raise InputError(f"not a readable {what} (corrupt, or not a SQLite file): move it away to start "
                         "afresh", path) from None  # fmt: skip
    missing = [(table, c) for table, columns in tables.items() for c in columns if c not in present[table]]
    if missing:
        db.close()
        raise InputError(f"not a {what}: its table {missing[0][0]!r} has no column {missing[0][1]!r} (another "
                         "program's file?)", path)  # fmt: skip
    return db
