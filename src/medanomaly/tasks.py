"""Training tasks: what ``medanomaly train CONFIG`` and ``evaluate RUN`` dispatch to.

A task is an object registered in :data:`medanomaly.registry.TASKS` under the config's
``task:`` value, with:

* ``config_class``: its :class:`medanomaly.config.RunConfig` subclass;
* ``train(config, run_dir: Path) -> Path``: train and write the run directory;
* ``evaluate(run_dir: Path, split: str) -> dict``: compute metrics, write ``metrics.json`` and the report;
* ``load(run_dir: Path, info: RunInfo) -> TaskModel``: the trained model behind the engine contract
  (:mod:`medanomaly.engine.contract`).

Importing this module imports the task modules listed below, which register themselves.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

from medanomaly.config import RunConfig


class Task(Protocol):
    config_class: type[RunConfig]

    def train(self, config: RunConfig, run_dir: Path) -> Path: ...

    def evaluate(self, run_dir: Path, split: str = "test") -> dict[str, Any]: ...

    def load(self, run_dir: Path, info: Any) -> Any: ...


#: Modules that register a task when imported. Add yours here.
TASK_MODULES: tuple[str, ...] = (
    "medanomaly.classify.task",
    "medanomaly.detect.task",
    "medanomaly.fusion.task",
    "medanomaly.anomaly.task",
    "medanomaly.detect.detection_task",
)

for _module in TASK_MODULES:
    importlib.import_module(_module)
