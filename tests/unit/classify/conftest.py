"""One tiny trained classification run (session-scoped), reused by the classify tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest


def write_blob_manifest(root: Path, n_patients: int = 12, size: int = 16) -> Path:
    """Two NRRD images per patient: 'abnormal' = bright centre square, 'normal' = noise only."""
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    rows = []
    (root / "img").mkdir(parents=True, exist_ok=True)
    for p in range(n_patients):
        label = ("normal", "abnormal")[p % 2]
        for i in range(2):
            img = rng.normal(100, 10, (size, size)).astype(np.float32)
            if label == "abnormal":
                img[size // 2 - 3:size // 2 + 3, size // 2 - 3:size // 2 + 3] += 80
            name = f"img/p{p}_{i}.nrrd"
            sitk.WriteImage(sitk.GetImageFromArray(img), str(root / name))
            rows.append({"path": name, "label": label, "patient_id": f"P{p:02d}"})
    path = root / "manifest.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def tiny_config(manifest: Path, **overrides) -> dict:
    cfg = {
        "task": "classification", "name": "tiny", "seed": 0,
        "data": {"dataset": {"name": "manifest", "params": {"csv": str(manifest)}},
                 "class_names": ["normal", "abnormal"], "image_size": [16, 16],
                 "val_fraction": 0.34, "test_fraction": 0.34},
        "model": {"name": "compact_cnn", "params": {"widths": [4, 8], "hidden": 0, "stem_stride": 1}},
        "train": {"epochs": 6, "batch_size": 8, "lr": 0.02, "progress": False, "scheduler": "none"},
        "evaluate": {"n_bootstrap": 50, "abstain_coverage": 0.8},
        "ensemble": {"members": 2, "method": "average", "weighted": True},
        "tune": {"trials": 2, "epochs": 1, "space": {"train.lr": {"type": "float", "low": 0.001, "high": 0.02,
                                                                  "log": True}}},
    }
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    return cfg


@pytest.fixture(scope="session")
def blob_manifest(tmp_path_factory) -> Path:
    return write_blob_manifest(tmp_path_factory.mktemp("blobs"))


@pytest.fixture(scope="session")
def trained_run(blob_manifest, tmp_path_factory) -> Path:
    from medanomaly.config import parse_config
    from medanomaly.engine import train_run

    cfg = parse_config(tiny_config(blob_manifest))
    return train_run(cfg, tmp_path_factory.mktemp("parent") / "run")
