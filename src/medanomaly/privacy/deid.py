"""Batch de-identification of a DICOM folder: the driver behind ``medanomaly deid IN OUT``.

Each file is de-identified in memory (:mod:`medanomaly.privacy.one_file`), written by a worker to
a temporary file beside its destination ``OUT/<study>/<series>/<instance>.dcm`` (every name a
remapped UID: no PHI in file names), and moved into place by this process with ``os.replace``:
one place decides, so nothing is lost or overwritten.

* **Bad files** are refused with a fixed reason in the audit and the batch goes on; so is a
  second input with the same SOP Instance UID (the first, in sorted order, is kept) and a file
  whose worker process dies (killed, out of memory) also when retried alone, twice.
* **Resume**: ``OUT/.medanomaly/manifest.jsonl`` records each finished file (keyed ids only); the
  same command run again goes on where it stopped. ``run.json`` records the settings, profile
  version and key id: a rerun with other ones refuses, unless ``redo=True`` (``--redo``), which
  removes the earlier outputs first.
* **One run at a time** per OUT (``OUT/.medanomaly/lock`` names the PID); temporary files of a
  live run are never touched; every run writes a new audit, never overwriting one.
* **Full disk / unwritable OUT**: the files already written stay valid, the rest are refused
  (``not attempted``), the audit is still written (room for it is reserved at the start) and
  :attr:`DeidSummary.stopped` says why (the CLI prints it on one line, exit 2).

Example:
    >>> from medanomaly.privacy.deid import DeidConfig
    >>> DeidConfig().max_file_mb
    2048
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medanomaly.errors import OUTPUT_FULL, InputError, Terminated, sigterm_raises
from medanomaly.privacy.audit import Audit
from medanomaly.privacy.batch import (
    NOT_STARTED,
    STATE_DIR,
    WORKER_DIED,
    RunLock,
    check_workers,
    clean_stale_temps,
    load_manifest,
    read_record,
    record_differences,
    remove_previous_outputs,
    reserve_audit,
    run_jobs,
    state_dir,
    write_audit,
    write_record,
)
from medanomaly.privacy.one_file import (
    DeidConfig,
    FileResult,
    Refused,
    deidentify_file,
    quiet_pydicom,
)
from medanomaly.privacy.pseudonym import file_id, key_id, read_lookup, write_lookup
from medanomaly.privacy.table import profile_id

__all__ = [
    "STATE_DIR", "DeidConfig", "DeidSummary", "FileResult", "Refused", "check_folders",
    "deidentify_file", "deidentify_folder", "list_inputs", "stage",
]  # fmt: skip

_DUPLICATE = "another input has the same SOP Instance UID (the first was kept)"
_DIED = "the worker process died on this file, also when retried alone (killed or out of memory)"
_NOT_ATTEMPTED = "not attempted: the run stopped early (see the audit status)"
_LOOKUP = "the re-identification lookup file could not be written"
_UNWRITABLE = "output could not be written"
_FULL = "the output folder is full or not writable"
#: Files in a row whose worker died also when run alone before the run stops: workers that cannot
#: start (or a machine out of memory) would otherwise cost two process starts per file.
MAX_DEATHS_IN_A_ROW = 3


@dataclass(frozen=True)
class DeidSummary:
    """What a folder run did; ``stopped`` says why it stopped early (None when it did not)."""

    processed: int
    resumed: int
    refused: int
    audit_path: Path
    out_dir: Path
    refused_by_reason: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None


def stage(ds, dest: Path, fid: str) -> Path:
    """Write ``ds`` to a temporary file beside ``dest`` (named after this process); returns it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = dest.with_name(f".{dest.name}.{fid}.{os.getpid()}.tmp")
    try:
        ds.save_as(staged, enforce_file_format=True)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return staged


def list_inputs(in_dir: Path) -> list[Path]:
    """Every regular file under ``in_dir`` (recursively, sorted; hidden files included)."""
    return sorted(p for p in in_dir.rglob("*") if p.is_file())


def check_folders(in_dir: Path, out_dir: Path) -> None:
    """Raise :class:`InputError` unless ``in_dir`` is a folder and ``out_dir`` lies outside it."""
    if in_dir.is_file():
        raise InputError("is a file; deid takes a folder (pass the folder that holds it)", in_dir)
    if not in_dir.is_dir():
        raise InputError("input folder does not exist", in_dir)
    a, b = in_dir.resolve(), out_dir.resolve()
    if a == b or a in b.parents or b in a.parents:
        raise InputError("output folder must be outside the input folder (the input is never modified)", out_dir)


