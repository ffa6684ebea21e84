"""The PACS bridge's state file: which series it handled under which model run and options (the fingerprint), with
what outcome and which instances it stored, so a later poll (or a restart) adds nothing. The DICOM node keeps its own
file of the same kind.

Example:
    >>> import tempfile
    >>> state = PacsState(Path(tempfile.mkdtemp()) / "state.sqlite")
    >>> state.record("1.2.3", "f", "1.2", WAITING, "its fusion set waits for PD")
    >>> state.done("1.2.3", "f"), state.status("1.2.3", "f"), state.waiting_since(["1.2.3"], "f") is not None
    (False, 'waiting', True)
    >>> state.close()
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from medanomaly.deploy.state_db import open_state_db

__all__ = ["WAITING", "PacsState"]

#: The state of a series whose fusion set waits for a missing modality (``pair_wait_s``): not done, asked again.
WAITING = "waiting"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS processed (
    series_uid TEXT NOT NULL, fingerprint TEXT NOT NULL, study_uid TEXT, status TEXT NOT NULL,
    reason TEXT, stored TEXT, at REAL, PRIMARY KEY (series_uid, fingerprint)
);
CREATE TABLE IF NOT EXISTS lone_sets (
    series_uid TEXT NOT NULL, fingerprint TEXT NOT NULL, study_uid TEXT, present TEXT NOT NULL,
    missing TEXT NOT NULL, at REAL, PRIMARY KEY (series_uid, fingerprint)
);
CREATE TABLE IF NOT EXISTS lone_patients (
    series_uid TEXT NOT NULL, fingerprint TEXT NOT NULL, patient TEXT NOT NULL, PRIMARY KEY (series_uid, fingerprint)
)"""
_COLUMNS = ("series_uid", "fingerprint", "study_uid", "status", "reason", "stored", "at")
_LONE_COLUMNS = ("series_uid", "fingerprint", "study_uid", "present", "missing", "at")
_LONE_PATIENT_COLUMNS = ("series_uid", "fingerprint", "patient")
#: Most study UIDs asked for in one query (SQLite takes at most 32,766 values in one statement).
_CHUNK = 500



