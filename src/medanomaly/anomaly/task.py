"""The ``anomaly`` task: ``medanomaly train CONFIG`` / ``evaluate RUN`` / ``predict RUN IMAGE``.

Trains one method of :data:`medanomaly.anomaly.methods.METHODS` on normal brain MRI only (see
:mod:`medanomaly.anomaly.data`), or on one chest CT's lung parenchyma away from its lesion
(:mod:`medanomaly.anomaly.chest`), writes ``weights.safetensors`` (the method's arrays),
``train.json`` (training log, label-free choices) and ``model.json``. ``evaluate`` runs the case
study of :mod:`medanomaly.anomaly.case_study` on the real tumours of brain1/brain2 (or the other
chest CT's real lesion).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.anomaly.config import AnomalyConfig
from medanomaly.engine.run import MODEL_JSON, RunInfo, write_run_info
from medanomaly.errors import ConfigError, InputError, about_file, unfit_file
from medanomaly.io.staged import write_safetensors
from medanomaly.jsonio import write_json
from medanomaly.registry import TASKS
from medanomaly.train.checkpoint import non_finite_tensor

__all__ = ["AnomalyTask", "WEIGHTS", "save_state", "load_state"]

#: The weights file of an anomaly run.
WEIGHTS = "weights.safetensors"


def _record_warnings(run_dir: Path, warnings: list[str]) -> None:
    """Say each training warning (a log line) and write them where the run's status and report pick them up."""
    import logging

    from medanomaly.train.engine import WARNINGS_JSON

    for message in warnings:
        logging.getLogger(__name__).warning(message)
    if warnings:
        write_json(run_dir / WARNINGS_JSON, list(warnings))


def save_state(state: dict[str, np.ndarray], path: Path, method: str) -> Path:
    """Write the method's arrays as safetensors, all-or-nothing (:func:`medanomaly.io.staged.write_safetensors`)."""
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(v) for k, v in state.items()}
    return write_safetensors(path, lambda staged: save_file(arrays, staged, metadata={"method": method}))


def load_state(path: Path) -> dict[str, np.ndarray]:
    """The method's arrays from a safetensors file; a file larger than 80 % of the memory available is refused
    before it is read, and an unreadable one is one line naming it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from medanomaly.io.limits import format_bytes, memory_shortfall

    if not path.is_file():
        raise InputError("weights file not found", path)
    size = path.stat().st_size
    available = memory_shortfall(size, 0.8)
    if available is not None:
        raise InputError(f"weights of {format_bytes(size)} do not fit in the {format_bytes(available)} of memory "
                         "available", path)  # fmt: skip
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError):
        raise InputError("not a readable safetensors file", path) from None
    bad = non_finite_tensor(state)
    if bad is not None:
        raise InputError(f"weights hold NaN or infinite values (array {bad!r})", path)
    return state


class AnomalyTask:
    """``train``, ``evaluate`` and ``load`` for ``task: anomaly`` (registered in TASKS)."""

    config_class = AnomalyConfig

    def train(self, config: AnomalyConfig, run_dir: Path) -> Path:
        import time

        from medanomaly.anomaly.model import run_info
        from medanomaly.anomaly.pipeline import fit

        run_dir = Path(run_dir)
        start = time.perf_counter()
        fitted = fit(config)
        seconds = round(time.perf_counter() - start, 1)
        save_state(fitted.method.state(), run_dir / WEIGHTS, config.method.name)
        write_json(run_dir / "train.json", {**fitted.log, "seconds": seconds, "method": config.method.name,
                                            "threads": config.train.threads})  # fmt: skip
        write_run_info(run_dir, run_info(config, fitted, WEIGHTS))
        _record_warnings(run_dir, fitted.log.get("warnings") or [])
        return run_dir

    def load(self, run_dir: Path, info: RunInfo) -> Any:
        from medanomaly.anomaly.methods import METHODS
        from medanomaly.anomaly.model import AnomalyModel, check_recorded_settings

        check_recorded_settings(info, Path(run_dir) / MODEL_JSON)
        spec = info.extra["method"]  # a {name, params} mapping (checked above)
        with about_file(Path(run_dir) / MODEL_JSON, ConfigError):  # the method's recorded parameters
            method = METHODS.create(spec["name"], **spec.get("params", {}))
        with unfit_file(Path(run_dir) / WEIGHTS, "weights"):  # arrays of other names or shapes than the method's
            method.load_state(load_state(Path(run_dir) / WEIGHTS))
            if hasattr(method, "check_state"):  # the 2D grid's methods: arrays that fit the recorded size
                method.check_state(int(info.extra["size"]))
        return AnomalyModel(info, Path(run_dir), method)

    def evaluate(self, run_dir: Path, split: str = "test") -> dict[str, Any]:
        from medanomaly.anomaly.case_study import run_case_study
        from medanomaly.config import load_config
        from medanomaly.engine.run import read_run_info

        run_dir = Path(run_dir)
        if split != "test":
            raise InputError(f"the anomaly task evaluates the test cases only (split 'test'), got {split!r}")
        config = load_config(run_dir / "config.yaml")
        model = self.load(run_dir, read_run_info(run_dir))
        return run_case_study(model, config, run_dir)


TASKS.register("anomaly")(AnomalyTask())
