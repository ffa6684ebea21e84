"""Batch inference over an archive: every series in, one result row per series out; resumable.

``run_batch(model, ARCHIVE, OUT)`` walks the archive (:mod:`medanomaly.deploy.archive`), decides
per series (:mod:`medanomaly.deploy.select`), then for each series to run: reads it (the next one
is read while the current one is predicted: at most two volumes in memory), predicts, writes the
DICOM SEG/SR/Parametric Map when there are findings or a map (DICOM sources only), and writes
the series record last. ``results.csv`` / ``results.parquet`` are rebuilt from the records at the
end, ``problems.csv`` lists the files that could not be used.

Resuming: a series whose record carries the same fingerprint (model run + options) is not
processed again; a record of another run or other options is redone. Killed at any moment
(``kill -9``), a rerun finishes the rest: nothing missing, nothing twice. A bad series becomes a
row with status ``error`` and its reason; the batch goes on. Only one batch may write into an
output folder at a time (a lock file).

Example:
    >>> from medanomaly.engine import load_model                            # doctest: +SKIP
    >>> summary = run_batch(load_model("runs/lung"), "/data/archive", "out")  # doctest: +SKIP
    >>> summary.counts                                                       # doctest: +SKIP
    {'done': 180, 'skipped': 12, 'refused': 1, 'error': 7}
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medanomaly.deploy.archive import (FRAME_ALONE_ADVICE, Problem, SeriesEntry, named_files, numbered_files,
                                       read_series, skipped_problems, walk_archive)
from medanomaly.deploy.batch_context import BatchContext, BatchOptions, check_options_for, make_context, run_fingerprint
from medanomaly.deploy.results import file_safe, load_record, record_path, write_problems, write_record, write_tables
from medanomaly.deploy.select import Decision, select_series
from medanomaly.deploy.series_links import remove_orphaned_series_links
from medanomaly.engine.verbs import predict_aligned
from medanomaly.errors import OUTPUT_FULL, InputError, Terminated, unexpected_reason
from medanomaly.io.frames import reword_frame_advice
from medanomaly.types import Prediction

log = logging.getLogger(__name__)

__all__ = ["BatchContext", "BatchOptions", "BatchSummary", "make_context", "process_series", "resumable_on_sigterm",
           "run_batch", "run_fingerprint", "check_options_for"]  # fmt: skip

#: Statuses a record may have. "done": predicted; "skipped": not for this task; "refused": too
#: large; "error": could not be read or predicted (reason given).
STATUSES = ("done", "skipped", "refused", "error")


@dataclass
class BatchSummary:
    """What a batch did: counts per status, series reused from an earlier run, the output files."""

    counts: dict[str, int] = field(default_factory=dict)
    reused: int = 0
    processed: int = 0
    seconds: float = 0.0
    results_csv: Path | None = None
    results_parquet: Path | None = None
    problems_csv: Path | None = None
    n_problems: int = 0


def _base_record(entry: SeriesEntry, ctx: BatchContext, status: str, reason: str = "") -> dict[str, Any]:
    fusion = ctx.sets.get(entry.key)
    return {
        "fingerprint": ctx.fingerprint,
        "series_id": ctx.series_id(entry),
        "study_id": ctx.study_id(entry),
        "modality": entry.modality,
        "status": status,
        "reason": reason,
        "task": ctx.task,
        "run_id": ctx.run_id,
        "software_version": ctx.software_version,
        "synthetic_model": ctx.synthetic,
        **({"fusion": fusion.ids(ctx.series_id)} if fusion is not None else {}),
    }


def _prediction_fields(prediction: Prediction) -> dict[str, Any]:
    volumes = [f.measurements.volume_ml for f in prediction.findings if f.measurements is not None]
    score = getattr(prediction, "score", None)
    if score is None:
        score = float(prediction.scores[-1]) if prediction.scores else None
    return {
        "label": prediction.label,
        "decision": getattr(prediction, "decision", prediction.label),
        "abstained": bool(prediction.abstained),
        "score": score if score is None or math.isfinite(score) else None,
        "probabilities": dict(zip(prediction.class_names, map(float, prediction.scores), strict=False)),
        "n_findings": len(prediction.findings),
        "largest_lesion_ml": max(volumes) if volumes else None,
        "prediction": prediction.to_json(),
    }


def _dicom_source(entry: SeriesEntry, volume: Any, ctx: BatchContext) -> Any:
    """The source headers of a DICOM series whose SEG/SR/map will be written, checked before the model runs (a
    source the outputs cannot reference is the series' error without the model's work), else None."""
    from medanomaly.deploy.dicom_source import load_source_series

    if not ctx.options.dicom or entry.kind != "dicom":
        return None
    try:
        return load_source_series(entry.files, volume)
    except InputError as exc:
        raise InputError(f"{exc.reason} (--no-dicom predicts without DICOM outputs)", exc.path) from None


def _explanation(model: Any, inputs: Any, prediction: Prediction, ctx: BatchContext, record: dict[str, Any]) -> Any:
    """The explanation map of a call on ``inputs`` (an image, or a fusion set's modalities) with ``--explain`` (None
    without it, for a model with its own map, or when it cannot be made: the call stands, the reason in
    ``record["explanation"]``)."""
    from medanomaly.deploy.explanation import explained, explainer_for

    method = ctx.options.explain
    if method is None or prediction.anomaly_map is not None:
        return None
    result = explained(explainer_for(model, method, ctx.run_id), _explained_input(model, inputs), prediction,
                       lambda exc: exc.reason if isinstance(exc, InputError) else unexpected_reason(exc))  # fmt: skip
    if result is None:
        return None
    record["explanation"] = result[1]
    return result[0]


def _explained_input(model: Any, inputs: Any) -> Any:
    """What an explanation of the call on ``inputs`` takes: the image, or a fusion set's modalities stacked."""
    if not isinstance(inputs, Mapping):
        return inputs
    from medanomaly.engine.verbs import explanation_input

    return explanation_input(model, inputs, "the study has no {}")


