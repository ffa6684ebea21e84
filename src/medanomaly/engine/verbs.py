"""The verbs, written once for every task: train, load, evaluate, predict.

The CLI, export, batch inference and the service call these; none of them knows a task by name.

Example:
    >>> from medanomaly.engine import load_model          # doctest: +SKIP
    >>> model = load_model("runs/breast")                  # doctest: +SKIP
    >>> model.predict(medanomaly.read("mammo.dcm")).label  # doctest: +SKIP
    'benign'
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

from medanomaly.config import RunConfig, env_whole_number, load_config, parse_config, save_config
from medanomaly.engine.contract import TaskModel
from medanomaly.engine.run import (check_run, prepare_run_dir, read_run_info, training_lock,
                                   write_status)
from medanomaly.errors import ConfigError, InputError, Terminated, about_file, out_of_memory, sigterm_raises
from medanomaly.types import Prediction

__all__ = ["PACKAGE_MANIFEST", "train_run", "load_model", "evaluate_run", "predict_paths", "predict_multimodal", "predict_modalities", "predict_aligned", "stack_modalities", "stacked", "default_out", "is_main_process", "get_task"]


#: The file that marks an exported package folder (written by :mod:`medanomaly.deploy.package`).
PACKAGE_MANIFEST = "manifest.json"


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a ``torchrun`` job (only rank 0 writes the run)."""
    return env_whole_number("RANK", 0) == 0


#: How much of a name a default output folder keeps (with the verb and the time, well under 255 bytes).
DEFAULT_OUT_NAME_CHARS = 100


def default_out(verb: str, name: str, *, fresh: bool = True) -> Path:
    """The one default output rule of every verb that writes: ``runs/<verb>-<name>-<YYYYmmdd-HHMMSS>``, always one
    folder inside ``runs/``: ``name`` (a config's ``name``, an input's file name) keeps letters, digits, ``.``, ``_``
    and ``-``, anything else becomes ``_`` (a config named ``../../../x`` wrote its run outside ``runs/``), and its
    first :data:`DEFAULT_OUT_NAME_CHARS` characters (an input of a 248-character name made a folder name longer than
    a file system takes: "File name too long", though the user had named no folder); ``-2``, ``-3``... when that
    folder already exists (``fresh=False``: the name as it is, for the other processes of a multi-process training,
    whose first process has made the folder by then).

    Example:
        >>> default_out("train", "../../etc/x").parent, default_out("train", "../../etc/x").name[:18]
        (PosixPath('runs'), 'train-.._.._etc_x-')
    """
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:DEFAULT_OUT_NAME_CHARS] or "run"
    out = base = Path("runs") / f"{verb}-{safe}-{stamp}"
    number = 1
    # a second command on an input of the same name within the same second (a script's loop over a/scan.nii,
    # b/scan.nii) wrote into the first one's folder, over its results
    while fresh and out.exists():
        number += 1
        out = base.with_name(f"{base.name}-{number}")
    return out


def get_task(name: str, where: Any = None) -> Any:
    """The registered task called ``name``; an unknown one is one line naming ``where``."""
    from medanomaly.registry import TASKS

    try:
        return TASKS.get(name)
    except ConfigError as exc:
        raise InputError(exc.reason, where) from None


def as_run_config(config: RunConfig | Mapping[str, Any] | str | Path) -> RunConfig:
    """``config`` as a validated :class:`~medanomaly.config.RunConfig`: a YAML file's path, a mapping (a library
    caller's dict, validated as the file would be: an unknown key or a bad value is one ConfigError line), or a
    config already validated; anything else is a TypeError saying what is taken (a dict had failed with
    "'dict' object has no attribute 'name'")."""
    if isinstance(config, (str, Path)):
        return load_config(config)
    if isinstance(config, Mapping):
        return parse_config(dict(config))
    if isinstance(config, RunConfig):
        return config
    raise TypeError(f"a config is a YAML file's path, a dict or a RunConfig, got {type(config).__name__}")


