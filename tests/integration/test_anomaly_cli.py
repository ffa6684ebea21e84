"""End to end: `medanomaly train/evaluate/predict` on the tiny anomaly config (real normal brains,
real brain2 tumour)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medanomaly.cli.app import app
from medanomaly.data.sources import pyradiomics_case
from medanomaly.errors import ConfigError
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
    assert 0.0 <= metrics["aupro"]["value"] <= 1.0 and metrics["aupro"]["max_fpr"] == 0.3  # 3D tumour regions
    assert metrics["cases"][0]["aupro"] == metrics["aupro"]["value"]  # one case: pooled = per case
    image, _ = pyradiomics_case("brain2")
    out = tmp_path / "pred"
    result = runner.invoke(app, ["predict", str(run), str(image), "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "brain2_image.json").read_text())
    assert doc["label"] in ("anomaly", "normal")
    amap = read(out / "brain2_image_anomaly_map.nii.gz")
    assert amap.same_grid(read(image), tol=1e-3)
    _check_map_findings(run, out / "brain2_image.findings.json", amap)
    explained = tmp_path / "explain"  # the map is the explanation: explain writes it, whatever --method asks
    _, label = pyradiomics_case("brain2")
    result = runner.invoke(app, ["explain", str(run), str(image), "--mask", str(label), "--out", str(explained)])
    assert result.exit_code == 0, result.output
    report = json.loads((explained / "explain.json").read_text())
    assert report["method"] == "anomaly_map" and report["requested_method"] == "gradcam"
    assert isinstance(report["pointing_hit"], bool) and (explained / "explanation.png").stat().st_size > 10_000
    np.testing.assert_allclose(read(explained / "explanation.nii.gz").array, amap.array, atol=1e-5)
    lung, _ = pyradiomics_case("lung1")
    result = runner.invoke(app, ["predict", str(run), str(lung), "--out", str(tmp_path / "bad")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    info = json.loads((run / "model.json").read_text())  # a run whose recorded method parameters hold a typo
    info["extra"]["method"]["params"]["bogus"] = 1
    (run / "model.json").write_text(json.dumps(info))
    result = runner.invoke(app, ["predict", str(run), str(image), "--out", str(tmp_path / "typo")])
    # the console entry point (cli.app.main) prints a ConfigError as one line, exit 2
    assert isinstance(result.exception, ConfigError), result.output
    assert str(result.exception).startswith(f"{run / 'model.json'}: anomaly method 'normative'")
    assert "unexpected keyword argument 'bogus'" in str(result.exception)


def _check_map_findings(run: Path, path: Path, amap) -> None:
    """The findings file holds the map's regions above the run's pixel threshold of >= 0.1 mL (written
    only when there is one), largest first, each scored by its peak above the threshold."""
    from scipy import ndimage

    pixel = json.loads((run / "model.json").read_text())["thresholds"]["pixel"]
    values = amap.array
    labels, n = ndimage.label((values > pixel) & (values != 0), structure=np.ones((3, 3, 3), bool))
    ml = np.bincount(labels.ravel())[1:] * amap.voxel_volume_mm3 / 1000.0
    big = np.sort(ml[ml >= 0.1])[::-1][:10]
    if not path.exists():
        assert big.size == 0, big
        return
    found = json.loads(path.read_text())["findings"]
    assert np.allclose([f["volume_ml"] for f in found], big, rtol=1e-3), ([f["volume_ml"] for f in found], big)
    assert all(f["score"] > pixel and f["label"] == "anomaly" for f in found)


CHEST = Path(__file__).resolve().parents[2] / "configs" / "anomaly_chest_ct.yaml"


@pytest.mark.slow
def test_anomaly_chest_ct_leave_one_patient_out(tmp_path):
    """Tiny chest CT run: lung1's parenchyma minus its grown nodule trains, lung2's real tumour tests
    inside lung2's lung mask; the exclusion is recorded; an MR brain and a leaking config are refused."""
    import yaml

    doc = yaml.safe_load(CHEST.read_text())
    doc["data"].update(size=32, copies=0)
    doc["threshold"]["sigmas"] = [0, 1]
    doc["evaluate"].update(n_bootstrap=20, simulated_nodules=2)
    config = tmp_path / "chest_tiny.yaml"
    config.write_text(yaml.safe_dump(doc))
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(config), "--out", str(run)])
    assert result.exit_code == 0, result.output
    info = json.loads((run / "model.json").read_text())
    domain = info["extra"]["domain"]
    assert info["input"]["modality"] == "CT" and domain["region"] == "lung_mask" and domain["window"] == "lung"
    excluded = domain["training_exclusion"][0]
    assert excluded["case"] == "lung1" and excluded["margin_mm"] == 20.0 and excluded["excluded_lung_ml"] > excluded["lesion_ml"] > 1.0
    assert json.loads((run / "train.json").read_text())["training_exclusion"] == domain["training_exclusion"]
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["region"] == "lung_mask" and metrics["cases"][0]["case"] == "lung2"
    assert metrics["cases"][0]["tumour_in_region_fraction"] > 0.95  # the test region holds the lesion
    assert 0.5 < metrics["pixel_auroc"] <= 1.0  # a dense 48 mL tumour in aerated lung must stand out
    assert metrics["slice_auroc"]["n_pos"] > 0 and metrics["slice_auroc"]["n_neg"] > 0
    assert metrics["aupro"]["n_regions"] >= 1 and metrics["aupro"]["value"] > 0.15  # above a random map
    sim = metrics["simulated"]  # held-out simulated nodules (SYNTHETIC), scored apart from the real lesion
    assert sim["synthetic"] and sim["cases"][0]["n_nodules"] == 2 and sim["pixel_auroc"] > 0.6
    assert all(n["synthetic"] and n["in_region_fraction"] == 1.0 for n in sim["cases"][0]["nodules"])  # in the lungs
    assert "Held-out simulated nodules (SYNTHETIC)" in (run / "report.html").read_text()
    brain, _ = pyradiomics_case("brain1")  # an MRI (no modality tag, values not HU): one line, exit 2
    result = runner.invoke(app, ["predict", str(run), str(brain), "--out", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "HU" in result.output and "Traceback" not in result.output
    doc["evaluate"]["cases"] = ["lung1"]  # the training CT as test: refused before any work
    config.write_text(yaml.safe_dump(doc))
    result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "leak")])
    # the console entry point (cli.app.main) prints a ConfigError as one line, exit 2
    assert isinstance(result.exception, ConfigError) and "leave-one-patient-out" in str(result.exception)