def _dicom_outputs(source: Any, entry: SeriesEntry, volume: Any, prediction: Prediction, ctx: BatchContext,
                   explanation: Any = None, inputs: Any = None) -> dict[str, str]:  # fmt: skip
    """Write SEG/SR/map for a DICOM series with findings, a map, a whole-image call (an SR of the class) or, for a
    detector, none found (an SR saying so), and a fusion set's registrations (``inputs``: its modalities) as a REG;
    paths relative to the output folder."""
    from medanomaly.deploy.dicom_call_sr import FINDING_TASKS
    from medanomaly.deploy.dicom_out import has_dicom_results, write_dicom_outputs
    from medanomaly.deploy.dicom_sr import alignment_parameters

    if source is None or not has_dicom_results(prediction, ctx.task):
        return {}
    folder = file_safe(ctx.series_id(entry))
    score_map, label = prediction.anomaly_map, "anomaly score"
    if score_map is None and explanation is not None:
        score_map, label = explanation, f"{ctx.options.explain} attribution"
    evidence, reg = [], None
    if entry.key in ctx.sets:  # a fusion call: made from the study's other modalities too, maybe registered (a REG)
        from medanomaly.deploy.dicom_reg import registered_series, write_registration
        from medanomaly.deploy.fusion_sets import partner_headers

        partners = partner_headers(ctx.sets[entry.key], entry)
        evidence = [ds for headers in partners.values() for ds in headers]
        reg = write_registration(ctx.out_dir / "dicom" / folder / "reg.dcm", source, registered_series(partners, inputs),
                                 run_id=ctx.fingerprint, algorithm=ctx.task)  # fmt: skip
    out = write_dicom_outputs(
        prediction.findings, source, volume, ctx.out_dir / "dicom" / folder, run_id=ctx.fingerprint,
        site=ctx.site, algorithm=ctx.task, score_map=score_map, map_label=label, call=prediction,
        report_none=ctx.task in FINDING_TASKS,  # a detector that finds nothing says so
        evidence=evidence, parameters=ctx.parameters + alignment_parameters(prediction),
    )  # fmt: skip
    named = {"seg": out.seg, "rtstruct": out.rtstruct, "sr": out.sr, "parametric_map": out.parametric_map, "reg": reg}
    return {k: str(p.relative_to(ctx.out_dir)) for k, p in named.items() if p is not None}