def train_run(config: RunConfig | Mapping[str, Any] | str | Path, out: str | Path | None = None,
              overwrite: bool = False, **task_options: Any) -> Path:  # fmt: skip
    """Train the task a config describes into a run folder, with the run's lock and status.

    ``status.json`` says ``running`` while training, then ``complete`` (with seconds) or ``failed``
    (with the reason); ``config.yaml`` is written first. Under ``torchrun`` only rank 0 prepares and
    marks the folder; every rank trains.

    Args:
        config: the path of a YAML config, a dict of one (validated as the file would be), or a validated config.
        out: run folder (default ``runs/train-<name>-<time>``).
        overwrite: allow training into a folder that already holds a run.
        task_options: passed to the task's ``train`` (e.g. ``out_dir`` for the lung report).

    Raises:
        InputError: the folder already holds a run (without ``overwrite``), another training holds
            its lock, or the config is invalid.
    """
    cfg = as_run_config(config)
    name = cfg.name or (Path(config).stem if isinstance(config, (str, Path)) else cfg.task)
    run_dir = Path(out) if out is not None else default_out("train", name, fresh=is_main_process())
    task = get_task(cfg.task, config if isinstance(config, (str, Path)) else None)
    if not is_main_process():
        task.train(cfg, run_dir, **task_options)
        return run_dir
    prepare_run_dir(run_dir, overwrite)
    with training_lock(run_dir), sigterm_raises():
        save_config(cfg, run_dir)
        write_status(run_dir, "running")
        start = time.perf_counter()
        try:
            # a method's parameters are checked when the task builds it: a ConfigError then names the config file
            with about_file(config, ConfigError) if isinstance(config, (str, Path)) else nullcontext():
                task.train(cfg, run_dir, **task_options)
            read_run_info(run_dir)  # the task must have written a valid model.json
        except BaseException as exc:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else (out_of_memory(exc) or _one_line(exc))
            write_status(run_dir, "failed", reason=str(exc) if isinstance(exc, Terminated) else reason)
            raise
        write_status(run_dir, "complete", seconds=round(time.perf_counter() - start, 1))
    return run_dir


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def load_model(run_dir: str | Path) -> TaskModel:
    """Load a finished run of any task (checked first: see :func:`medanomaly.engine.run.check_run`),
    or an exported package folder (one with ``manifest.json``) through the ``onnx`` entry of :data:`medanomaly.registry.PACKAGE_LOADERS`."""
    run_dir = Path(run_dir)
    if (run_dir / PACKAGE_MANIFEST).is_file() and not (run_dir / "config.yaml").is_file():
        from medanomaly.registry import PACKAGE_LOADERS  # filled by the deploy layer, imported by name

        return PACKAGE_LOADERS.get("onnx")(run_dir)
    info = check_run(run_dir)
    task = get_task(info.task, run_dir)
    return task.load(run_dir, info)


def evaluate_run(run_dir: str | Path, split: str = "test") -> dict[str, Any]:
    """Evaluate a finished run on ``split``: writes ``metrics.json`` and ``report.html``."""
    run_dir = Path(run_dir)
    info = check_run(run_dir)
    return get_task(info.task, run_dir).evaluate(run_dir, split)


def predict_paths(model: TaskModel, paths: Iterable[str | Path], read_options: dict[str, Any] | None = None,
                  frame: int | None = None) -> Iterator[tuple[Path, Prediction | InputError, Any]]:  # fmt: skip
    """Predict image files one by one; a bad file yields its ``InputError`` and the rest go on. ``frame``: each
    file is a cine loop or a 4D image of which this frame or volume is predicted (:func:`medanomaly.io.frames.read_frame`).

    Yields:
        ``(path, Prediction or InputError, Volume or None)`` in input order.
    """
    from medanomaly.io.frames import read_frame

    for path in map(Path, paths):
        try:
            with about_file(path):
                volume = read_frame(path, frame, **(read_options or {}))
                prediction = model.predict(volume)  # checks the image first (ModelBase.check_input)
        except InputError as exc:
            yield path, exc, None
            continue
        yield path, prediction, volume


def predict_multimodal(model: TaskModel, paths: Mapping[str, str | Path | None], alignment: str = "none",
                       ) -> tuple[Path, Prediction | InputError, Any]:  # fmt: skip
    """Predict one case from one file per modality (None = missing, flagged by the model; ``alignment``: how the
    modalities are brought onto the first's grid, :mod:`medanomaly.engine.alignment`).

    Returns:
        ``(first path, Prediction or InputError, None)``, like one item of :func:`predict_paths`; an error the
        model raises over the images together (a modality behind the wrong key, grids that differ) names the files.
    """
    given = [Path(p) for p in paths.values() if p is not None]
    first = given[0] if given else Path("-")
    try:
        return first, predict_modalities(model, paths, alignment)[1], None
    except InputError as exc:
        return first, exc, None


