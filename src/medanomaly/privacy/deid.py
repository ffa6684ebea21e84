"""Batch de-identification of a DICOM folder: the driver behind ``medanomaly deid IN OUT``.

For each file: size check, read, burned-in text redaction (pixels), header profile, UID remap and
file meta fix, then an atomic write (temporary file + ``os.replace``) to
``OUT/<study>/<series>/<instance>.dcm`` where every name is a remapped UID (no PHI in file names).
Bad files (unreadable, no pixel data, too large, undecodable pixels, text left after redaction)
are refused with a fixed reason in the audit and the rest goes on. The input folder is only read.

A manifest (``OUT/.medanomaly/manifest.jsonl``, keyed file ids only) records each finished file
after its output is in place, so an interrupted run re-run with the same arguments resumes where
it stopped and never leaves half-written outputs.

Example:
    >>> from medanomaly.privacy.deid import DeidConfig
    >>> DeidConfig().max_file_mb
    2048
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from medanomaly.errors import InputError
from medanomaly.privacy.audit import Audit
from medanomaly.privacy.profile import ProfileOptions, phi_terms, deidentify_dataset, set_method
from medanomaly.privacy.pseudonym import file_id, read_lookup, write_lookup
from medanomaly.privacy.uids import fix_file_meta

STATE_DIR = ".medanomaly"
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


@dataclass(frozen=True)
class DeidConfig:
    """Run settings.

    Attributes:
        options: header profile options.
        burned_in: ``auto`` (respect BurnedInAnnotation; scan US/SC/OT... when absent),
            ``always`` or ``never``.
        redact: ``all`` text regions (default) or only those OCR reads as ``phi``.
        ocr_check: after redaction, OCR the whole first frame as an independent check.
        max_file_mb: larger files are refused (MB = 2**20 bytes).
        lookup: optional encrypted re-identification lookup file to create/extend.
    """

    options: ProfileOptions = field(default_factory=ProfileOptions)
    burned_in: str = "auto"
    redact: str = "all"
    ocr_check: bool = True
    max_file_mb: float = 2048
    lookup: Path | None = None

    def describe(self) -> dict:
        """Settings for the audit (no key, no lookup path)."""
        opts = asdict(self.options)
        opts["safe_private"] = sorted(f"{c}:{e:02X}" for c, e in self.options.safe_private)
        return {
            **opts,
            "burned_in": self.burned_in,
            "redact": self.redact,
            "ocr_check": self.ocr_check,
            "max_file_mb": self.max_file_mb,
            "lookup_file": self.lookup is not None,
        }


@dataclass(frozen=True)
class DeidSummary:
    """What a folder run did."""

    processed: int
    resumed: int
    refused: int
    audit_path: Path
    out_dir: Path
    refused_by_reason: dict[str, int] = field(default_factory=dict)


class Refused(Exception):
    """A file the run will not release; ``reason`` is one of :data:`audit.REASONS`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class FileResult:
    """One de-identified dataset, ready to write (``outcome`` holds in-memory identity only)."""

    dataset: object
    outcome: object
    redaction: object
    relpath: str


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's value validation while we work: its warnings can quote element values (PHI)."""
    from pydicom import config as pconfig

    settings = pconfig.settings
    saved = (settings.reading_validation_mode, settings.writing_validation_mode)
    settings.reading_validation_mode = pconfig.IGNORE
    settings.writing_validation_mode = pconfig.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = saved


def deidentify_file(path: str | Path, key: bytes, config: DeidConfig | None = None) -> FileResult:
    """De-identify one file in memory (nothing written); pydicom warnings are silenced (PHI).

    Raises:
        Refused: with a fixed reason, for files that must not be released.
    """
    with quiet_pydicom():
        return _deidentify_file(Path(path), key, config or DeidConfig())


_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def _deidentify_file(path: Path, key: bytes, config: DeidConfig) -> FileResult:
    import pydicom
    from pydicom.errors import InvalidDicomError

    from medanomaly.privacy.burned_in import needs_scan, redact_dataset

    try:
        size = path.stat().st_size
    except OSError:
        raise Refused("not a readable DICOM file") from None
    if size > config.max_file_mb * 2**20:
        raise Refused("file larger than the size limit")
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, Exception):  # noqa: BLE001 - any reader failure: refuse, go on
        raise Refused("not a readable DICOM file") from None
    if not any(t in ds for t in _PIXEL_TAGS):
        raise Refused("no pixel data")
    if not all(str(ds.get(k, "") or "").strip() for k in _REQUIRED_UIDS):
        # The output path and the UID remap need them; such files are not valid image instances.
        raise Refused("missing a required UID (SOP Class, SOP Instance, Study or Series)")
    if _truncated(ds):
        raise Refused("pixel data cannot be decoded")
    try:
        terms = phi_terms(ds) if needs_scan(ds, config.burned_in) else []
    except Exception:  # noqa: BLE001 - a malformed header value: refuse, never print it
        raise Refused("not a readable DICOM file") from None
    flagged = str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES"
    try:
        redaction = redact_dataset(
            ds, terms=terms, policy=config.burned_in, mode=config.redact, ocr_check=config.ocr_check
        )
    except Exception:  # noqa: BLE001 - missing codec, corrupt stream, odd geometry
        raise Refused("pixel data cannot be decoded") from None
    if redaction.residual_phi:
        raise Refused("burned-in text remains after redaction")
    if flagged and redaction.scanned and not redaction.regions:
        # the device says there is text and we see none: our detector may have missed it
        raise Refused("burned-in annotation flagged but no text found (review by hand)")
    try:
        outcome = deidentify_dataset(ds, key, config.options)
        set_method(ds, config.options, pixels_cleaned=redaction.changed)
        fix_file_meta(ds)
    except Exception:  # noqa: BLE001 - never echo a value; the audit gets a fixed reason
        raise Refused("de-identification failed") from None
    rel = f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
    return FileResult(ds, outcome, redaction, rel)