def process_series(model: Any, entry: SeriesEntry, ctx: BatchContext, volume: Any = None) -> dict[str, Any]:
    """Read (unless given), predict and write the outputs and record of one series; returns the record.

    Never raises for a bad series: the record then has status ``error`` and the reason.
    """
    start = time.perf_counter()
    try:
        if entry.key in ctx.sets:  # a fusion model: the study's series of each modality together
            from medanomaly.deploy.fusion_sets import read_set

            inputs, volume = read_set(entry, ctx, volume)
        else:
            if volume is None:
                volume = read_series(entry, ctx.options.memory_limit, ctx.series_id(entry))
            if hasattr(model, "check_input"):
                model.check_input(volume, f"series {entry.key}")
            inputs = volume
        source = _dicom_source(entry, volume, ctx)
        prediction = predict_aligned(model, inputs) if entry.key in ctx.sets else model.predict(inputs)
        record = _base_record(entry, ctx, "done")
        record["skipped"] = [list(pair) for pair in zip(volume.meta.get("skipped_files", ()),
                                                          volume.meta.get("skipped_reasons", ()), strict=False)]
        if entry.key in ctx.sets:
            from medanomaly.deploy.fusion_sets import partner_skips

            record["skipped_partners"] = partner_skips(ctx.sets[entry.key], entry, inputs, ctx.series_id)
        record.update(_prediction_fields(prediction))
        explanation = _explanation(model, inputs, prediction, ctx, record) if source is not None else None
        record["dicom"] = _dicom_outputs(source, entry, volume, prediction, ctx, explanation, inputs)
    except InputError as exc:  # a batch takes no --frame: a cine or a 4D image is predicted from its own file
        reason = reword_frame_advice(exc.reason, FRAME_ALONE_ADVICE)
        record = _base_record(entry, ctx, "error", reason)
        if getattr(exc, "series_key", None):  # another series of a fusion set: problems.csv names its files
            record["partner_error"] = {"series": ctx.series_id_of(exc.series_key), "reason": exc.reader_reason}
    except Exception as exc:  # noqa: BLE001 - one bad series must not stop an archive run
        log.debug("series %s failed", entry.key, exc_info=True)
        record = _base_record(entry, ctx, "error", unexpected_reason(exc))
    record["seconds"] = round(time.perf_counter() - start, 3)
    write_record(ctx.out_dir, record)
    return record


def _finished(entry: SeriesEntry, ctx: BatchContext, retry_errors: bool) -> dict[str, Any] | None:
    """The existing record of a series when it is finished under this fingerprint, else None."""
    record = load_record(record_path(ctx.out_dir, ctx.series_id(entry)))
    if record is None or record.get("fingerprint") != ctx.fingerprint or record.get("status") not in STATUSES:
        return None
    if retry_errors and record["status"] == "error":
        return None
    fusion = ctx.sets.get(entry.key)
    if fusion is not None and record.get("fusion") != fusion.ids(ctx.series_id):
        return None  # the study's set changed (a series added or removed since): run again
    return record


