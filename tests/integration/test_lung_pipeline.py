"""End to end on the real lung CTs: quantify CLI vs pyradiomics, tiny train -> detect, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medanomaly.data.sources import pyradiomics_case

ROOT = Path(__file__).resolve().parents[2]
BASELINE = {"lung1": (1361.1978149414062, 21.3449467202), "lung2": (48434.108762463955, 68.9824710303)}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medanomaly.cli.app", *map(str, args)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip


@pytest.mark.parametrize("case", ["lung1", "lung2"])
def test_lung_quantify_cli_matches_pyradiomics(case: str) -> None:
    image, mask = pyradiomics_case(case)
    res = _cli("quantify", image, "--mask", mask, "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert len(rows) >= 1
    biggest = rows[0]
    volume_mm3, diameter = BASELINE[case]
    total_ml = sum(r["volume_ml"] for r in rows)
    assert total_ml * 1000 == pytest.approx(volume_mm3, rel=0.01)
    assert biggest["max_diameter_mm"] == pytest.approx(diameter, rel=0.02)
    for key in ("center_mm", "bbox_mm", "score", "volume_ml", "max_diameter_mm", "mean_hu"):
        assert key in biggest


def test_lung_quantify_cli_gives_the_partial_volume_on_chest_ct_and_refuses_it_elsewhere() -> None:
    image, mask = pyradiomics_case("lung1")
    rows = json.loads(_cli("quantify", image, "--mask", mask, "--json", "--partial-volume").stdout)
    whole = rows[0]
    # The reference outline is tight (its rim at -350 HU lies outside it): the partial volume is larger, not equal.
    assert whole["volume_ml"] * 1.05 < whole["partial_volume_ml"] < whole["volume_ml"] * 1.3
    brain, brain_mask = pyradiomics_case("brain1")
    res = _cli("quantify", brain, "--mask", brain_mask, "--partial-volume")
    assert res.returncode == 2 and "partial-volume analysis needs a CT in HU" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_lung_tiny_train_then_detect(tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = _cli("train", ROOT / "configs" / "lung_nodule_tiny.yaml", "--out", run)
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("config.yaml", "model.safetensors", "detector.json", "metrics.json", "report.html", "froc.png"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    held = metrics["heldout_synthetic"]
    assert held["synthetic"] is True and held["n_scans"] == 1 and held["n_lesions"] >= 1
    assert 0.0 <= held["cpm"] <= 1.0
    lo, hi = held["cpm_ci95_scan_bootstrap"]  # one scan: every resample is that scan
    assert lo == pytest.approx(held["cpm"]) == hi and "heldout_synthetic_6mm_or_more" in metrics
    recurring = held["recurring_false_positives"]  # one scan: nothing can recur across scans
    assert recurring["recurring"] == 0 and recurring["positions"] == [] and recurring["false_positives"] >= 0
    assert "lung1" in metrics["real_lesions"]
    training = metrics["training"]  # budget, steps and the learning curve (validation CPM every 3 steps)
    assert training["steps_done"] == 6 and training["shapes"] == "lidc" and training["cpu_seconds"] > 0
    assert [r["step"] for r in training["learning_curve"]] == [3, 6] and (run / "learning_curve.png").is_file()
    assert (run / "lung1" / "findings.json").is_file()
    assert "synthetic" in (run / "report.html").read_text()

    image, _ = pyradiomics_case("lung1")
    out = tmp_path / "det"
    res = _cli("detect", run, image, "--out", out)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads((out / "findings.json").read_text())
    findings = doc["findings"]
    assert doc["schema"] == "medanomaly.findings/1" and doc["image"] == image.name and len(findings) <= 5
    for f in findings:
        for key in ("center_mm", "bbox_mm", "score", "volume_ml", "max_diameter_mm", "mean_hu"):
            assert key in f
    assert [f["score"] for f in findings] == sorted((f["score"] for f in findings), reverse=True)
    case_doc = json.loads((run / "lung1" / "findings.json").read_text())  # the same schema from the report
    assert case_doc["schema"] == doc["schema"]

    # every verb through the engine: predict (findings JSON beside) and explain on the same run
    res = _cli("predict", run, image, "--out", tmp_path / "pred", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    pred = json.loads(res.stdout.strip().splitlines()[-1])
    assert pred["file"] == image.name and len(pred["findings"]) == len(findings)
    res = _cli("explain", run, image, "--out", tmp_path / "expl", "--fov", "60")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "expl" / "explain.json").is_file()


def test_lung_cli_bad_input_gives_one_line_and_exit_2(tmp_path: Path) -> None:
    image, _ = pyradiomics_case("lung1")
    res = _cli("quantify", image)
    assert res.returncode == 2 and "mask is required" in res.stderr
    res = _cli("quantify", image, "--mask", tmp_path / "missing.nrrd")
    assert res.returncode == 2 and "mask file not found" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = _cli("detect", tmp_path, image, "--out", tmp_path / "o")
    assert res.returncode == 2 and "not a run folder" in res.stderr


def test_quantify_cli_refuses_colour_mask_and_image_naming_the_file(tmp_path: Path) -> None:
    """A colour PNG as the mask used to end in a numpy traceback (found by feeding ITK's example PNGs)."""
    import numpy as np
    from PIL import Image

    grey, colour = tmp_path / "grey.png", tmp_path / "colour.png"
    disk = np.zeros((40, 40), np.uint8)
    disk[10:20, 10:20] = 1
    Image.fromarray(disk).save(grey)
    Image.fromarray(np.stack([disk * 200, disk * 100, disk * 50], axis=-1)).save(colour)  # not grey
    for image, mask, named, reason in ((grey, colour, colour, "lesion mask needs a scalar image"),
                                       (colour, grey, colour, "intensity statistics needs a scalar image")):  # fmt: skip
        res = _cli("quantify", image, "--mask", mask)
        assert res.returncode == 2 and reason in res.stderr and str(named) in res.stderr, res.stderr[-2000:]
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    res = _cli("quantify", grey, "--mask", grey, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)[0]["n_voxels"] == 100


def test_lung_detect_cli_rejects_mri(tmp_path: Path) -> None:
    """(The head CT without lungs is checked in tests/unit/detect/test_detect_inputs.py.)"""
    from medanomaly.detect.detector import NoduleDetector

    run = tmp_path / "run"
    det = NoduleDetector(model_params={"filters": [4, 8, 16]})
    import medanomaly.models.nodule_unet as nu

    det.model_ = nu.nodule_unet(filters=(4, 8, 16)).eval()
    from medanomaly.detect.config import LungNoduleConfig
    from medanomaly.detect.detector import WEIGHTS_FILE
    from medanomaly.detect.model import run_info
    from medanomaly.engine import write_finished_run

    det.save(run)
    write_finished_run(run, LungNoduleConfig(task="lung_nodule"), run_info(det, WEIGHTS_FILE))
    brain, _ = pyradiomics_case("brain1")
    res = _cli("detect", run, brain, "--out", tmp_path / "o")
    assert res.returncode == 2 and "CT in HU" in res.stderr, res.stderr


def test_detect_dicom_refuses_a_source_its_outputs_cannot_reference_before_the_model_runs(
        tmp_path: Path, fixture_lung_run: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    """A CT series without FrameOfReferenceUID: ``detect --dicom`` ran the detector, wrote findings.json, then failed in
    highdicom with a traceback; now one line naming the slice, before the model runs."""
    import pydicom

    from medanomaly.detect.model import DetectionModel
    from medanomaly.io import read
    from medanomaly.io.dicom_writer import write_dicom_series
    from medanomaly.types import Volume
    from tests.integration.conftest import run_main

    ct = read(pyradiomics_case("lung1")[0])
    part = Volume(ct.array[30:34], spacing=ct.spacing, origin=ct.origin, direction=ct.direction, meta={"modality": "CT"})
    files = write_dicom_series(part, tmp_path / "ct")
    for f in files:
        ds = pydicom.dcmread(f)
        del ds.FrameOfReferenceUID
        ds.save_as(f, enforce_file_format=False)

    def model_ran(*_args, **_kwargs):
        raise AssertionError("the detector ran before the source was checked")

    monkeypatch.setattr(DetectionModel, "_predict", model_ran)
    code, _out, err = run_main(monkeypatch, capsys, "detect", str(fixture_lung_run), str(tmp_path / "ct"), "--dicom",
                               "--out", str(tmp_path / "out"))  # fmt: skip
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: ") and "source image without FrameOfReferenceUID" in err
    assert not (tmp_path / "out" / "findings.json").exists()