_MADE_DIRS: set[Path] = set()


def _truncated(ds) -> bool:
    """True when native (uncompressed) Pixel Data is shorter than its rows x columns x frames x samples."""
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if "PixelData" not in ds or tsyntax is None or tsyntax.is_compressed:
        return False
    try:
        bits = int(ds.BitsAllocated)
        n = int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.get("SamplesPerPixel", 1))
    except (AttributeError, TypeError, ValueError):
        return True
    expected = (n * bits + 7) // 8
    return len(ds.PixelData) < expected


def write_atomic(ds, dest: Path) -> None:
    """Write ``ds`` to ``dest`` via a temporary file in the same folder and ``os.replace``."""
    if dest.parent not in _MADE_DIRS or not dest.parent.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        _MADE_DIRS.add(dest.parent)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


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


def _load_manifest(path: Path, out_dir: Path) -> set[str]:
    done: set[str] = set()
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption
            if (out_dir / entry["output"]).is_file():
                done.add(entry["file_id"])
    return done


def _clean_stale(out_dir: Path) -> None:
    for tmp in out_dir.rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def deidentify_folder(
    in_dir: str | Path,
    out_dir: str | Path,
    key: bytes,
    config: DeidConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> DeidSummary:
    """De-identify every file under ``in_dir`` into ``out_dir`` (resumable; see module doc).

    Args:
        in_dir: input folder (read only).
        out_dir: output folder (created; must not overlap the input).
        key: project secret (:func:`medanomaly.privacy.pseudonym.load_key`).
        config: run settings.
        progress: called as ``progress(done, total)`` after each file.
        workers: processes working on files in parallel (1: in this process). Workers read,
            de-identify and write; this process alone keeps the lookup, manifest and audit.

    Returns:
        counts and the audit path (``OUT/.medanomaly/audit-<UTC time>.json``).
    """
    config = config or DeidConfig()
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    check_folders(in_dir, out_dir)
    if config.lookup is not None:
        lk = Path(config.lookup).resolve()
        if out_dir.resolve() in lk.parents or in_dir.resolve() in lk.parents:
            raise InputError("keep the re-identification lookup file outside the input and output folders", lk.name)
    state = out_dir / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    _clean_stale(out_dir)
    manifest_path = state / "manifest.jsonl"
    done = _load_manifest(manifest_path, out_dir)
    known = set(read_lookup(config.lookup, key)) if config.lookup and Path(config.lookup).is_file() else set()

    audit = Audit(options={**config.describe(), "workers": workers})
    files = list_inputs(in_dir)
    total = len(files)
    todo = []
    for path in files:
        fid = file_id(key, path.relative_to(in_dir).as_posix())
        if fid in done:
            audit.resumed += 1
        else:
            todo.append((path, fid))
    count = audit.resumed
    if progress is not None:
        progress(count, total)
    with manifest_path.open("a", encoding="utf-8") as manifest:
        for result in _run(todo, key, config, out_dir, workers):
            _record(result, config, key, audit, manifest, known)
            count += 1
            if progress is not None:
                progress(count, total)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    audit_path = audit.write(state / f"audit-{stamp}.json")
    reasons = dict(Counter(item["reason"] for item in audit.refused).most_common())
    return DeidSummary(audit.processed, audit.resumed, len(audit.refused), audit_path, out_dir, reasons)


@dataclass
class _Done:
    """What a worker hands back: no dataset, only what the audit/lookup/manifest need."""

    file_id: str
    reason: str | None = None
    relpath: str = ""
    counts: object = None
    pseudonym: str = ""
    original: dict | None = None
    redaction: object = None


def _work(path: Path, fid: str, key: bytes, config: DeidConfig, out_dir: Path) -> _Done:
    """Read, de-identify and atomically write one file (runs in a worker or in this process)."""
    try:
        result = deidentify_file(path, key, config)
    except Refused as exc:
        return _Done(fid, exc.reason)
    except Exception:  # noqa: BLE001 - one bad file never stops the batch; no message (may quote PHI)
        return _Done(fid, "de-identification failed")
    try:
        with quiet_pydicom():
            write_atomic(result.dataset, out_dir / result.relpath)
    except (OSError, ValueError, TypeError, AttributeError):
        return _Done(fid, "output could not be written")
    outcome = result.outcome
    return _Done(fid, None, result.relpath, outcome.counts, outcome.pseudonym, outcome.original, result.redaction)


def _work_packed(args) -> _Done:
    return _work(*args)


def _run(todo, key, config, out_dir, workers):
    if workers <= 1 or len(todo) < 2:
        for path, fid in todo:
            yield _work(path, fid, key, config, out_dir)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    jobs = [(path, fid, key, config, out_dir) for path, fid in todo]
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        yield from pool.map(_work_packed, jobs, chunksize=8)


def _record(done: _Done, config, key, audit, manifest, known) -> None:
    """Lookup, then manifest, then audit: an interruption between them only causes a redo."""
    if done.reason is not None:
        audit.refuse(done.file_id, done.reason)
        return
    if config.lookup is not None and done.pseudonym not in known:
        write_lookup(config.lookup, key, {done.pseudonym: done.original})
        known.add(done.pseudonym)
    manifest.write(json.dumps({"file_id": done.file_id, "output": done.relpath}) + "\n")
    manifest.flush()
    audit.add(done.relpath, done.counts, done.pseudonym, done.redaction)