def test_a_run_whose_maps_are_at_chance_on_its_synthetic_validation_says_so(tmp_path, monkeypatch, caplog):
    """A flat map (every pixel alike: AUROC 0.5 on the validation's SYNTHETIC anomalies) trained without a word; now
    a warning line, ``warnings.json``, and the run's ``status.json`` (which the report's banner reads) carry it."""
    from medanomaly.anomaly.methods import NormativeMethod
    from medanomaly.engine import train_run

    monkeypatch.setattr(NormativeMethod, "score", lambda self, images, masks, rel_z: np.zeros(np.shape(masks), np.float32))
    run = train_run(CONFIG, tmp_path / "run")
    status = json.loads((run / "status.json").read_text())
    expected = ("synthetic-anomaly validation pixel AUROC 0.500 is at chance level (<= 0.55): the normative maps do "
                "not separate the validation's SYNTHETIC anomalies from normal tissue")  # fmt: skip
    assert [w[: len(expected)] for w in status["warnings"]] == [expected]
    assert expected in caplog.text and json.loads((run / "train.json").read_text())["warnings"] == status["warnings"]
    from medanomaly.engine import evaluate_run

    assert [w[: len(expected) + 10] for w in evaluate_run(run)["warnings"]] == [f"training: {expected}"]
    assert "<b>Warning:</b> training: synthetic-anomaly validation pixel AUROC 0.500" in (run / "report.html").read_text()
