"""Breast detection end to end through the CLI: train (tiny), evaluate, detect, predict, explain; CT refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medanomaly.types import Volume

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medanomaly.cli.app", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=900)  # fmt: skip


def _images(folder: Path) -> tuple[Path, Path, Path]:
    """An MG phantom image, a US phantom image and a CT-like volume (HU), as NRRD."""
    from medanomaly.io import write
    from medanomaly.synth.mammo import render_mammogram
    from medanomaly.synth.ultrasound import render_ultrasound

    mg = write(render_mammogram(["malignant"], size=96, seed=5).image, folder / "mg.nrrd")
    us = write(render_ultrasound(["benign"], size=(96, 96), seed=2).image, folder / "us.nrrd")
    ct = Volume(np.full((8, 32, 32), -800, np.int16), spacing=(1.0, 1.0, 2.5), meta={"modality": "CT"})
    return Path(mg), Path(us), Path(write(ct, folder / "ct.nrrd"))


def _assembled_run(tmp_path: Path) -> Path:
    """A finished (untrained) detection run, assembled without training: for the input checks."""
    from medanomaly.detect.detection_config import DetectionConfig
    from medanomaly.detect.detection_task import _run_info
    from medanomaly.detect.generic import HeatmapDetector, heatmap_unet
    from medanomaly.engine import write_finished_run

    run = tmp_path / "assembled"
    run.mkdir()
    cfg = DetectionConfig(model={"name": "heatmap_unet", "params": {"filters": [4, 8, 16]}},
                          classifier={"enabled": False})  # fmt: skip
    det = HeatmapDetector.from_config(cfg)
    det.model_ = heatmap_unet(2, filters=[4, 8, 16]).eval()
    det.save(run)
    return write_finished_run(run, cfg, _run_info(cfg, det, None, True))


def test_detection_run_refuses_a_ct_and_a_3d_volume_in_one_line(tmp_path: Path) -> None:
    _, _, ct = _images(tmp_path)
    run = _assembled_run(tmp_path)
    res = _cli("detect", run, ct, "--out", tmp_path / "out")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [ln for ln in (res.stderr + res.stdout).strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "MG" in lines[0] and "CT" in lines[0], lines
    from medanomaly.engine import load_model
    from medanomaly.errors import InputError

    with pytest.raises(InputError, match="2D image"):
        load_model(run).predict(Volume(np.zeros((8, 32, 32), np.float32), meta={"modality": "MG"}))


def test_explain_takes_an_image_the_network_cannot_divide_and_refuses_another_modality(tmp_path: Path) -> None:
    """Grad-CAM over the whole image gives the U-Net the image padded as detection pads it (a 123 x 101 mammogram
    was a tensor-size traceback), and explain refuses a CT as predict and detect do (it ran the MG detector on it)."""
    from medanomaly.io import write

    _, _, ct = _images(tmp_path)
    run = _assembled_run(tmp_path)
    rng = np.random.default_rng(0)
    odd = Volume(rng.random((1, 123, 101)).astype(np.float32), spacing=(0.5, 0.5, 1.0), meta={"modality": "MG"})
    res = _cli("explain", run, write(odd, tmp_path / "odd.nrrd"), "--out", tmp_path / "exp")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((tmp_path / "exp" / "explain.json").read_text())["files"]
    res = _cli("explain", run, ct, "--out", tmp_path / "exp_ct")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"error: {ct}: the model expects modality MG, got CT"], res.stderr


@pytest.mark.slow
def test_findings_of_a_picture_say_their_millimetres_are_pixels(tmp_path: Path) -> None:
    """A PNG states no pixel spacing: detect's findings.json, predict's NAME.json / NAME.findings.json and its --json
    line gave centres, boxes and diameters in "mm" that are pixels, without a word (quantify and info said it). They
    carry "spacing_assumed": true now, and detect's line says so; an NRRD with its spacing carries no such key."""
    from PIL import Image

    from medanomaly.io import read
    from medanomaly.io.png import to_uint8

    run = _assembled_run(tmp_path)
    mg = _images(tmp_path)[0]
    picture = tmp_path / "mg.png"
    Image.fromarray(to_uint8(read(mg).array[0])).save(picture)
    for image, assumed in ((mg, False), (picture, True)):
        res = _cli("detect", run, image, "--out", tmp_path / f"det_{image.suffix[1:]}")
        assert res.returncode == 0 and ("in pixels" in res.stdout) is assumed, res.stderr[-2000:]
        found = json.loads((tmp_path / f"det_{image.suffix[1:]}" / "findings.json").read_text())
        assert found.get("spacing_assumed", False) is assumed
        res = _cli("predict", run, image, "--out", tmp_path / f"pred_{image.suffix[1:]}", "--json")
        assert res.returncode == 0 and json.loads(res.stdout).get("spacing_assumed", False) is assumed
        record = json.loads((tmp_path / f"pred_{image.suffix[1:]}" / f"{image.stem}.json").read_text())
        assert record.get("spacing_assumed", False) is assumed


