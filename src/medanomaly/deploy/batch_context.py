"""A batch's options and context: what changes its results (the fingerprint), how it names series, studies and
files (keyed ids), and the options checked against the model before any work.

:func:`make_context` is shared by the archive batch (:mod:`medanomaly.deploy.batch`), the PACS bridge
(:mod:`medanomaly.deploy.pacs`) and the DICOM node (:mod:`medanomaly.deploy.listener`).

Example:
    >>> ctx = BatchContext(Path("out"), "f" * 32, "r" * 16, "classification", "any", "0", False, BatchOptions(), None)
    >>> ctx.series_id_of("1.2.3"), BatchOptions(register_to_first=True).alignment
    ('1.2.3', 'register')
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medanomaly.deploy.archive import SeriesEntry
from medanomaly.deploy.results import keyed_id
from medanomaly.deploy.select import DEFAULT_MEMORY_LIMIT, selection_policy
from medanomaly.errors import InputError

__all__ = ["BatchContext", "BatchOptions", "check_options_for", "make_context", "run_fingerprint"]


@dataclass(frozen=True)
class BatchOptions:
    """Options of a batch that change its results (they enter the fingerprint).

    Attributes:
        series_filters: ``FIELD OP VALUE`` rules every run series must pass (``Modality=CT``).
        memory_limit: largest float32 series volume, bytes; larger series are refused by UID.
        dicom: write DICOM SEG + SR (findings) and Parametric Map (anomaly map) for DICOM sources.
        site: anatomic site of findings for the DICOM outputs; ``"auto"`` = lung for lung
            detection, none otherwise.
        explain: an explainer (``gradcam``, ...) whose map of each call is written as the series' Parametric Map
            (:mod:`medanomaly.deploy.explanation`); None: none.
        modality_series: a fusion model's ``NAME=REGEX`` rules telling which series of a study is which modality
            (:mod:`medanomaly.deploy.fusion_sets`).
        resample_to_first: a fusion set's modalities on other grids resampled onto the first's (same frame of
            reference only).
        register_to_first: a fusion set's other modalities registered onto the first (rigid; any frame of
            reference: :mod:`medanomaly.engine.alignment`).
        pair_by: a fusion set is one ``study``'s series, or one ``patient``'s across their studies (a CT and an MR
            of two visits; :data:`medanomaly.deploy.fusion_sets.PAIR_BY`).
        pair_wait_s: the PACS bridge and the DICOM node: a fusion set that lacks a modality waits this long for it (its
            other study may come later), then runs without it; 0: at once. Not in the fingerprint: a set that ran is
            not run again for another wait.
    """

    series_filters: tuple[str, ...] = ()
    memory_limit: int = DEFAULT_MEMORY_LIMIT
    dicom: bool = True
    site: str | None = "auto"
    explain: str | None = None
    modality_series: tuple[str, ...] = ()
    resample_to_first: bool = False
    register_to_first: bool = False
    pair_by: str = "study"
    pair_wait_s: float = 0.0

    @property
    def alignment(self) -> str:
        """How a fusion set's modalities are brought onto the first's grid (:data:`medanomaly.engine.alignment.ALIGNMENTS`)."""
        from medanomaly.engine.alignment import alignment_of

        return alignment_of(self.resample_to_first, self.register_to_first)

    def resolved_site(self, task: str) -> str | None:
        if self.site != "auto":
            return self.site
        return "lung" if task == "lung_nodule" else None


@dataclass(frozen=True)
class BatchContext:
    """Everything a worker needs to process a series (picklable: Ray ships it to its workers)."""

    out_dir: Path
    fingerprint: str
    run_id: str
    task: str
    selection: str
    software_version: str
    synthetic: bool
    options: BatchOptions
    site: str | None
    key: bytes | None = None
    sets: Mapping[str, Any] = field(default_factory=dict)  # a fusion model's sets, by their row's series key
    parameters: tuple[str, ...] = ()  # the run's thresholds, in every SR (deploy.dicom_sr.threshold_parameters)
    alignment: str = "none"  # a fusion set's, the options' or the run's own (engine.alignment.alignment_for)

    def series_id(self, entry: SeriesEntry) -> str:
        return self.series_id_of(entry.key)

    def series_id_of(self, key: str) -> str:
        """The id results show for the series of archive key ``key`` (a keyed id with a key, never its UID)."""
        return keyed_id(self.key, "series", key, "S-")

    def study_id(self, entry: SeriesEntry) -> str | None:
        return self.study_id_of(entry.study_uid) if entry.study_uid else None

    def study_id_of(self, uid: str) -> str:
        """The id results show for the study of UID ``uid`` (a keyed id with a key)."""
        return keyed_id(self.key, "study", uid, "T-")

    def file_id(self, relative_path: str) -> str:
        """A file of the archive as ``problems.csv`` shows it: its relative path, or a keyed id with a key."""
        return keyed_id(self.key, "file", relative_path, "F-")


def _hash_file(digest: Any, path: Path) -> None:
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)


def run_fingerprint(model: Any) -> str:
    """A digest of the model run: its model.json and weights files (or its ``info`` when it has no folder)."""
    digest = hashlib.sha256()
    run_dir = getattr(model, "run_dir", None)
    if run_dir is not None and (Path(run_dir) / "model.json").is_file():
        run_dir = Path(run_dir)
        digest.update((run_dir / "model.json").read_bytes())
        for name in sorted(getattr(model.info, "weights", ()) or ()):
            if (run_dir / name).is_file():
                _hash_file(digest, run_dir / name)
    else:
        info = getattr(model, "info", None)
        dump = info.model_dump(mode="json") if hasattr(info, "model_dump") else repr(info)
        digest.update(json.dumps(dump, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def make_context(model: Any, out_dir: str | Path, options: BatchOptions, key: bytes | None = None) -> BatchContext:
    """The batch context: run id, and a fingerprint over the run, the options and the key.

    Raises:
        InputError: an option that does not fit the model (:func:`check_options_for`).
    """
    from medanomaly import __version__
    from medanomaly.deploy.dicom_sr import threshold_parameters
    from medanomaly.engine.alignment import alignment_for

    check_options_for(model, options)
    run = run_fingerprint(model)
    opts = asdict(options)
    opts["series_filters"] = sorted(opts["series_filters"])
    del opts["pair_wait_s"]  # when a set runs, not what it gives: a rerun with another wait keeps what ran
    for name, default in (("explain", None), ("modality_series", ()), ("resample_to_first", False),
                          ("register_to_first", False), ("pair_by", "study")):
        if opts[name] == default:  # a batch without it keeps the fingerprint (and the output UIDs) it had before
            del opts[name]
    key_tag = hashlib.sha256(b"medanomaly-batch-key\x1f" + key).hexdigest()[:16] if key else ""
    blob = json.dumps({"run": run, "options": opts, "key": key_tag, "version": __version__}, sort_keys=True)
    task = str(model.task)
    info = getattr(model, "info", None)
    policy = selection_policy(task, info)
    return BatchContext(
        out_dir=Path(out_dir),
        fingerprint=hashlib.sha256(blob.encode()).hexdigest()[:32],
        run_id=run[:16],
        task=task,
        selection=policy,
        software_version=str(__version__),
        synthetic=bool(getattr(info, "synthetic", False)),
        options=options,
        site=options.resolved_site(task),
        key=key,
        parameters=threshold_parameters(info),
        alignment=alignment_for(model, options.alignment),
    )


def check_options_for(model: Any, options: BatchOptions) -> None:
    """The options that depend on the model, checked before any work (the CLI's node and PACS watch call it before
    they listen or poll): ``--explain`` a method the model can be explained with (not an ONNX package); a fusion
    model's pairing options name its modalities, another model takes none.

    Raises:
        InputError: one line saying which option does not fit the model.
    """
    from medanomaly.deploy.fusion_sets import FUSION_SELECTION, PAIR_BY, parse_modality_series

    if options.explain is not None:  # a model that cannot be explained: one line before any series
        from medanomaly.deploy.explanation import explainer_for

        explainer_for(model, options.explain, str(getattr(model, "run_dir", "") or "the model"))

    if options.pair_by not in PAIR_BY:
        raise InputError(f"--pair-by must be {' or '.join(PAIR_BY)}, got {options.pair_by[:32]!r}")
    if selection_policy(str(model.task), getattr(model, "info", None)) == FUSION_SELECTION:
        parse_modality_series(options.modality_series, tuple(getattr(model, "modalities", ())))
        options.alignment  # noqa: B018 - both alignments at once: one line before any work
    elif (options.modality_series or options.resample_to_first or options.register_to_first or options.pair_by != "study"
          or options.pair_wait_s):  # fmt: skip
        raise InputError("--modality-series, --pair-by, --pair-wait, --resample-to-first and --register-to-first pair a "
                         f"fusion model's modalities; this model ({model.task}) takes one series at a time")  # fmt: skip
