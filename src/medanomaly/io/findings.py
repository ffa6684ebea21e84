"""The one ``findings.json`` writer and reader (schema: :meth:`medanomaly.types.Finding.to_json`).

``findings.json`` is an object: ``{"schema": "medanomaly.findings/1", "image": <name the user
gave>, "findings": [<Finding.to_json() + rank + extra keys>, ...]}``. Every producer (``detect``,
the lung report, batch inference, the service) writes through :func:`write_findings`, so there is
one schema; the file is written atomically and NaN becomes null.

Example:
    >>> import tempfile
    >>> from medanomaly.types import Finding
    >>> f = Finding((1.0, 2.0, 3.0), ((0.0, 0.0, 0.0), (2.0, 4.0, 6.0)), 0.9, "nodule")
    >>> path = write_findings(Path(tempfile.mkdtemp()) / "findings.json", [f], image="lung1.nrrd")
    >>> [g.score for g in read_findings(path)]
    [0.9]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medanomaly.errors import InputError
from medanomaly.jsonio import JsonLimitError, read_json, write_json
from medanomaly.types import Finding

SCHEMA = "medanomaly.findings/1"

__all__ = ["SCHEMA", "findings_rows", "write_findings", "read_findings"]


def findings_rows(findings: Sequence[Finding], extra: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One JSON row per finding, best first: ``Finding.to_json()`` + ``rank`` (1-based) + extra keys."""
    rows = []
    for i, finding in enumerate(findings, start=1):
        row = {"rank": i, **finding.to_json()}
        if extra is not None and i - 1 < len(extra):
            row.update(extra[i - 1])
        rows.append(row)
    return rows


def write_findings(path: str | Path, findings: Sequence[Finding], image: str | None = None,
                   extra: Sequence[Mapping[str, Any]] | None = None, **context: Any) -> Path:
    """Write ``findings.json`` atomically.

    Args:
        path: the JSON file to write.
        findings: best first.
        image: the input's file name as the user gave it (never a patient name).
        extra: per-finding extra keys (overlay PNG, mask file, hit flags), in finding order.
        context: top-level keys (task, run, synthetic ...).
    """
    doc = {"schema": SCHEMA, "image": image, **context, "findings": findings_rows(findings, extra)}
    return write_json(path, doc)


def read_findings(path: str | Path) -> list[Finding]:
    """Read a ``findings.json`` written by :func:`write_findings` (masks are not in the JSON)."""
    path = Path(path)
    try:
        doc = read_json(path)
        rows = doc["findings"] if isinstance(doc, dict) else doc
        return [Finding.from_json(r) for r in rows]
    except FileNotFoundError:
        raise InputError("findings file not found", path) from None
    except (OSError, UnicodeDecodeError, KeyError, TypeError):
        raise InputError("not a valid findings.json", path) from None
    except ValueError as exc:
        reason = str(exc) if "center_mm" in str(exc) or isinstance(exc, JsonLimitError) else "not valid JSON"
        raise InputError(f"not a valid findings.json ({reason})", path) from None