class PacsState:
    """The SQLite file of processed series: (series UID, fingerprint) -> status, reason, stored UIDs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = open_state_db(self.path, _SCHEMA, {"processed": _COLUMNS, "lone_sets": _LONE_COLUMNS,
                                                          "lone_patients": _LONE_PATIENT_COLUMNS}, "PACS state file")  # fmt: skip
        self._db.commit()

    def done(self, series_uid: str, fingerprint: str) -> bool:
        """True when the series was handled (any status but ``waiting``) under this fingerprint."""
        return self.status(series_uid, fingerprint) not in (None, WAITING)

    def status(self, series_uid: str, fingerprint: str) -> str | None:
        """The recorded status of the series under this fingerprint (``done``, ``skipped``, ``refused``, ``error``;
        ``waiting``: its fusion set waits for a missing modality), or None when it was not handled."""
        row = self._db.execute("SELECT status FROM processed WHERE series_uid=? AND fingerprint=?",
                               (series_uid, fingerprint)).fetchone()  # fmt: skip
        return None if row is None else str(row[0])

    def record(self, series_uid: str, fingerprint: str, study_uid: str, status: str, reason: str = "",
               stored: Sequence[str] = ()) -> None:  # fmt: skip
        """Remember one series' outcome (replacing an earlier one of the same fingerprint)."""
        self._db.execute("INSERT OR REPLACE INTO processed VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (series_uid, fingerprint, study_uid, status, reason, " ".join(stored), time.time()))  # fmt: skip
        self._db.commit()

    def series_of_study(self, study_uid: str, fingerprint: str, status: str) -> list[str]:
        """The series of a study recorded with ``status`` under this fingerprint, oldest first."""
        rows = self._db.execute("SELECT series_uid FROM processed WHERE study_uid=? AND fingerprint=? AND status=? "
                                "ORDER BY at", (study_uid, fingerprint, status)).fetchall()  # fmt: skip
        return [str(r[0]) for r in rows]

    def waiting_since(self, series_uids: Sequence[str], fingerprint: str) -> float | None:
        """When the first of ``series_uids`` was recorded ``waiting`` under this fingerprint (Unix time), or None."""
        marks = ",".join("?" * len(series_uids))
        row = self._db.execute(f"SELECT min(at) FROM processed WHERE fingerprint=? AND status=? AND series_uid IN "
                               f"({marks}) AND typeof(at) IN ('integer', 'real')",  # a time written here
                               (fingerprint, WAITING, *series_uids)).fetchone()  # fmt: skip
        return None if row is None or row[0] is None else float(row[0])

    def record_lone(self, series_uid: str, fingerprint: str, study_uid: str, present: Sequence[str],
                    missing: Sequence[str], patient: str | None = None) -> None:  # fmt: skip
        """Remember that the fusion set in the row of ``series_uid`` ran with the modalities ``present`` (names)
        and without those ``missing``, so that a missing one come later need not wait for it
        (:func:`medanomaly.deploy.pair_wait.waiting_sets`); with ``patient`` (a patient key that lasts across runs:
        :func:`medanomaly.deploy.archive.lasting_patient_secret`) it is found by its patient too."""
        names = json.dumps(list(present)), json.dumps(list(missing))
        self._db.execute("INSERT OR REPLACE INTO lone_sets VALUES (?, ?, ?, ?, ?, ?)",
                         (series_uid, fingerprint, study_uid, *names, time.time()))
        if patient:
            self._db.execute("INSERT OR REPLACE INTO lone_patients VALUES (?, ?, ?)", (series_uid, fingerprint, patient))
        self._db.commit()

    def lone_sets(self, study_uids: Sequence[str], fingerprint: str,
                  patient: str | None = None) -> list[tuple[str, frozenset[str], frozenset[str]]]:  # fmt: skip
        """(row series UID, present, missing modality names) of each fusion set of ``study_uids`` (or recorded with
        ``patient``) that ran without a modality under this fingerprint (:meth:`record_lone`) and was not answered
        (:meth:`forget_lone`), oldest first."""
        rows = set()
        for start in range(0, len(study_uids), _CHUNK):  # a patient may have more studies than SQLite takes values
            chunk = study_uids[start:start + _CHUNK]
            rows |= set(self._db.execute(f"SELECT at, series_uid, present, missing FROM lone_sets WHERE fingerprint=? "
                                         f"AND study_uid IN ({','.join('?' * len(chunk))})", (fingerprint, *chunk)))  # fmt: skip
        if patient:
            rows |= set(self._db.execute("SELECT s.at, s.series_uid, s.present, s.missing FROM lone_sets s JOIN "
                                         "lone_patients p ON p.series_uid=s.series_uid AND p.fingerprint=s.fingerprint "
                                         "WHERE s.fingerprint=? AND p.patient=?", (fingerprint, patient)))  # fmt: skip
        out = []
        ours = [row for row in rows if isinstance(row[0], (int, float))]  # a row with another time was not written here
        for _, series_uid, present, missing in sorted(ours, key=lambda row: (row[0], str(row[1]))):
            try:
                had, lacked = frozenset(map(str, json.loads(present))), frozenset(map(str, json.loads(missing)))
            except (TypeError, ValueError):  # a row not written here: no set to go by
                continue
            out.append((str(series_uid), had, lacked))
        return out

    def forget_lone(self, series_uids: Sequence[str], fingerprint: str) -> None:
        """Forget the lone sets in the rows of ``series_uids``: their late partner came and ran."""
        for table in ("lone_sets", "lone_patients"):
            self._db.executemany(f"DELETE FROM {table} WHERE series_uid=? AND fingerprint=?",
                                 [(uid, fingerprint) for uid in series_uids])  # fmt: skip
        self._db.commit()

    def rows(self) -> list[tuple]:
        """Every recorded row: (series_uid, fingerprint, study_uid, status, reason, stored, at)."""
        return self._db.execute("SELECT * FROM processed ORDER BY at").fetchall()

    def close(self) -> None:
        self._db.close()
