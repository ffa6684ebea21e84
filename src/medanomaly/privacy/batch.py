"""The bookkeeping that lets a folder run lose nothing: lock, resume record, manifest, temporary
files, audit files and a worker pool that survives a killed worker.

Everything lives in ``OUT/.medanomaly/``:

* ``lock``: created exclusively, holds the PID and host of the run writing into OUT; a second run
  is refused while that process lives; a lock left by a dead process is taken over.
* ``run.json``: the resume record, the settings that decide the output bytes (profile options,
  burned-in policy...), the profile id (:func:`table.profile_id`) and a keyed id of the project key
  (never the key). A run whose record differs refuses to resume, unless asked to redo.
* ``manifest.jsonl``: one line per finished file (keyed input id, output path), appended after
  the output is in place.
* ``audit-<UTC time>-<pid>.json``: created exclusively (an audit is never overwritten), reserved
  at the start with spare room so that it can still be written when the disk fills up.

Temporary files are named ``.<name>.<pid>.tmp`` after the process writing them; a run removes only
those whose process is gone (never the temporary files of a live run).

Example:
    >>> pid_alive(os.getpid()), pid_alive(-1)
    (True, False)
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from medanomaly.errors import InputError
from medanomaly.processes import pid_alive

STATE_DIR = ".medanomaly"
#: Room reserved for the audit file at the start of a run (bytes of JSON whitespace).
AUDIT_RESERVE = 256 * 1024
_TMP = re.compile(r"^\..*\.(\d+)\.tmp$")


def temp_name(path: Path) -> Path:
    """The temporary file for ``path``, named after this process."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def clean_stale_temps(out_dir: Path) -> int:
    """Remove temporary files left under ``out_dir`` by processes that are gone; returns how many."""
    removed = 0
    for tmp in out_dir.rglob(".*.tmp"):
        match = _TMP.match(tmp.name)
        if match is None or pid_alive(int(match.group(1))):
            continue  # not ours, or its writer still runs
        try:
            tmp.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def state_dir(out_dir: Path) -> Path:
    """``OUT/.medanomaly``, created; an output folder that cannot be written is refused in one line."""
    state = out_dir / STATE_DIR
    try:
        state.mkdir(parents=True, exist_ok=True)
        probe = temp_name(state / "probe")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write the output folder ({exc.strerror or 'not writable'})", out_dir) from None
    return state


class RunLock:
    """One run at a time per output folder: ``OUT/.medanomaly/lock`` names the PID holding it."""

    def __init__(self, state: Path) -> None:
        self.path = state / "lock"
        self.text = f"{os.getpid()} {socket.gethostname()}\n"

    def __enter__(self) -> RunLock:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(self.text)
            return self
        raise InputError("could not take the run lock (another deid run is starting here)", self.path.parent.parent)

    def _take_over_if_stale(self) -> None:
        try:
            pid_text, _, host = self.path.read_text(encoding="utf-8").strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            pid, host = -1, socket.gethostname()  # unreadable or half-written: treat as stale
        if host == socket.gethostname() and not pid_alive(pid):
            self.path.unlink(missing_ok=True)
            return
        where = f"PID {pid}" + ("" if host == socket.gethostname() else f" on {host}")
        raise InputError(
            f"another deid run ({where}) is writing into this folder; wait for it to finish "
            f"(or delete {STATE_DIR}/lock if that run is gone)",
            self.path.parent.parent,
        )

    def __exit__(self, *exc) -> None:
        try:
            if self.path.read_text(encoding="utf-8") == self.text:
                self.path.unlink()
        except OSError:
            pass


# ------------------------------------------------------------------------ resume record, manifest
def read_record(state: Path) -> dict | None:
    """The resume record of the previous run into this folder (None when there was none)."""
    path = state / "run.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"unreadable": True}
    return record if isinstance(record, dict) else {"unreadable": True}  # '[1, 2]' was an AttributeError traceback


def write_record(state: Path, record: dict) -> None:
    """Store the resume record atomically."""
    path = state / "run.json"
    tmp = temp_name(path)
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def record_differences(old: dict, new: dict) -> list[str]:
    """Which parts of two resume records differ (``settings``, ``profile``, ``key``)."""
    if old.get("unreadable"):
        return ["record unreadable"]
    names = {"settings": "options", "profile": "profile version", "key_id": "key"}
    return [label for field, label in names.items() if old.get(field) != new.get(field)]