def test_breast_tiny_train_evaluate_detect_predict_explain(tmp_path: Path) -> None:
    mg, us, ct = _images(tmp_path)
    run = tmp_path / "run"
    res = _cli("train", ROOT / "configs" / "breast_mammo_detect_tiny.yaml", "--out", run)
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads((run / "model.json").read_text())
    assert info["task"] == "detection" and info["input"]["modality"] == "MG" and info["input"]["spatial_dims"] == 2
    assert info["class_names"] == ["benign", "uncertain", "malignant"] and info["synthetic"] is True
    assert [s["name"] for s in info["preprocessing"]] == ["cast", "resample", "window"]
    for name in ("detector.safetensors", "lesion_classifier.safetensors", "metrics.json", "report.html", "froc.png"):
        assert (run / name).is_file(), name

    res = _cli("evaluate", run)
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    fr = metrics["froc_per_image"]
    assert metrics["synthetic"] is True and fr["n_images"] >= 1 and fr["n_lesions"] >= 1
    assert set(fr["sensitivity_at_fp_per_image"]) == {"0.125", "0.25", "0.5", "1", "2", "4", "8"}
    assert fr["cpm"]["ci_low"] <= fr["cpm"]["value"] <= fr["cpm"]["ci_high"]
    assert metrics["lesion_classification"]["available"] is True
    assert "FROC per image" in (run / "report.html").read_text()

    res = _cli("detect", run, mg, "--out", tmp_path / "det")
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads((tmp_path / "det" / "findings.json").read_text())
    assert "findings" in doc
    for f in doc["findings"]:
        assert f["label"] in ("benign", "uncertain", "malignant", "abstain") and len(f["bbox_mm"]) == 2

    res = _cli("predict", run, mg, "--out", tmp_path / "pred")
    assert res.returncode == 0, res.stderr[-2000:]
    pred = json.loads((tmp_path / "pred" / "mg.json").read_text())
    assert any(flag.startswith("birads_like:") for flag in pred["flags"])

    res = _cli("explain", run, mg, "--out", tmp_path / "exp")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "exp" / "explain.json").is_file()

    for other, why in ((ct, "CT"), (us, "US")):  # an MG run refuses a CT and an ultrasound, in one line
        res = _cli("detect", run, other, "--out", tmp_path / "bad")
        assert res.returncode == 2 and "Traceback" not in res.stderr and why in res.stderr + res.stdout


def test_a_colour_image_is_detected_and_explained_as_its_luma_and_says_so(tmp_path: Path) -> None:
    """An ultrasound's frames are RGB, palette colour or YBR (read as RGB), and a picture may be saved in colour: a 2D
    detector (grey input) failed on them with an ITK resampling error ("vector of 32-bit float is not supported").
    Predict, detect and explain now run a colour image as its BT.601 luma, flagged ``colour_to_grey``; the same
    image with three equal channels is its grey self, without the flag."""
    from PIL import Image

    from medanomaly.engine import load_model
    from medanomaly.io import read
    from medanomaly.io.png import to_uint8
    from medanomaly.preprocess.colour import grey_volume

    run = _assembled_run(tmp_path)
    grey = to_uint8(read(_images(tmp_path)[0]).array[0])
    rgb = np.stack([grey] * 3, axis=-1)
    rgb[5:12, 5:40] = (255, 200, 0)  # a coloured annotation, as a scanner draws it
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "grey_rgb.png")
    model, colour = load_model(run), read(tmp_path / "colour.png")
    assert colour.n_components == 3
    called = model.predict(colour)
    assert "colour_to_grey" in called.flags
    as_luma = model.predict(grey_volume(colour)[0])
    assert [f.center_mm for f in called.findings] == [f.center_mm for f in as_luma.findings]
    assert "colour_to_grey" not in model.predict(read(tmp_path / "grey_rgb.png")).flags
    res = _cli("explain", run, tmp_path / "colour.png", "--out", tmp_path / "exp")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((tmp_path / "exp" / "explain.json").read_text())["colour_to_grey"] is True