@contextmanager
def batch_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``<out>/.batch.lock``; a second batch on the same folder is refused in one line."""
    import fcntl

    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / ".batch.lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError("another batch is writing into this output folder", out_dir) from None
        yield


def _run_local(model: Any, todo: Sequence[SeriesEntry], ctx: BatchContext, advance: Callable[[dict], None]) -> None:
    """Process series one by one; the next series is read in a thread while this one is predicted."""

    def read(entry: SeriesEntry) -> Any:
        try:
            return read_series(entry, ctx.options.memory_limit, ctx.series_id(entry))
        except InputError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="medanomaly-read") as pool:
        pending: Future | None = pool.submit(read, todo[0]) if todo else None
        for i, entry in enumerate(todo):
            volume = pending.result() if pending is not None else None
            pending = pool.submit(read, todo[i + 1]) if i + 1 < len(todo) else None
            if isinstance(volume, InputError):
                record = _base_record(entry, ctx, "error", volume.reason)
                record["seconds"] = 0.0
                write_record(ctx.out_dir, record)
            else:
                record = process_series(model, entry, ctx, volume)
            del volume
            advance(record)


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[dict], None]]:
    """A rich progress bar (count, elapsed, ETA, per-status tallies); a no-op when disabled."""
    tally = dict.fromkeys(STATUSES, 0)
    if not enabled:
        yield lambda record: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]series"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn(), TextColumn("{task.description}"))  # fmt: skip
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("", total=total)

        def advance(record: dict) -> None:
            tally[record["status"]] = tally.get(record["status"], 0) + 1
            bar.update(task, advance=1, description=" ".join(f"{k}={v}" for k, v in tally.items() if v))

        yield advance


def run_batch(
    model: Any,
    archive: str | Path,
    out_dir: str | Path,
    options: BatchOptions | None = None,
    *,
    key: bytes | None = None,
    retry_errors: bool = False,
    progress: bool = True,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    model_factory: Callable[[], Any] | None = None,
) -> BatchSummary:
    """Run a model over every series of an archive; write records, results tables and problems.

    Args:
        model: a loaded model (``medanomaly.engine.load_model``) or any object with ``task``,
            ``info`` and ``predict(volume) -> Prediction``.
        archive: folder tree of DICOM / NIfTI / NRRD files (or one file).
        out_dir: output folder: ``results.csv``, ``results.parquet``, ``problems.csv``,
            ``series/<id>.json``, ``dicom/<id>/{seg,sr,map}.dcm``.
        options: what changes results (filters, memory limit, DICOM outputs, site).
        key: secret for keyed (HMAC) series/study ids instead of UIDs, and keyed file ids in
            problems.csv; None = UIDs and relative paths.
        retry_errors: process again series whose earlier record is an error.
        progress: show a progress bar with ETA.
        engine: ``"local"`` (this process) or ``"ray"`` (Ray Data; ``medanomaly[scale]``).
        address: Ray cluster address (``engine="ray"``); None = a local Ray with ``workers`` CPUs.
        workers: number of Ray workers (default: 2).
        model_factory: how a Ray worker gets the model (default: load the run folder again).

    Raises:
        InputError: the archive is missing, a filter rule is invalid, or the folder is locked.
    """
    from medanomaly.deploy.fusion_sets import with_fusion_sets

    options = options or BatchOptions()
    out_dir = Path(out_dir)
    start = time.perf_counter()
    with batch_lock(out_dir):
        remove_orphaned_series_links()  # what a batch killed outright (SIGKILL) left in the temporary folder
        ctx = make_context(model, out_dir, options, key)
        index = walk_archive(archive)
        decisions = select_series(index.series, ctx.selection, options.series_filters, options.memory_limit,
                                  ctx.series_id_of)
        decisions, ctx = with_fusion_sets(model, decisions, ctx)
        summary = BatchSummary(n_problems=len(index.problems))
        records, todo = _plan(decisions, ctx, retry_errors, summary)
        summary.processed = len(todo)
        with _progress(progress, len(todo)) as advance, _stop_when_output_full(out_dir), resumable_on_sigterm():
            if engine == "local":
                _run_local(model, todo, ctx, advance)
            elif engine == "ray":
                from medanomaly.deploy.ray_engine import run_on_ray

                run_on_ray(model, todo, ctx, advance, address=address, workers=workers, model_factory=model_factory)
            else:
                raise InputError(f"unknown engine {engine!r} (local, ray)")
        with _stop_when_output_full(out_dir):
            return _finish(decisions, ctx, index, records, summary, start)


@contextmanager
def resumable_on_sigterm() -> Iterator[None]:
    """SIGTERM (a scheduler's or a container's stop) ends an archive run or a PACS watch with
    :class:`~medanomaly.errors.Terminated` saying that the finished series are kept and how to resume (exit 143 from
    the CLI); it had ended the process at once, without a word. The records written so far are whole (staged
    writes), so a rerun resumes after them."""
    from medanomaly.errors import sigterm_raises

    try:
        with sigterm_raises():
            yield
    except Terminated:
        raise Terminated("terminated (SIGTERM): the series finished so far are kept; run the same command again "
                         "to resume") from None


@contextmanager
def _stop_when_output_full(out_dir: Path) -> Iterator[None]:
    """An output folder that takes no more files (full disk, quota, read-only) stops the run in one line: every
    series would fail the same way. The records written so far are whole, so a rerun resumes after them."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in OUTPUT_FULL:
            raise
        raise InputError(f"the output folder is full or not writable ({exc.strerror or exc}): stopped; the series "
                         "finished so far are kept, run the same command again to resume", out_dir) from None


