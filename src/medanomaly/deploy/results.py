"""Per-series result records and the tables built from them (results.csv, results.parquet).

Each processed series leaves one JSON record, ``<out>/series/<series_id>.json``, written
atomically and last (after its DICOM outputs), so the record's presence means "finished". The
tables are always rebuilt from the records, never appended to: after a ``kill -9`` and a rerun no
row is missing and none appears twice.

A record carries the *fingerprint* of the model run and of the options that change results: a
record with another fingerprint is stale and its series is processed again.

Identifiers: the series and study ids are the DICOM UIDs, or, with a key (``keyed_id``), HMAC
pseudonyms of them; a NIfTI/NRRD file is known by a hash of its content. No patient name, no
file or folder name is written to a record or a table.

Example:
    >>> row = table_row({"series_id": "1.2.3", "status": "done", "n_findings": 2})
    >>> row["series_id"], row["n_findings"], row["reason"]
    ('1.2.3', 2, '')
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from medanomaly.deploy.atomic import atomic_write, atomic_write_json, atomic_write_text
from medanomaly.jsonio import read_json

__all__ = [
    "COLUMNS", "RECORD_SCHEMA", "keyed_id", "load_record", "record_path", "spreadsheet_safe", "table_row",
    "write_problems", "write_record", "write_tables",
]  # fmt: skip

RECORD_SCHEMA = "medanomaly.batch-series/1"
#: Columns of results.csv / results.parquet, in order.
COLUMNS: tuple[str, ...] = (
    "series_id", "study_id", "modality", "status", "reason", "label", "decision", "abstained", "score",
    "probabilities", "n_findings", "largest_lesion_ml", "task", "run_id", "software_version",
    "synthetic_model", "seconds", "fusion",
)  # fmt: skip
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def keyed_id(key: bytes | None, purpose: str, value: str, prefix: str) -> str:
    """``value`` itself without a key; with one, ``prefix`` + 24 hex digits of HMAC-SHA256(key, purpose, value)."""
    if key is None:
        return value
    digest = hmac.new(key, f"{purpose}\x1f{value}".encode(), hashlib.sha256).hexdigest()
    return f"{prefix}{digest[:24]}"


def file_safe(series_id: str) -> str:
    """``series_id`` as one file or folder name: characters other than letters, digits, ``.``, ``_`` and ``-``
    become ``_``, and so do leading dots (a hostile file's UID ``..`` would name the parent folder)."""
    name = _SAFE.sub("_", series_id)
    return "_" * (len(name) - len(name.lstrip("."))) + name.lstrip(".") or "_"


def record_path(out_dir: str | Path, series_id: str) -> Path:
    """Where the record of a series lives: ``<out>/series/<series_id>.json`` (id made :func:`file_safe`)."""
    return Path(out_dir) / "series" / f"{file_safe(series_id)}.json"


def write_record(out_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write one series record atomically (the last step of processing a series)."""
    return atomic_write_json(record_path(out_dir, record["series_id"]), {"schema": RECORD_SCHEMA, **record})


def load_record(path: str | Path) -> dict[str, Any] | None:
    """A record, or None when absent, unreadable or of another schema (the series is redone)."""
    try:
        data = read_json(Path(path))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == RECORD_SCHEMA else None


def table_row(record: dict[str, Any]) -> dict[str, Any]:
    """One table row (``COLUMNS``) of a record; probabilities as a JSON object string; a fusion call's series as
    ``T1=<series id>; PD=<series id>`` (a missing modality ``PD=-``), so the table alone says what was fused.

    Example:
        >>> table_row({"series_id": "1.2", "fusion": {"T1": "1.2", "PD": None}})["fusion"]
        'T1=1.2; PD=-'
    """
    row = {c: record.get(c) for c in COLUMNS}
    probs = record.get("probabilities")
    row["probabilities"] = json.dumps(probs, sort_keys=True) if probs else ""
    row["reason"] = record.get("reason") or ""
    fusion = record.get("fusion") or {}
    row["fusion"] = "; ".join(f"{name}={series or '-'}" for name, series in fusion.items())
    return row


#: First characters that make a spreadsheet read a cell as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, quoted with a leading ``'``; other values as given.

    Series and study UIDs, the modality, file paths and reasons come from the archive's headers and names: a
    DICOM whose Modality is ``=HYPERLINK("http://...")`` would otherwise be a live link (or a command) when
    ``results.csv`` is opened in a spreadsheet. ``results.parquet`` keeps the values as they are.

    Example:
        >>> print(spreadsheet_safe('=HYPERLINK("http://x")'), spreadsheet_safe("CT"), spreadsheet_safe(-0.5))
        '=HYPERLINK("http://x") CT -0.5
    """
    return f"'{value}" if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def _csv_text(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else spreadsheet_safe(v)) for k, v in row.items()})
    return buf.getvalue()


def _parquet(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {
        "abstained": pa.bool_(), "score": pa.float64(), "n_findings": pa.int64(), "largest_lesion_ml": pa.float64(),
        "synthetic_model": pa.bool_(), "seconds": pa.float64(),
    }  # fmt: skip
    schema = pa.schema([(c, types.get(c, pa.string())) for c in COLUMNS])
    columns = {c: [r.get(c) for r in rows] for c in COLUMNS}
    table = pa.table(columns, schema=schema)
    return atomic_write(path, lambda fh: pq.write_table(table, fh))


def write_tables(out_dir: str | Path, records: Iterable[dict[str, Any]]) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``results.parquet`` (one row per record, sorted by series id)."""
    out_dir = Path(out_dir)
    rows = sorted((table_row(r) for r in records), key=lambda r: str(r["series_id"]))
    csv_path = atomic_write_text(out_dir / "results.csv", _csv_text(rows))
    return csv_path, _parquet(rows, out_dir / "results.parquet")


def write_problems(out_dir: str | Path, problems: Iterable[Any], key: bytes | None = None) -> Path:
    """``problems.csv``: files of the archive that were skipped (path relative to the archive, reason).

    With a key, the relative path is replaced by a keyed file id (folder names may carry PHI).
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["where", "kind", "reason"])
    for p in problems:
        where = keyed_id(key, "file", p.where, "F-") if key is not None and p.kind == "file" else p.where
        writer.writerow([spreadsheet_safe(where), p.kind, spreadsheet_safe(p.reason)])
    return atomic_write_text(Path(out_dir) / "problems.csv", buf.getvalue())