def load_manifest(state: Path, out_dir: Path) -> dict[str, str]:
    """``{file id: output path}`` of the finished files whose output still exists."""
    done: dict[str, str] = {}
    path = state / "manifest.jsonl"
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
            fid, rel = str(entry["file_id"]), str(entry["output"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by an interruption
        if (out_dir / rel).is_file():
            done[fid] = rel
    return done


def remove_previous_outputs(state: Path, out_dir: Path) -> int:
    """``--redo``: delete the outputs the manifest lists (only ours), the manifest and the record."""
    removed = 0
    root = out_dir.resolve()
    for rel in set(load_manifest(state, out_dir).values()):
        path = (out_dir / rel).resolve()
        if root in path.parents and path.suffix == ".dcm":
            path.unlink(missing_ok=True)
            removed += 1
            for parent in (path.parent, path.parent.parent):
                try:
                    parent.rmdir()  # only when empty
                except OSError:
                    break
    for name in ("manifest.jsonl", "run.json"):
        (state / name).unlink(missing_ok=True)
    return removed


# --------------------------------------------------------------------------------------- audit
def reserve_audit(state: Path) -> Path:
    """Create a new, never-used audit file (with room reserved) and return its path."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        path = state / (f"audit-{stamp}-{os.getpid()}" + (f"-{n}" if n else "") + ".json")
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write('{"status": "running"}' + " " * AUDIT_RESERVE)
        return path
    raise InputError("too many audit files with the same time stamp", state)


def write_audit(path: Path, full: dict, compact: dict) -> Path:
    """Write the audit into its reserved file: atomically when the disk allows, else in place
    (into the reserved room; the compact form when the full one does not fit)."""
    text = json.dumps(full, indent=2)
    tmp = temp_name(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return path
    except OSError:
        tmp.unlink(missing_ok=True)
    for candidate in (text, json.dumps(compact)):
        data = candidate.encode("utf-8")
        if len(data) > AUDIT_RESERVE:
            continue
        try:
            with open(path, "r+b") as handle:
                handle.write(data)
                handle.truncate(len(data))
            return path
        except OSError:
            continue
    raise InputError("the audit could not be written (output folder full or not writable)", path)


# --------------------------------------------------------------------------------- worker pool
#: What :func:`run_jobs` yields for a job whose worker process died, also when run alone.
WORKER_DIED = "worker died"
#: Most worker processes a batch may ask for (each imports pydicom and the OCR engine: far beyond this, the machine
#: runs out of processes or memory before any file is done).
MAX_WORKERS = 256
#: What it yields for a job not started because ``stop()`` said so.
NOT_STARTED = "not started"


def check_workers(workers: int) -> None:
    """Refuse a worker count outside 1..:data:`MAX_WORKERS` in one line, before any work (``--workers 10**20`` was an
    OverflowError traceback from the pool's semaphore; 100,000 tried to spawn 100,000 processes)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise InputError(f"--workers must be 1..{MAX_WORKERS} processes, got {workers!r}")


def run_jobs(jobs: list[tuple], fn: Callable, workers: int, stop: Callable[[], bool] = lambda: False) -> Iterator:
    """Run ``fn(*job)`` for every job, yielding ``(job, result)`` in job order.

    With ``workers > 1`` jobs run in spawned processes, in chunks of up to 8 (fewer IPC round
    trips). When a worker dies (killed, out of memory) the jobs that were in flight are retried
    one by one, each alone in a fresh process (up to :data:`SOLO_TRIES` times, as a job queued
    behind the killer may not have started yet): a job whose worker dies every time yields
    :data:`WORKER_DIED`, and the rest of the batch goes on. Once ``stop()`` returns True, the
    jobs not yet started yield :data:`NOT_STARTED`.
    """
    if workers <= 1 or len(jobs) < 2:
        for job in jobs:
            yield job, (NOT_STARTED if stop() else fn(*job))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    size = max(1, min(8, len(jobs) // (4 * workers)))
    queue = deque(jobs[i : i + size] for i in range(0, len(jobs), size))
    workers = min(workers, len(queue))  # no process without a chunk to work on
    while queue:
        suspects: list = []
        inflight: deque = deque()
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            while queue or inflight:
                broken = False
                while queue and len(inflight) < 2 * workers:
                    if stop():
                        while queue:
                            yield from ((job, NOT_STARTED) for job in queue.popleft())
                        break
                    try:
                        inflight.append((queue[0], pool.submit(_chunk, fn, queue[0])))
                    except BrokenProcessPool:  # a worker died since the last result: this chunk never started
                        broken = True
                        break
                    queue.popleft()
                if broken:
                    suspects = list(inflight)
                    break
                if not inflight:
                    break
                chunk, future = inflight.popleft()
                try:
                    results = future.result()
                except BrokenProcessPool:
                    suspects = [(chunk, future), *inflight]
                    break
                yield from zip(chunk, results, strict=False)
        for chunk, future in suspects:  # in job order; unfinished ones alone: the killer is named
            if future.done() and not future.cancelled() and future.exception() is None:
                yield from zip(chunk, future.result(), strict=False)
            else:
                for job in chunk:
                    yield job, (NOT_STARTED if stop() else _alone(fn, job, ctx))


def _chunk(fn: Callable, chunk: list[tuple]) -> list:
    return [fn(*job) for job in chunk]


#: Solo attempts of a job whose worker died in the pool.
SOLO_TRIES = 2


def _alone(fn: Callable, job: tuple, ctx):
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    for _ in range(SOLO_TRIES):
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            try:
                return pool.submit(fn, *job).result()
            except BrokenProcessPool:
                continue
    return WORKER_DIED
