"""The job store: one SQLite file, so jobs survive a restart and none is ever lost.

A job (one per uploaded study; the study id is the job id) goes ``queued -> running -> done`` or
``failed`` (with a one-line reason). The queue *is* the table: a worker claims the oldest queued job
of its model in one transaction, so a restart simply finds the queued jobs again. A job found
``running`` at start-up belonged to a worker that died (process killed mid-job): it is queued once
more, and failed with a reason if it was already retried (:meth:`JobStore.recover`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from medanomaly.deploy.state_db import open_state_db

__all__ = ["JobStore", "MAX_ATTEMPTS", "STATES"]

STATES = ("queued", "running", "done", "failed")
#: A job is tried at most this many times (the first try + one retry after a dead worker).
MAX_ATTEMPTS = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, status TEXT NOT NULL, progress REAL NOT NULL DEFAULT 0,
    reason TEXT, attempts INTEGER NOT NULL DEFAULT 0, input_kind TEXT, n_files INTEGER,
    created REAL NOT NULL, updated REAL NOT NULL, seconds REAL, token TEXT
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (model, status, created);
"""
_COLUMNS = ("id", "model", "status", "progress", "reason", "attempts", "input_kind", "n_files", "created", "updated",
            "seconds")  # fmt: skip


class JobStore:
    """Thread-safe access to the jobs table of ``path`` (WAL mode, one connection, one lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_state_db(self.path, "PRAGMA journal_mode=WAL;" + _SCHEMA, {"jobs": _COLUMNS}, "job store",
                                 check_same_thread=False, isolation_level=None, timeout=30)  # fmt: skip
        if "token" not in {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}:
            self._db.execute("ALTER TABLE jobs ADD COLUMN token TEXT")  # a store of an earlier version: no owners
        self._db.row_factory = sqlite3.Row

    def _exec(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args).fetchall()]

    def create(self, model: str, input_kind: str, n_files: int, job_id: str | None = None,
               token: str | None = None, max_active: int = 0) -> str | None:  # fmt: skip
        """A new queued job; returns its id (random, carries nothing about the patient). ``token``: the id of the
        token it was uploaded with (its owner); ``max_active`` (> 0): None, and no job, when that token already has
        this many queued or running (counted and inserted in one transaction, so concurrent uploads cannot pass it)."""
        job_id = job_id or uuid.uuid4().hex
        now = time.time()
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                active = cur.execute("SELECT COUNT(*) FROM jobs WHERE token = ? AND status IN ('queued', 'running')",
                                     (token,)).fetchone()[0]  # fmt: skip
                if max_active and active >= max_active:
                    cur.execute("ROLLBACK")
                    return None
                cur.execute("INSERT INTO jobs (id, model, status, input_kind, n_files, created, updated, token) "
                            "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)", (job_id, model, input_kind, n_files, now, now,
                                                                      token))  # fmt: skip
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return job_id

    def get(self, job_id: str) -> dict[str, Any] | None:
        rows = self._exec("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return rows[0] if rows else None

    def list(self, limit: int = 200) -> list[dict[str, Any]]:
        return self._exec("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,))

    def n_queued(self, model: str) -> int:
        return int(self._exec("SELECT COUNT(*) AS n FROM jobs WHERE model = ? AND status = 'queued'", (model,))[0]["n"])

    def n_active(self, token: str) -> int:
        """Jobs uploaded with the token ``token`` (its id) that are queued or running."""
        return int(self._exec("SELECT COUNT(*) AS n FROM jobs WHERE token = ? AND status IN ('queued', 'running')",
                              (token,))[0]["n"])  # fmt: skip

    def claim(self, model: str, n: int = 1) -> list[dict[str, Any]]:
        """Mark the ``n`` oldest queued jobs of ``model`` running (attempts + 1) and return them."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                rows = [dict(r) for r in cur.execute(
                    "SELECT * FROM jobs WHERE model = ? AND status = 'queued' ORDER BY created LIMIT ?", (model, n))]
                now = time.time()
                for row in rows:
                    cur.execute("UPDATE jobs SET status = 'running', attempts = attempts + 1, progress = 0, "
                                "updated = ? WHERE id = ?", (now, row["id"]))  # fmt: skip
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return rows

    def progress(self, job_id: str, value: float) -> None:
        self._exec("UPDATE jobs SET progress = ?, updated = ? WHERE id = ? AND status = 'running'",
                   (float(value), time.time(), job_id))  # fmt: skip

    def finish(self, job_id: str, seconds: float) -> None:
        self._exec("UPDATE jobs SET status = 'done', progress = 1, reason = NULL, seconds = ?, updated = ? "
                   "WHERE id = ?", (seconds, time.time(), job_id))  # fmt: skip

    def fail(self, job_id: str, reason: str) -> None:
        self._exec("UPDATE jobs SET status = 'failed', reason = ?, updated = ? WHERE id = ?",
                   (reason[:500], time.time(), job_id))  # fmt: skip

    def delete(self, job_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount > 0

    def recover(self) -> dict[str, int]:
        """At start-up: jobs left ``running`` by a dead worker are queued again once, then failed.

        Returns:
            ``{"requeued": n, "failed": m, "queued": q}`` (q = every queued job now).
        """
        now = time.time()
        reason = f"the worker stopped during this job {MAX_ATTEMPTS} times (service killed or crashed)"
        with self._lock:
            failed = self._db.execute("UPDATE jobs SET status = 'failed', reason = ?, updated = ? WHERE "
                                      "status = 'running' AND attempts >= ?", (reason, now, MAX_ATTEMPTS)).rowcount
            requeued = self._db.execute("UPDATE jobs SET status = 'queued', progress = 0, updated = ? "
                                        "WHERE status = 'running'", (now,)).rowcount  # fmt: skip
            queued = self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0]
        return {"requeued": requeued, "failed": failed, "queued": int(queued)}

    def close(self) -> None:
        with self._lock:
            self._db.close()
