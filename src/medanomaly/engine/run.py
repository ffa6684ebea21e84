"""One run folder for every task: what is in it, how it is written, and how it is checked.

A run folder holds ``config.yaml`` (what was asked), ``model.json`` (:class:`RunInfo`: the task,
class names, learned thresholds, the recorded input preprocessing, the weights files and the
software version), weights as safetensors, ``metrics.json``, ``report.html`` and ``status.json``
(``running`` -> ``complete`` or ``failed``). Every verb that reads a run (predict, evaluate,
explain, export) goes through :func:`check_run`, which refuses a folder that is not a run, whose
files are truncated or invalid, or whose training did not finish, in one line naming the folder.

JSON is written atomically (temp file + rename): a killed process never leaves half a file.

Example:
    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> _ = write_run_info(run, RunInfo(task="classification", class_names=("benign", "malignant")))
    >>> read_run_info(run).class_names
    ('benign', 'malignant')
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medanomaly.config import distinct_names
from medanomaly.errors import InputError, utf8_path
from medanomaly.jsonio import read_folder_json, read_json, write_json
from medanomaly.processes import pid_alive
from medanomaly.train.engine import WARNINGS_JSON

#: The libraries that read a run's or package's files and take only UTF-8 paths (a run folder named with byte 0xFF
#: trained, then its weights were "not a readable safetensors file": safetensors' torch reader; and the ONNX
#: exporter raised a TypeError traceback).
RUN_READERS = "safetensors and ONNX"

MODEL_JSON = "model.json"
STATUS_JSON = "status.json"
CONFIG_YAML = "config.yaml"
LOCK_FILE = ".train.lock"

__all__ = [
    "MODEL_JSON", "STATUS_JSON", "CONFIG_YAML", "RunInfo", "RunStatus", "write_json", "write_run_info",
    "read_run_info", "write_status", "read_status", "require_finished", "check_run", "training_lock",
    "prepare_run_dir", "write_finished_run", "training_warnings",
]  # fmt: skip


def software_version() -> str:
    """The installed medanomaly version (recorded in every run and package)."""
    from medanomaly import __version__

    return __version__


#: Most input channels (or modalities) a recorded model may take.
MAX_INPUT_CHANNELS = 64
_Name = Annotated[str, Field(min_length=1, max_length=200)]


class ModelInput(BaseModel):
    """``model.json``'s ``input``, checked: what each task records, typed where it is present (a task's ``load`` asks
    for the keys it needs). ``spatial_dims`` 2 or 3, ``channels`` 1..64, ``image_size`` 2 or 3 sizes within the voxel
    limit, ``modalities`` one unique name per channel. An edited or foreign model.json with a ``spatial_dims`` of 0, a
    size of -32 or 10^30, or one modality less than its channels was a traceback at the first prediction."""

    model_config = ConfigDict(extra="allow", strict=True)

    spatial_dims: Literal[2, 3] | None = None
    channels: Annotated[int, Field(ge=1, le=MAX_INPUT_CHANNELS)] | None = None
    image_size: list[Annotated[int, Field(ge=1)]] | None = Field(None, min_length=2, max_length=3)
    modalities: list[_Name] | None = Field(None, min_length=1, max_length=MAX_INPUT_CHANNELS)
    modality: _Name | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelInput:
        from medanomaly.preprocess.resize import MAX_VOXELS, voxel_count

        if self.image_size is not None and voxel_count(self.image_size) > MAX_VOXELS:
            raise ValueError(f"image_size {list(self.image_size)} is over the limit of {MAX_VOXELS:,} voxels")
        if self.modalities is not None:
            if len(set(self.modalities)) != len(self.modalities):
                raise ValueError(f"modalities {list(self.modalities)} name one twice")
            if self.channels is not None and len(self.modalities) != self.channels:
                raise ValueError(f"{len(self.modalities)} modalities for {self.channels} channels")
        return self


class RunInfo(BaseModel):
    """``model.json``: what a trained run is, in one validated object (no field is free-form code).

    Attributes:
        task: the registered task name (``classification``, ``lung_nodule``, ``fusion``, ...).
        class_names: output names, in score order.
        thresholds: learned decision values (``decision``, ``abstain``, ``temperature``,
            ``finding``...); finite numbers only.
        preprocessing: the recorded input pipeline (a list of registered TRANSFORMS steps), replayed
            by :func:`medanomaly.preprocess.pipeline.Pipeline.from_config`.
        weights: safetensors files of the run, relative to the run folder.
        input: what the model takes (``spatial_dims``, ``channels``, ``modalities``, ``modality``).
        synthetic: trained on simulated data.
        extra: task-specific settings the task's ``load`` needs (JSON values only).
        software_version: medanomaly version that wrote the run.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str
    class_names: tuple[str, ...] = ()
    thresholds: dict[str, float | None] = {}
    preprocessing: list[dict[str, Any]] = []
    weights: tuple[str, ...] = ()
    input: dict[str, Any] = {}
    synthetic: bool = False
    extra: dict[str, Any] = {}
    software_version: str = ""

    @field_validator("class_names")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not distinct_names(value):
            raise ValueError(f"class names must be distinct and non-empty, got {list(value)}")
        return value

    @field_validator("input")
    @classmethod
    def _input(cls, value: dict[str, Any]) -> dict[str, Any]:
        ModelInput.model_validate(value)  # the dict is kept as written: tasks read it by key
        return value

    @field_validator("thresholds")
    @classmethod
    def _finite(cls, value: dict[str, float | None]) -> dict[str, float | None]:
        bad = [k for k, v in value.items() if v is not None and not math.isfinite(v)]
        if bad:
            raise ValueError(f"thresholds must be finite numbers: {bad}")
        return value