def check_lookup(lookup: Path | None, in_dir: Path, out_dir: Path, key: bytes) -> set[str]:
    """Check the lookup file can be written (before any work); returns the pseudonyms it holds."""
    if lookup is None:
        return set()
    lookup = Path(lookup)
    resolved = lookup.resolve()
    if out_dir.resolve() in resolved.parents or in_dir.resolve() in resolved.parents:
        raise InputError("keep the re-identification lookup file outside the input and output folders", lookup.name)
    if lookup.is_dir():
        raise InputError("is a folder; --lookup takes a file name", lookup)
    probe = lookup.with_name(f".{lookup.name}.{os.getpid()}.tmp")
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write the lookup file here ({exc.strerror or 'not writable'})", lookup) from None
    return set(read_lookup(lookup, key)) if lookup.is_file() else set()


def deidentify_folder(
    in_dir: str | Path,
    out_dir: str | Path,
    key: bytes,
    config: DeidConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
    redo: bool = False,
) -> DeidSummary:
    """De-identify every file under ``in_dir`` into ``out_dir`` (resumable; see module doc).

    Args:
        in_dir: input folder (read only).
        out_dir: output folder (created; must not overlap the input).
        key: project secret (:func:`medanomaly.privacy.pseudonym.load_key`).
        config: run settings.
        progress: called as ``progress(done, total)`` after each file.
        workers: processes working on files in parallel (1: in this process). Workers read,
            de-identify and write temporary files; this process alone moves them into place and
            keeps the lookup, manifest and audit.
        redo: when ``out_dir`` holds outputs of a run with other settings, profile or key,
            remove them and start over (without it such a folder is refused).

    Returns:
        counts, the audit path (``OUT/.medanomaly/audit-<UTC time>-<pid>.json``) and why the
        run stopped early, if it did.

    Raises:
        InputError: bad folders, an unwritable output folder or lookup file, another run
            writing into ``out_dir``, or earlier outputs made with other settings.
    """
    config = config or DeidConfig()
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    check_workers(workers)
    check_folders(in_dir, out_dir)
    known = check_lookup(config.lookup, in_dir, out_dir, key)
    state = state_dir(out_dir)
    with RunLock(state):
        record = {"settings": config.record_settings(), "profile": profile_id(), "key_id": key_id(key)}
        _check_record(state, out_dir, record, redo)
        try:
            write_record(state, record)
            clean_stale_temps(out_dir)
        except OSError as exc:
            raise InputError(f"cannot write the output folder ({exc.strerror or 'not writable'})", out_dir) from None
        with sigterm_raises():
            return _run(in_dir, out_dir, state, key, config, known, progress, workers)


def _check_record(state: Path, out_dir: Path, record: dict, redo: bool) -> None:
    if redo:
        remove_previous_outputs(state, out_dir)
        return
    if not load_manifest(state, out_dir):
        return  # nothing written before: nothing to mix with
    previous = read_record(state)
    differences = ["settings of an earlier version"] if previous is None else record_differences(previous, record)
    if differences:
        made = ("whose resume record (.medanomaly/run.json) is unreadable" if differences == ["record unreadable"]
                else f"made with other {', '.join(differences)}")  # fmt: skip
        raise InputError(f"holds outputs {made}; rerun with --redo to replace them, or choose another output folder",
                         out_dir)  # fmt: skip


@dataclass
class _Run:
    """The state this process keeps while results come in."""

    out_dir: Path
    key: bytes
    config: DeidConfig
    known: set[str]
    audit: Audit
    manifest: object
    claims: dict[str, str]
    stopped: str | None = None
    deaths_in_a_row: int = 0


