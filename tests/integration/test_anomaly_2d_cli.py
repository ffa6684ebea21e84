"""End to end on 2D images: `medanomaly train/evaluate/predict` with `data.domain: folder2d` on a tiny
folder written here: real axial slices of the MNI152 T1 brain (normal) and, for the abnormal part, the
same held-out slices with SYNTHETIC lesions (bright or dark soft disks) and their masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from medanomaly.cli.app import app
from medanomaly.io import read, write
from medanomaly.types import Volume


def _slices(size: int = 48) -> list[np.ndarray]:
    """Axial slices (uint8, size x size) of the real MNI152 T1 template, every 3 mm through the brain."""
    from skimage.transform import resize

    from medanomaly.anomaly.data import NORMAL_BRAINS
    from medanomaly.data.sources import real_data

    arr = np.asarray(read(real_data(NORMAL_BRAINS["mni152"])).array, np.float32)
    z0 = arr.shape[0] // 2
    out = []
    for z in range(z0 - 30, z0 + 30, 3):
        sl = resize(arr[z], (size, size), order=1, anti_aliasing=True)
        out.append(np.clip(sl / np.percentile(arr, 99.5) * 255, 0, 255).astype(np.uint8))
    return out


def _lesion(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A SYNTHETIC soft disk (radius 4-7 px) inside the brain, bright or dark."""
    ys, xs = np.nonzero(image > 60)
    k = rng.integers(ys.size)
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    r = rng.uniform(4, 7)
    d = np.hypot(yy - ys[k], xx - xs[k]) / r
    weight = np.clip(1.5 - d, 0, 1)
    value = 255.0 if rng.random() < 0.5 else 0.0
    out = (1 - weight) * image + weight * value
    return out.astype(np.uint8), weight > 0.5


def write_folder(root: Path) -> Path:
    """train/normal, val/normal, test/normal (one saved as RGB), test/abnormal (synthetic lesions), test/masks."""
    rng = np.random.default_rng(0)
    parts = {"train/normal": [], "val/normal": [], "test": []}
    for i, sl in enumerate(_slices()):
        parts[("train/normal", "val/normal", "test", "train/normal")[i % 4]].append(sl)
    for part in ("train/normal", "val/normal", "test/normal", "test/abnormal", "test/masks"):
        (root / part).mkdir(parents=True)
    for part in ("train/normal", "val/normal"):
        for i, sl in enumerate(parts[part]):
            write(Volume(sl[None]), root / part / f"mni_{i:02d}.png")
    for i, sl in enumerate(parts["test"]):
        normal = np.stack([sl, sl, (sl * 0.9).astype(np.uint8)], -1)[None] if i == 0 else sl[None]  # one colour file
        write(Volume(normal), root / "test/normal" / f"mni_{i:02d}.png")
        abnormal, mask = _lesion(sl, rng)
        write(Volume(abnormal[None]), root / "test/abnormal" / f"synthetic_lesion_{i:02d}.png")
        write(Volume((mask * 255).astype(np.uint8)[None]), root / "test/masks" / f"synthetic_lesion_{i:02d}.png")
    return root