class RunStatus(BaseModel):
    """``status.json``: whether training is running, complete or failed, and when."""

    model_config = ConfigDict(extra="allow")

    status: Literal["running", "complete", "failed"]
    updated: str = ""
    pid: int | None = None
    seconds: float | None = None
    reason: str | None = None
    warnings: list[str] | None = None


def write_run_info(run_dir: str | Path, info: RunInfo) -> Path:
    """Write ``model.json`` (the software version is filled in when empty)."""
    if not info.software_version:
        info = info.model_copy(update={"software_version": software_version()})
    return write_json(Path(run_dir) / MODEL_JSON, info.model_dump(mode="json"))


def read_run_info(run_dir: str | Path) -> RunInfo:
    """Read and validate ``model.json``; a missing, truncated or invalid one is one InputError."""
    run_dir = Path(run_dir)
    data = read_folder_json(run_dir, MODEL_JSON, "a trained run")
    try:
        return RunInfo.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "model.json"
        raise InputError(f"model.json is invalid: {where}: {first['msg']}", run_dir) from None


def training_warnings(run_dir: str | Path) -> list[str]:
    """What this run's training loops warned about (a model at chance level...), in the order found.

    Read from the loops' ``warnings.json`` in the run folder and up to two levels below (ensemble
    members, cross-validation folds); files older than the ``running`` record of ``status.json``
    belong to an earlier training and are ignored.
    """
    run_dir = Path(run_dir)
    since = -math.inf
    status = run_dir / STATUS_JSON
    try:
        record = read_json(status)
        if record.get("status") == "running":
            since = status.stat().st_mtime - 1.0
    except (OSError, ValueError, AttributeError):
        pass
    found: list[str] = []
    for pattern in (WARNINGS_JSON, f"*/{WARNINGS_JSON}", f"*/*/{WARNINGS_JSON}"):
        for path in sorted(run_dir.glob(pattern)):
            try:
                if path.stat().st_mtime < since:
                    continue
                items = read_json(path)
            except (OSError, ValueError):
                continue
            where = path.parent.relative_to(run_dir).as_posix()
            found += [f"{where}: {w}" if where != "." else str(w) for w in items if isinstance(w, str)]
    return found


def write_status(run_dir: str | Path, status: str, **extra: Any) -> Path:
    """Record the training state in ``status.json`` (``running``, ``complete`` or ``failed``).

    A ``complete`` record lists the training's warnings (:func:`training_warnings`, e.g. a model
    at chance level) under ``warnings`` unless given.
    """
    if status == "complete" and "warnings" not in extra:
        extra["warnings"] = training_warnings(run_dir)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record = RunStatus(status=status, updated=stamp, pid=os.getpid(), **extra)  # type: ignore[arg-type]
    return write_json(Path(run_dir) / STATUS_JSON, record.model_dump(mode="json", exclude_none=True))


