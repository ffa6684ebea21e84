"""The classification CLI end to end on a tiny manifest: train -> evaluate -> predict -> tune,
and the one-line error a user sees for bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import yaml
from typer.testing import CliRunner

from medanomaly.cli.app import app


def _write(root: Path) -> Path:
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    rows = []
    (root / "img").mkdir(parents=True)
    for p in range(12):
        label = ("normal", "abnormal")[p % 2]
        img = rng.normal(100, 10, (16, 16)).astype(np.float32)
        if label == "abnormal":
            img[5:11, 5:11] += 80
        sitk.WriteImage(sitk.GetImageFromArray(img), str(root / f"img/p{p}.nrrd"))
        rows.append({"path": f"img/p{p}.nrrd", "label": label, "patient_id": f"P{p}"})
    with (root / "m.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "patient_id"])
        w.writeheader()
        w.writerows(rows)
    cfg = {
        "task": "classification", "name": "cli",
        "data": {"dataset": {"name": "manifest", "params": {"csv": str(root / "m.csv")}},
                 "class_names": ["normal", "abnormal"], "image_size": [16, 16],
                 "val_fraction": 0.34, "test_fraction": 0.34},
        "model": {"name": "compact_cnn_dw", "params": {"widths": [4, 8], "hidden": 0}},
        "train": {"epochs": 2, "batch_size": 4, "progress": True},
        "evaluate": {"n_bootstrap": 20, "tta": True, "abstain_confidence": 0.99},
        "tune": {"trials": 2, "epochs": 1, "space": {"train.lr": {"type": "float", "low": 0.001, "high": 0.01}}},
    }
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_classify_cli_train_evaluate_predict_tune(tmp_path: Path) -> None:
    cfg = _write(tmp_path)
    runner = CliRunner()
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", str(cfg), "--out", str(run)])
    assert res.exit_code == 0, res.output
    assert (run / "members/0/model.safetensors").is_file()
    assert json.loads((run / "status.json").read_text())["status"] == "complete"

    res = runner.invoke(app, ["evaluate", str(run), "--split", "test"])
    assert res.exit_code == 0, res.output
    assert "macro.roc_auc" in res.output and "metrics.json" in res.output
    res = runner.invoke(app, ["evaluate", str(run), "--split", "test", "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output)
    assert "roc_auc" in metrics["macro"] and metrics["ensemble"]["tta"] is True

    res = runner.invoke(app, ["predict", str(run), str(tmp_path / "img/p0.nrrd"), str(tmp_path / "img/p1.nrrd")])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].startswith("p0.nrrd: ") and "normal=" in lines[0] and "abnormal=" in lines[0]
    # confidence threshold 0.99 on a 2-epoch model: it abstains
    assert "ABSTAIN (low confidence; top class " in res.output  # never confused with a class named "uncertain"
    res = runner.invoke(app, ["predict", str(run), str(tmp_path / "img/p0.nrrd"), "--out", str(tmp_path / "pred")])
    assert res.exit_code == 0, res.output
    written = json.loads((tmp_path / "pred" / "p0.json").read_text())
    assert written["decision"] == "abstain" and written["abstained"] and written["label"] in ("normal", "abnormal")
    # a 1 x 16 picture was resized up to the model's 16 x 16 grid and called: refused in one line, the rest predicted
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.full((1, 16), 100, np.float32)), str(tmp_path / "img/row.nrrd"))
    res = runner.invoke(app, ["predict", str(run), str(tmp_path / "img/row.nrrd"), str(tmp_path / "img/p0.nrrd")])
    assert res.exit_code == 0 and "row.nrrd: image too small: 1 x 16 pixels (a model takes at least 4" in res.output
    assert "p0.nrrd: " in res.output
    _colour_is_called_as_its_luma(run)

    res = runner.invoke(app, ["tune", str(cfg), "--trials", "2", "--out", str(tmp_path / "tune")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "tune/tune.json").read_text())
    assert summary["n_trials"] == 2 and "train.lr" in summary["best_params"]
    assert yaml.safe_load((tmp_path / "tune/best.yaml").read_text())["train"]["lr"] == summary["best_params"]["train.lr"]


def test_classify_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = _write(tmp_path)
    (tmp_path / "img/p3.nrrd").unlink()
    out = subprocess.run([sys.executable, "-m", "medanomaly.cli.app", "train", str(cfg), "--out",
                          str(tmp_path / "run")], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "do not exist: p3.nrrd" in out.stderr


def test_cli_evaluate_refuses_a_run_whose_training_did_not_finish(tmp_path: Path) -> None:
    from medanomaly.engine.run import read_status, write_status

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("task: classification\n")
    write_status(run, "running")
    assert read_status(run).status == "running"
    for verb in (["evaluate", str(run)], ["predict", str(run), "x.png"], ["explain", str(run), "x.png"],
                 ["detect", str(run), "x.nrrd"]):
        res = CliRunner().invoke(app, verb)
        assert res.exit_code != 0 and "did not finish" in str(res.exception), verb


def test_a_run_folder_name_that_is_not_utf8_is_refused_before_training_and_at_load(tmp_path: Path, monkeypatch,
                                                                                   capsys) -> None:  # fmt: skip
    """A run folder named with byte 0xFF trained, then every verb said its weights were "not a readable safetensors
    file" (safetensors' torch reader takes only UTF-8 paths) and export into such a folder was a TypeError traceback
    from torch's ONNX exporter: refused in one line before the work, and a run renamed so is refused at load."""
    import os

    from tests.integration.conftest import run_main

    cfg = _write(tmp_path)
    bad = tmp_path / os.fsdecode(b"run\xff")
    code, _, err = run_main(monkeypatch, capsys, "train", str(cfg), "--out", str(bad))
    assert code == 2 and "run folder name is not UTF-8 text" in err and not bad.exists(), err
    good = tmp_path / "run"
    assert run_main(monkeypatch, capsys, "train", str(cfg), "--out", str(good))[0] == 0
    code, _, err = run_main(monkeypatch, capsys, "export", str(good), "--out", str(tmp_path / os.fsdecode(b"pkg\xfe")))
    assert code == 2 and "package folder name is not UTF-8 text" in err, err
    assert run_main(monkeypatch, capsys, "export", str(good), "--out", str(tmp_path / "pkg"))[0] == 0
    (tmp_path / "pkg").rename(tmp_path / os.fsdecode(b"pkg\xfe"))
    code, _, err = run_main(monkeypatch, capsys, "predict", str(tmp_path / os.fsdecode(b"pkg\xfe")),
                            str(tmp_path / "img/p0.nrrd"))  # fmt: skip
    assert code == 2 and "package folder name is not UTF-8 text" in err, err
    good.rename(bad)
    for verb in ("predict", "explain"):
        code, _, err = run_main(monkeypatch, capsys, verb, str(bad), str(tmp_path / "img/p0.nrrd"))
        assert code == 2 and err.count("\n") == 1 and "run\\udcff: run folder name is not UTF-8 text" in err, err


def _colour_is_called_as_its_luma(run: Path) -> None:
    """A one-channel classifier given a colour image (an ultrasound's frames, a colour picture) refused it with
    advice for training ("set data.channels to 3"); it is called as its BT.601 luma now, flagged ``colour_to_grey``
    (pydicom's real colour ultrasound and RGB picture)."""
    from pydicom.data import get_testdata_file

    from medanomaly.engine import load_model
    from medanomaly.io import read
    from medanomaly.preprocess.colour import grey_volume

    model = load_model(run)
    for name in ("US1_UNCR.dcm", "SC_rgb.dcm"):
        colour = read(get_testdata_file(name))
        called, as_luma = model.predict(colour), model.predict(grey_volume(colour)[0])
        assert "colour_to_grey" in called.flags and "colour_to_grey" not in as_luma.flags
        assert called.scores == as_luma.scores
    # explain says so as predict does (its explain.json did not; the detectors' did)
    res = CliRunner().invoke(app, ["explain", str(run), get_testdata_file("US1_UNCR.dcm"), "--method", "occlusion",
                                   "--out", str(run.parent / "explain_colour")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((run.parent / "explain_colour" / "explain.json").read_text()).get("colour_to_grey") is True