def _plan(decisions: Sequence[Decision], ctx: BatchContext, retry_errors: bool,
          summary: BatchSummary) -> tuple[dict[str, dict], list[SeriesEntry]]:  # fmt: skip
    """Reuse finished records of series to run; write skip/refuse records; return the series still to run."""
    records: dict[str, dict] = {}
    todo = []
    for d in decisions:
        if d.status == "run":
            previous = _finished(d.entry, ctx, retry_errors)
            if previous is not None and previous["status"] in ("done", "error"):
                records[d.entry.key] = previous
                summary.reused += 1
            else:
                todo.append(d.entry)
        else:  # cheap: always rewritten, so the reason follows the current archive
            record = _base_record(d.entry, ctx, d.status, d.reason)
            write_record(ctx.out_dir, record)
            records[d.entry.key] = record
    return records, todo


def _finish(decisions: Sequence[Decision], ctx: BatchContext, index: Any, records: dict[str, dict],
            summary: BatchSummary, start: float) -> BatchSummary:  # fmt: skip
    """Collect every decision's record (from disk), write the tables and problems.csv."""
    rows: list[dict[str, Any]] = []
    read_problems: list[Problem] = []
    for d in decisions:
        record = records.get(d.entry.key) or load_record(record_path(ctx.out_dir, ctx.series_id(d.entry)))
        if record is None or record.get("fingerprint") != ctx.fingerprint:
            record = _base_record(d.entry, ctx, "error", "no result was recorded (worker lost)")
        reason = record.get("reason") or ""
        numbered = numbered_files(d.entry, reason)
        if record["status"] == "error" and numbered != reason:
            # the reader named its temporary links: problems.csv names the archive's files, the result numbers them
            read_problems.append(Problem(ctx.series_id(d.entry), named_files(d.entry, reason, index.root, ctx.file_id),
                                         kind="series"))  # fmt: skip
            record = {**record, "reason": numbered + " (files named in problems.csv)"}
        rows.append(record)
        summary.counts[record["status"]] = summary.counts.get(record["status"], 0) + 1
    summary.results_csv, summary.results_parquet = write_tables(ctx.out_dir, rows)
    read_problems += [p for d, row in zip(decisions, rows, strict=True)
                      for p in skipped_problems(d.entry, row.get("skipped", ()), index.root, ctx.file_id)]  # fmt: skip
    if ctx.sets:  # a fusion set's other series: their skipped files too
        from medanomaly.deploy.fusion_sets import partner_problems

        read_problems += [p for d, row in zip(decisions, rows, strict=True) if d.entry.key in ctx.sets
                          for p in partner_problems(ctx.sets[d.entry.key], row, index.root, ctx.file_id,
                                                    ctx.series_id)]  # fmt: skip
    summary.problems_csv = write_problems(ctx.out_dir, [*index.problems, *read_problems], ctx.key)
    summary.n_problems += len(read_problems)
    summary.seconds = time.perf_counter() - start
    return summary
