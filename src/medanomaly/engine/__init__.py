"""The engine: one task contract, one run folder, and the verbs written once for every task.

See :mod:`medanomaly.engine.contract` (what a task and a loaded model provide),
:mod:`medanomaly.engine.run` (the run folder, model.json, status, lock) and
:mod:`medanomaly.engine.verbs` (train, load, evaluate, predict).
"""

from __future__ import annotations

from medanomaly.engine.contract import ModelBase, Task, TaskModel
from medanomaly.engine.run import (RunInfo, check_run, prepare_run_dir, read_run_info, read_status,
                                   require_finished, training_lock, write_finished_run, write_json, write_run_info,
                                   write_status)
from medanomaly.engine.verbs import (default_out, evaluate_run, get_task, is_main_process, load_model,
                                     predict_paths, train_run)

__all__ = [
    "ModelBase", "Task", "TaskModel", "RunInfo", "check_run", "prepare_run_dir", "read_run_info", "read_status",
    "require_finished", "training_lock", "write_finished_run", "write_json", "write_run_info", "write_status", "default_out",
    "evaluate_run", "get_task", "is_main_process", "load_model", "predict_paths", "train_run",
]  # fmt: skip
