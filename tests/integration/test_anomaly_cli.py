"""End to end: `medanomaly train/evaluate/predict` on the tiny anomaly config (real normal brains,
real brain2 tumour)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medanomaly.cli.app import app
from medanomaly.data.sources import pyradiomics_case
from medanomaly.io import read

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "anomaly_tiny.yaml"


@pytest.mark.slow
def test_anomaly_train_evaluate_predict(tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", str(CONFIG), "--out", str(run)]).exit_code == 0
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["pixel_auroc"] <= 1.0 and (run / "report.html").stat().st_size > 10_000
    image, _ = pyradiomics_case("brain2")
    out = tmp_path / "pred"
    result = runner.invoke(app, ["predict", str(run), str(image), "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "brain2_image.json").read_text())
    assert doc["label"] in ("anomaly", "normal")
    amap = read(out / "brain2_image_anomaly_map.nii.gz")
    assert amap.same_grid(read(image), tol=1e-3)
    lung, _ = pyradiomics_case("lung1")
    result = runner.invoke(app, ["predict", str(run), str(lung), "--out", str(tmp_path / "bad")])
    assert result.exit_code != 0 and "Traceback" not in result.output