@pytest.mark.slow
def test_anomaly_2d_folder_train_evaluate_predict(tmp_path):
    folder = write_folder(tmp_path / "images")
    (folder / "train/normal/empty.png").write_bytes(b"")  # left out and reported, the run goes on
    doc = {"task": "anomaly", "name": "anomaly_2d_fixture",
           "data": {"domain": "folder2d", "folder": str(folder), "size": 32, "copies": 1},
           "method": {"name": "normative", "params": {"z_bins": 1}}, "train": {"epochs": 1, "threads": 1},
           "threshold": {"target_fpr": 0.05, "sigmas": [0, 1]}, "evaluate": {"n_bootstrap": 100}}
    config = tmp_path / "a2d.yaml"
    config.write_text(yaml.safe_dump(doc))
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(config), "--out", str(run)])
    assert result.exit_code == 0, result.output
    info = json.loads((run / "model.json").read_text())
    assert info["input"]["spatial_dims"] == 2 and info["extra"]["domain"]["name"] == "folder2d"
    assert info["extra"]["domain"]["skipped_files"] == ["train/normal/empty.png: empty file"]
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output
    m = json.loads((run / "metrics.json").read_text())
    assert m["grey_from_rgb"] == 1 and len(m["images"]) == 10
    assert m["image_auroc"]["value"] > 0.75 and m["image_auroc"]["ci95"] is not None
    assert m["pixel"]["pixel_auroc"] > 0.85 and m["pixel"]["aupro"]["value"] > 0.3
    assert m["pixel"]["n_abnormal_with_mask"] == 5 and (run / "report.html").stat().st_size > 20_000
    assert "1 file(s) could not be used and were left out: train/normal/empty.png: empty file." in (
        run / "report.html").read_text()
    image = folder / "test/abnormal/synthetic_lesion_01.png"
    out = tmp_path / "pred"
    result = runner.invoke(app, ["predict", str(run), str(image), "-o", str(out)])
    assert result.exit_code == 0, result.output
    pred = json.loads((out / "synthetic_lesion_01.json").read_text())
    assert pred["label"] in ("anomaly", "normal")
    amap = read(out / "synthetic_lesion_01_anomaly_map.nii.gz")
    assert amap.is_2d and amap.shape == read(image).shape
    mask = np.asarray(read(folder / "test/masks/synthetic_lesion_01.png").array)[0] > 0
    values = np.asarray(amap.array)[0]
    assert values[mask].mean() > values[~mask].mean()  # the map lights up on the lesion
    pkg = tmp_path / "pkg"  # the exported package gives the run's score and map
    assert runner.invoke(app, ["export", str(run), "--out", str(pkg)]).exit_code == 0
    result = runner.invoke(app, ["predict", str(pkg), str(image), "-o", str(tmp_path / "pred_pkg")])
    assert result.exit_code == 0, result.output
    got = json.loads((tmp_path / "pred_pkg" / "synthetic_lesion_01.json").read_text())
    score, pkg_score = pred["probabilities"]["anomaly"], got["probabilities"]["anomaly"]
    assert got["label"] == pred["label"] and abs(pkg_score - score) <= 1e-4 * max(1.0, abs(score))
    pkg_map = np.asarray(read(tmp_path / "pred_pkg" / "synthetic_lesion_01_anomaly_map.nii.gz").array)[0]
    assert np.abs(pkg_map - values).max() <= 1e-3 * max(1.0, float(np.abs(values).max()))
    volume = tmp_path / "volume.nii.gz"  # a 3D image to a 2D model: one line, exit 2
    write(Volume(np.zeros((5, 32, 32), np.float32)), volume)
    result = runner.invoke(app, ["predict", str(run), str(volume), "-o", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "trained on 2D images, got a 3D volume" in result.output
    assert "Traceback" not in result.output
    write(Volume(np.zeros((1, 1, 1), np.float32)), tmp_path / "dot.nii.gz")  # was resized up to the grid and scored
    result = runner.invoke(app, ["predict", str(run), str(tmp_path / "dot.nii.gz"), "-o", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "image too small: 1 x 1 pixels" in result.output
    spot = np.asarray(read(image).array, np.float32).copy()  # a NaN gave a NaN map, blamed on the weights
    spot[0, 5, 5] = np.nan
    write(Volume(spot), tmp_path / "nan.nii.gz")
    for model in (run, pkg):
        result = runner.invoke(app, ["predict", str(model), str(tmp_path / "nan.nii.gz"), "-o", str(tmp_path / "bad")])
        assert result.exit_code == 2 and "image has 1 NaN/infinite voxels" in result.output, result.output
    _predict_names_not_utf8(run, read(image), tmp_path)


def _predict_names_not_utf8(run: Path, image: Volume, tmp_path: Path) -> None:
    """Input names holding byte 0xFF (not UTF-8): SimpleITK, which writes the map and reads NRRD, aborted the whole
    process on such a name. A NIfTI (read by nibabel) is predicted, its map named ``%FF``; an NRRD, which ITK must
    open, is one line naming it, exit 2."""
    import os
    import subprocess
    import sys

    nifti, nrrd = tmp_path / os.fsdecode(b"scan\xff.nii.gz"), tmp_path / os.fsdecode(b"scan\xfe.nrrd")
    write(image, tmp_path / "scan.nii.gz").rename(nifti)
    write(image, tmp_path / "scan.nrrd").rename(nrrd)
    out = tmp_path / "pred_names"
    command = [sys.executable, "-m", "medanomaly.cli.app", "predict", str(run)]
    strict = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}  # as en_US.UTF-8: a surrogate was a traceback
    result = subprocess.run([*command, nifti, "-o", out], capture_output=True, timeout=300, env=strict)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"scan\\udcff.nii.gz: ")  # the result line shows the byte as an escape
    assert sorted(p.name for p in out.iterdir()) == ["scan%FF.json", "scan%FF_anomaly_map.nii.gz"]
    assert read(out / "scan%FF_anomaly_map.nii.gz").shape == image.shape
    result = subprocess.run([*command, nrrd, "-o", tmp_path / "pred_nrrd"], capture_output=True, timeout=300)
    assert result.returncode == 2 and result.stderr.count(b"\n") == 1, result.stderr
    assert b"scan\\udcfe.nrrd: file name is not UTF-8 text, which ITK cannot open" in result.stderr


@pytest.mark.slow
def test_anomaly_2d_medmnist_style_npz(tmp_path):
    """The same slices as a MedMNIST-style .npz (label 0 = normal): no masks, image metrics only."""
    slices = _slices(size=28)
    rng = np.random.default_rng(1)
    arrays = {}
    for k, split in enumerate(("train", "val", "test")):
        normal = slices[k::3]
        if split == "test":
            abnormal = [_lesion(s, rng)[0] for s in normal]
            arrays["test_images"] = np.stack(normal + abnormal)
            arrays["test_labels"] = np.r_[np.zeros(len(normal)), np.ones(len(abnormal))].astype(int)[:, None]
        else:
            arrays[f"{split}_images"] = np.stack(normal + [np.zeros((28, 28), np.uint8)])  # one non-normal image
            arrays[f"{split}_labels"] = np.r_[np.zeros(len(normal)), 1].astype(int)[:, None]
    np.savez(tmp_path / "brainmnist.npz", **arrays)
    doc = {"task": "anomaly", "data": {"domain": "folder2d", "folder": str(tmp_path / "brainmnist.npz"), "size": 28,
                                       "copies": 1},
           "method": {"name": "normative", "params": {"z_bins": 1}}, "train": {"threads": 1},
           "threshold": {"sigmas": [0, 1]}, "evaluate": {"n_bootstrap": 50}}
    config = tmp_path / "npz.yaml"
    config.write_text(yaml.safe_dump(doc))
    runner = CliRunner()
    assert runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "run")]).exit_code == 0
    info = json.loads((tmp_path / "run" / "model.json").read_text())
    assert info["extra"]["domain"]["excluded_not_normal"] == 2 and info["extra"]["domain"]["source"] == "npz"
    result = runner.invoke(app, ["evaluate", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["pixel"] is None and m["image_auroc"]["n_pos"] == m["image_auroc"]["n_neg"] > 3
    assert m["image_auroc"]["value"] > 0.7