def _run(in_dir, out_dir, state, key, config, known, progress, workers) -> DeidSummary:
    done = load_manifest(state, out_dir)
    audit = Audit(options={**config.describe(), "workers": workers})
    try:
        audit_path = reserve_audit(state)
    except OSError as exc:
        raise InputError(f"cannot write the audit ({exc.strerror or 'not writable'})", out_dir) from None
    files = list_inputs(in_dir)
    todo = []
    for path in files:
        fid = file_id(key, path.relative_to(in_dir).as_posix())
        if fid in done:
            audit.resumed += 1
        else:
            todo.append((path, fid, key, config, out_dir))
    count, total = audit.resumed, len(files)
    if progress is not None:
        progress(count, total)
    status = "interrupted"
    run = None
    try:
        with (state / "manifest.jsonl").open("a", encoding="utf-8") as manifest:
            run = _Run(out_dir, key, config, known, audit, manifest, {rel: fid for fid, rel in done.items()})
            for job, result in run_jobs(todo, _work, workers, stop=lambda: run.stopped is not None):
                _record(run, job[1], result)
                count += 1
                if progress is not None:
                    progress(count, total)
        status = "finished" if run.stopped is None else f"stopped: {run.stopped}"
    except Terminated:  # a scheduler's or a container's stop: the audit says so, the CLI says how to resume
        status = "terminated (SIGTERM)"
        raise Terminated("terminated (SIGTERM): the files finished so far are kept and the audit written; run the "
                         "same command again to resume") from None
    finally:
        clean_stale_temps(out_dir)
        audit.status = status
        write_audit(audit_path, audit.as_dict(), audit.compact())
    reasons = dict(Counter(item["reason"] for item in audit.refused).most_common())
    return DeidSummary(audit.processed, audit.resumed, len(audit.refused), audit_path, out_dir, reasons, run.stopped)


@dataclass
class _Done:
    """What a worker hands back: no dataset, only what the audit/lookup/manifest need."""

    file_id: str
    reason: str | None = None
    relpath: str = ""
    staged: str = ""
    counts: object = None
    pseudonym: str = ""
    original: dict | None = None
    redaction: object = None
    errno: int | None = None


def _work(path: Path, fid: str, key: bytes, config: DeidConfig, out_dir: Path) -> _Done:
    """Read, de-identify and stage one file (runs in a worker or in this process)."""
    try:
        result = deidentify_file(path, key, config)
    except Refused as exc:
        return _Done(fid, exc.reason)
    except Exception:  # noqa: BLE001 - one bad file never stops the batch; no message (may quote PHI)
        return _Done(fid, "de-identification failed")
    try:
        with quiet_pydicom():
            staged = stage(result.dataset, out_dir / result.relpath, fid)
    except OSError as exc:
        return _Done(fid, _UNWRITABLE, errno=exc.errno)
    except (ValueError, TypeError, AttributeError, OverflowError):
        return _Done(fid, _UNWRITABLE)
    out = result.outcome
    rel_staged = staged.relative_to(out_dir).as_posix()
    return _Done(fid, None, result.relpath, rel_staged, out.counts, out.pseudonym, out.original, result.redaction)


def _record(run: _Run, fid: str, done) -> None:
    """Claim the output path, then lookup, move into place, manifest, audit.

    An interruption between the steps only causes a redo of this file on the next run.
    """
    audit = run.audit
    if done is NOT_STARTED:
        audit.refuse(fid, _NOT_ATTEMPTED)
        return
    if done is WORKER_DIED:
        audit.refuse(fid, _DIED)
        run.deaths_in_a_row += 1
        if run.deaths_in_a_row >= MAX_DEATHS_IN_A_ROW:
            run.stopped = f"worker processes died on {run.deaths_in_a_row} files in a row (try --workers 1)"
        return
    run.deaths_in_a_row = 0
    if done.reason is not None:
        audit.refuse(fid, done.reason)
        if done.errno in OUTPUT_FULL:
            run.stopped = _FULL
        return
    staged = run.out_dir / done.staged
    owner = run.claims.get(done.relpath)
    if owner is not None and owner != fid:
        staged.unlink(missing_ok=True)
        audit.refuse(fid, _DUPLICATE, same_output_as=owner)
        return
    if run.config.lookup is not None and done.pseudonym not in run.known:
        try:
            write_lookup(run.config.lookup, run.key, {done.pseudonym: done.original})
        except OSError:
            staged.unlink(missing_ok=True)
            audit.refuse(fid, _LOOKUP)
            return
        run.known.add(done.pseudonym)
    try:
        os.replace(staged, run.out_dir / done.relpath)
    except OSError as exc:
        staged.unlink(missing_ok=True)
        audit.refuse(fid, _UNWRITABLE)
        if exc.errno in OUTPUT_FULL:
            run.stopped = _FULL
        return
    run.claims[done.relpath] = fid
    audit.add(done.relpath, done.counts, done.pseudonym, done.redaction)
    try:
        run.manifest.write(json.dumps({"file_id": fid, "output": done.relpath}) + "\n")
        run.manifest.flush()
    except OSError:  # the file is in place and valid; a resume redoes it
        run.stopped = _FULL
