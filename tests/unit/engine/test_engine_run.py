"""The run folder: model.json validation, status, lock, overwrite; every refusal is one InputError."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from medanomaly.engine.run import (RunInfo, check_run, prepare_run_dir, read_run_info, training_lock,
                                   write_run_info, write_status)
from medanomaly.errors import InputError
from medanomaly.jsonio import write_json


def _run(tmp_path: Path, status: str = "complete") -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("task: classification\n")
    (run / "w.safetensors").write_bytes(b"x")
    write_run_info(run, RunInfo(task="classification", class_names=("a", "b"), weights=("w.safetensors",)))
    write_status(run, status)
    return run


def test_check_run_accepts_a_finished_run(tmp_path):
    info = check_run(_run(tmp_path))
    assert info.class_names == ("a", "b")
    assert info.software_version  # filled in on write


@pytest.mark.parametrize("status, words", [("running", "did not finish"), ("failed", "failed")])
def test_check_run_refuses_unfinished(tmp_path, status, words):
    with pytest.raises(InputError, match=words):
        check_run(_run(tmp_path, status))


def test_truncated_model_json_is_one_line(tmp_path):
    run = _run(tmp_path)
    text = (run / "model.json").read_text()
    (run / "model.json").write_text(text[: len(text) // 2])
    with pytest.raises(InputError, match="truncated") as err:
        check_run(run)
    assert str(run) in str(err.value) and "\n" not in str(err.value)


def test_nan_threshold_and_missing_weights_are_refused(tmp_path):
    run = _run(tmp_path)
    data = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**data, "thresholds": {"decision": float("nan")}}))
    with pytest.raises(InputError, match="thresholds"):
        read_run_info(run)
    (run / "model.json").write_text(json.dumps(data))
    (run / "w.safetensors").unlink()
    with pytest.raises(InputError, match="weights file missing"):
        check_run(run)


@pytest.mark.parametrize(("change", "words"), [
    ({"class_names": ["a", "a"]}, "class_names: Value error, class names must be distinct and non-empty"),
    ({"class_names": ["a", ""]}, "class names must be distinct and non-empty"),
    ({"input": {"spatial_dims": 0}}, "input.spatial_dims: Input should be 2 or 3"),
    ({"input": {"channels": 10**6}}, "input.channels: Input should be less than or equal to 64"),
    ({"input": {"image_size": [-32, 32]}}, "input.image_size.0: Input should be greater than or equal to 1"),
    ({"input": {"image_size": [32]}}, "input.image_size: List should have at least 2 items"),
    ({"input": {"image_size": [10**30, 32]}}, "is over the limit of 67,108,864 voxels"),
    ({"input": {"image_size": "x"}}, "input.image_size: Input should be a valid list"),
    ({"input": {"channels": 2, "modalities": ["T1"]}}, "1 modalities for 2 channels"),
    ({"input": {"modalities": ["T1", "T1"]}}, "modalities ['T1', 'T1'] name one twice"),
    ({"input": {"modality": ""}}, "input.modality: String should have at least 1 character"),
])  # fmt: skip
def test_model_json_input_and_class_names_are_typed_for_every_task(tmp_path, change, words):
    """model.json's ``input`` was a free dict: a ``spatial_dims`` of 0, a size of -32 or 10^30, a modality too few, a
    class named twice reached the task and failed at the first prediction (a conv of a 0-D input, torch's interpolate).
    The engine now types what is there (each task still asks for the keys it needs) and names the field, one line."""
    run = _run(tmp_path)
    data = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**data, **change}))
    with pytest.raises(InputError, match=re.escape(words)) as err:
        read_run_info(run)
    assert str(err.value).startswith(f"{run}: model.json is invalid: ") and "\n" not in str(err.value)


def test_missing_status_and_not_a_folder(tmp_path):
    run = _run(tmp_path)
    (run / "status.json").unlink()
    with pytest.raises(InputError, match="no status.json"):
        check_run(run)
    with pytest.raises(InputError, match="not found"):
        check_run(tmp_path / "nope")


def test_prepare_refuses_existing_run_without_overwrite(tmp_path):
    run = _run(tmp_path)
    with pytest.raises(InputError, match="--overwrite"):
        prepare_run_dir(run)
    prepare_run_dir(run, overwrite=True)
    assert not (run / "model.json").exists() and not (run / "status.json").exists()


def test_a_failed_attempt_without_a_model_may_be_trained_into_again(tmp_path):
    """Bad input stops a training before any model exists (status failed, no model.json): the same command runs
    again once the input is fixed; a failed retraining over a finished model, or an unreadable status, still asks."""
    run = _run(tmp_path)
    (run / "model.json").unlink()
    (run / "status.json").write_text('{"status": "failed", "reason": "InputError: x.png: image has 3 channel(s)"}')
    assert prepare_run_dir(run) == run
    (run / "model.json").write_text("{}")
    with pytest.raises(InputError, match="--overwrite"):
        prepare_run_dir(run)
    (run / "model.json").unlink()
    (run / "status.json").write_text("not json")
    with pytest.raises(InputError, match="--overwrite"):
        prepare_run_dir(run)


def test_a_training_killed_while_running_may_be_trained_into_again(tmp_path):
    """A training killed outright (SIGKILL, a power cut) leaves status "running", no model.json and no process:
    evaluate said "train it again", and train then said "already holds a run". One whose process lives still asks."""
    run = _run(tmp_path)
    (run / "model.json").unlink()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / "status.json").write_text(json.dumps({"status": "running", "pid": int(dead.stdout)}))
    assert prepare_run_dir(run) == run
    (run / "status.json").write_text(json.dumps({"status": "running", "pid": os.getpid()}))
    with pytest.raises(InputError, match="--overwrite"):
        prepare_run_dir(run)


def test_sigterm_during_training_marks_the_run_failed_and_exits_143(tmp_path):
    """SIGTERM (a scheduler or a container stopping the job) killed a training with its status left "running"."""
    import signal
    import time

    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[3] / "configs" / "anomaly_tiny.yaml").read_text())
    cfg["method"] = {"name": "autoencoder", "params": {"channels": [4, 8]}}
    cfg["train"] = {**cfg.get("train", {}), "epochs": 10_000}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "medanomaly.cli.app", "train", str(tmp_path / "cfg.yaml"), "--out",
                             str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and '"running"' not in _text(run / "status.json"):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and err.strip().splitlines()[-1] == "error: terminated (SIGTERM)", err
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and status["reason"] == "terminated (SIGTERM)"
    assert not (run / ".train.lock").exists() and not (run / "model.json").exists()


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def test_training_lock_refuses_a_live_holder_and_takes_a_stale_one(tmp_path):
    with training_lock(tmp_path):
        with pytest.raises(InputError, match=f"pid {os.getpid()}"):
            with training_lock(tmp_path):
                pass
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".train.lock").write_text(dead.stdout.strip())
    with training_lock(tmp_path) as lock:
        assert lock.read_text() == str(os.getpid())
    assert not lock.exists()


def test_write_json_turns_nan_into_null(tmp_path):
    path = write_json(tmp_path / "m.json", {"auc": float("nan"), "x": [1.0, float("inf")]})
    assert json.loads(path.read_text()) == {"auc": None, "x": [1.0, None]}


def test_write_json_into_unwritable_place_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot write"):
        write_json(blocker / "sub" / "m.json", {})


def test_finite_output_names_how_many_values_are_not_finite_and_keeps_the_array():
    """The one check every task's scores and maps pass (classification, fusion, lesion classifier, detector heatmap,
    anomaly map): a float32 map is checked without a copy and returned as given."""
    import numpy as np

    from medanomaly.engine.contract import finite_output

    fine = np.ones((4, 4), np.float32)
    assert finite_output(fine) is fine
    with pytest.raises(InputError, match=r"^2 NaN or infinite value\(s\) in the detector's heatmap \(weights"):
        finite_output(np.array([1.0, np.nan, np.inf], np.float32), "the detector's heatmap")


def test_a_training_that_runs_out_of_memory_records_it_in_its_status(tmp_path, monkeypatch):
    """The run folder said "MemoryError" (numpy's error has no text when the allocator gives no size)."""
    import yaml

    from medanomaly.config import load_config
    from medanomaly.engine import verbs

    class Starved:
        def train(self, cfg, run_dir, **options):
            raise MemoryError()

    cfg_path = Path(__file__).resolve().parents[3] / "configs" / "anomaly_tiny.yaml"
    monkeypatch.setattr(verbs, "get_task", lambda name, where=None: Starved())
    with pytest.raises(MemoryError):
        verbs.train_run(load_config(cfg_path), tmp_path / "run")
    status = yaml.safe_load((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed" and status["reason"] == "not enough memory (an allocation failed)"


def test_train_run_takes_a_dict_as_a_library_caller_writes_one(tmp_path):
    """``train_run({...}, out)`` failed with "'dict' object has no attribute 'name'": a dict is validated as the
    YAML file would be (an unknown key is one ConfigError line) and trained; another type is a TypeError saying what
    is taken."""
    import torch

    from medanomaly.config import load_config
    from medanomaly.engine import load_model, train_run
    from medanomaly.errors import ConfigError

    torch.set_num_threads(1)
    cfg = {"task": "fusion", "name": "from-a-dict", "seed": 0,
           "data": {"source": "simulated", "size": [24, 24], "n_train": 12, "n_val": 8, "n_test": 6},
           "model": {"name": "fusion_hybrid", "params": {"widths": [4, 8]}},
           "train": {"epochs": 1, "batch_size": 8}, "benchmark": {"n_bootstrap": 10, "variants": []}}  # fmt: skip
    with pytest.raises(ConfigError, match="bogus"):
        train_run({**cfg, "bogus": 1}, tmp_path / "bad")
    with pytest.raises(TypeError, match="a YAML file's path, a dict or a RunConfig, got int"):
        train_run(42, tmp_path / "bad")  # type: ignore[arg-type]
    run = train_run(cfg, tmp_path / "run")
    assert load_model(run).task == "fusion" and load_config(run / "config.yaml").name == "from-a-dict"