def predict_modalities(model: TaskModel, paths: Mapping[str, str | Path | None], alignment: str = "none",
                       ) -> tuple[dict[str, Any], Prediction]:  # fmt: skip
    """Read one file (or DICOM folder) per modality (None = missing) and predict them together (``alignment``: each
    other one resampled or registered onto the first's grid, :func:`medanomaly.engine.alignment.align_to_first`;
    ``none``: the run's own, :func:`~medanomaly.engine.alignment.alignment_for`; a registration is said in the
    prediction's flags).

    Returns:
        ``(the Volume of each modality, None where missing; the Prediction)``.

    Raises:
        InputError: a file that cannot be read, or the model's checks of the images together, naming the inputs.
    """
    from medanomaly.engine.alignment import align_to_first, alignment_for

    with _naming_inputs(paths):
        volumes = align_to_first(_read_modalities(model, paths), alignment_for(model, alignment))
        return volumes, predict_aligned(model, volumes)


def predict_aligned(model: TaskModel, volumes: Mapping[str, Any]) -> Prediction:
    """The model's prediction of modalities already on one grid, with a flag for each one registered onto the first
    (:func:`medanomaly.engine.alignment.registration_flags`): the transform found stays with the call."""
    from dataclasses import replace

    from medanomaly.engine.alignment import registration_flags

    prediction = model.predict(volumes)  # type: ignore[arg-type]
    flags = registration_flags(volumes)
    return replace(prediction, flags=prediction.flags + flags) if flags else prediction


def stack_modalities(model: TaskModel, paths: Mapping[str, str | Path | None], alignment: str = "none") -> Any:
    """One Volume whose components are a multimodal model's inputs in its order (read from one file
    per modality, all present, checked as ``predict`` checks them: each image's modality, one grid, after
    ``alignment``, :mod:`medanomaly.engine.alignment`): what explain takes for a fusion model. A registration is said
    in its ``meta["registration"]`` (the flags :func:`predict_aligned` gives, joined)."""
    from medanomaly.engine.alignment import registration_flags

    names = tuple(getattr(model, "modalities", ()))
    missing = [n for n in names if paths.get(n) is None]
    if not names or missing or set(paths) - set(names):
        raise InputError(f"give every modality of the model once: {', '.join(f'{n}=path' for n in names)}")
    by_name, _ = predict_modalities(model, paths, alignment)  # the model's own checks of the images together
    flags = registration_flags(by_name)
    return stacked(model, by_name).with_meta(**({"registration": "; ".join(flags)} if flags else {}))


def explanation_input(model: TaskModel, volumes: Mapping[str, Any], absent: str) -> Any:
    """What an explanation of a fusion call takes (after the model has predicted it, so its images are checked
    together): the modalities stacked (:func:`stacked`), or an InputError saying which one is missing, worded by
    ``absent`` (``"{} was not sent"``: the service; ``"the study has no {}"``: an archive)."""
    missing = [name for name, v in volumes.items() if v is None]
    if missing:
        return InputError(f"a fusion call is explained with every modality present; {absent.format(missing[0])}")
    return stacked(model, volumes)


def stacked(model: TaskModel, volumes: Mapping[str, Any]) -> Any:
    """The modalities' Volumes (every one present, already checked together by the model's ``predict``) as one
    Volume whose components are the model's inputs in its order (colour images as their grey mean)."""
    import numpy as np

    names = tuple(model.modalities)  # type: ignore[attr-defined]
    arrays = [np.asarray(volumes[n].array, np.float32) for n in names]
    arrays = [a.mean(axis=-1) if a.ndim == 4 else a for a in arrays]
    return volumes[names[0]].with_array(np.stack(arrays, axis=-1))


def _read_modalities(model: TaskModel, paths: Mapping[str, str | Path | None]) -> dict[str, Any]:
    """The Volume of each modality's file (None stays None: a missing modality); a modality the run recorded as a
    volume of a 4D file (``extra.volumes``) reads that volume."""
    from medanomaly.io.frames import read_modality

    volumes = getattr(getattr(model, "info", None), "extra", {}).get("volumes") or {}
    return {name: (read_modality(p, name, volumes) if p is not None else None) for name, p in paths.items()}


@contextmanager
def _naming_inputs(paths: Mapping[str, str | Path | None]) -> Iterator[None]:
    """An InputError that names no file (the model's checks see Volumes, not files) names the inputs: ``T1=a.dcm,
    PD=b.png: T1 holds a CT image, expected MR``."""
    try:
        yield
    except InputError as exc:
        if exc.path is not None:
            raise
        inputs = ", ".join(f"{name}={p}" for name, p in paths.items() if p is not None)
        raise type(exc)(exc.reason, inputs) from None