def read_status(run_dir: str | Path) -> RunStatus | None:
    """The run's status, or None when it has no status.json."""
    run_dir = Path(run_dir)
    if not (run_dir / STATUS_JSON).is_file():
        return None
    try:
        return RunStatus.model_validate(read_folder_json(run_dir, STATUS_JSON, "a trained run"))
    except ValidationError:
        raise InputError("status.json is invalid", run_dir) from None


def require_finished(run_dir: str | Path) -> None:
    """Refuse a run whose training is still running, failed, or never recorded a status."""
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    if status is None:
        raise InputError("no status.json: training never finished here (or the folder is not a run)", run_dir)
    if status.status == "running":
        raise InputError("training of this run did not finish (status.json says running); train it again", run_dir)
    if status.status == "failed":
        raise InputError(f"training of this run failed ({status.reason or 'no reason recorded'})", run_dir)


def check_run(run_dir: str | Path) -> RunInfo:
    """Everything a reader of a run checks first: a folder, finished, with a valid ``model.json``
    whose weights files exist. Returns the RunInfo."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError("run folder not found", run_dir)
    utf8_path(run_dir, RUN_READERS, what="run folder")
    if not (run_dir / CONFIG_YAML).is_file():
        raise InputError("not a run folder (no config.yaml)", run_dir)
    require_finished(run_dir)
    info = read_run_info(run_dir)
    missing = [w for w in info.weights if not (run_dir / w).is_file()]
    if missing:
        raise InputError(f"weights file missing: {missing[0]}", run_dir)
    return info


def prepare_run_dir(run_dir: str | Path, overwrite: bool = False) -> Path:
    """Create a run folder for training; refuse one that already holds a run unless ``overwrite``.

    A failed attempt (status.json says failed, no model.json: e.g. stopped by bad input before training) holds
    no model, so the same command may run again once the input is fixed. Overwriting removes the previous run's
    model.json, metrics and status first, so a half-done retraining can never be mistaken for the old run.
    """
    run_dir = Path(run_dir)
    utf8_path(run_dir, RUN_READERS, what="run folder")  # before training: its weights could not be read back
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError("exists and is not a folder", run_dir)
    holds_run = any((run_dir / f).exists() for f in (MODEL_JSON, STATUS_JSON, CONFIG_YAML))
    if holds_run and not overwrite and not _failed_attempt(run_dir):
        raise InputError("already holds a run; choose another --out or pass --overwrite", run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create run folder ({exc.strerror})", run_dir) from None
    if holds_run:
        for name in (MODEL_JSON, STATUS_JSON, "metrics.json", "report.html"):
            (run_dir / name).unlink(missing_ok=True)
    return run_dir


def _failed_attempt(run_dir: Path) -> bool:
    """The folder holds only a training that failed (no model.json), or one still marked running whose process is
    gone (killed: SIGKILL, a power cut); an unreadable status counts as a run."""
    if (run_dir / MODEL_JSON).exists():
        return False
    try:
        status = read_status(run_dir)
    except InputError:
        return False
    if status is not None and status.status == "running":
        return status.pid is not None and not pid_alive(status.pid)
    return status is not None and status.status == "failed"


@contextmanager
def training_lock(run_dir: str | Path) -> Iterator[Path]:
    """One training per run folder: an exclusive lock file naming the PID; a second one is refused.

    A lock left by a process that no longer exists is taken over.
    """
    lock = Path(run_dir) / LOCK_FILE
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            pid = _lock_pid(lock)
            if pid is not None and pid_alive(pid):
                raise InputError(f"another training (pid {pid}) is writing this run folder", run_dir) from None
            lock.unlink(missing_ok=True)
    else:  # pragma: no cover - only when two processes race for a stale lock
        raise InputError("could not lock the run folder", run_dir)
    with os.fdopen(fd, "w") as fh:
        fh.write(str(os.getpid()))
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def _lock_pid(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def write_finished_run(run_dir: str | Path, config: Any, info: RunInfo) -> Path:
    """Mark a folder that already holds a model's weights as a finished run: ``config.yaml``,
    ``model.json`` and ``status.json`` (complete). For runs assembled outside ``train`` (weights
    trained elsewhere, tests); ``train`` does the same through the task."""
    from medanomaly.config import save_config

    run_dir = Path(run_dir)
    save_config(config, run_dir)
    write_run_info(run_dir, info)
    write_status(run_dir, "complete")
    return run_dir
