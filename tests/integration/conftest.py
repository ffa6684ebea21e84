"""Integration-test helpers: the committed lung detector fixture as a finished run folder, and tiny
anomaly runs trained here on the real normal brains (``configs/anomaly_tiny.yaml``), a tiny fusion run (simulated).

``tests/fixtures/lung_detector/`` holds the demo lung_nodule detector (``LungNoduleConfig()``
defaults) trained once on simulated nodules inserted into lung1 / lung2 (synthetic training data):
its weights (``model.safetensors``, < 2 MB), ``detector.json``, ``model.json``, ``config.yaml`` and
``status.json`` (complete): a finished run folder as it is.
Its top finding on lung1 and on lung2 is the real lesion, which is all the viewer and service
tests need; it is not a validated detector.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

FIXTURE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "lung_detector"
ROOT = Path(__file__).resolve().parents[2]
#: Tiny parameters per anomaly method for export tests (seconds to train on one thread).
TINY_ANOMALY_PARAMS = {"normative": {"z_bins": 3}, "autoencoder": {"channels": [4, 8, 8], "num_res_units": 0},
                       "padim": {"channels": [4, 8, 8], "num_res_units": 0},
                       "draem": {"channels": [4, 8, 8], "disc_channels": [4, 8], "num_res_units": 0}}  # fmt: skip

#: A tiny fusion config (T1 + PD, 32 x 32, simulated brains: synthetic; seconds to train).
TINY_FUSION = {
    "task": "fusion",
    "name": "tiny",
    "seed": 0,
    "data": {
        "source": "simulated",
        "size": [32, 32],
        "n_train": 96,
        "n_val": 32,
        "n_test": 48,
        "simulation": {"strong_contrast": [0.8, 1.2]},
    },
    "model": {"name": "fusion_decision", "params": {"widths": [4, 8]}},
    "train": {"epochs": 3, "batch_size": 16},
    "benchmark": {
        "n_bootstrap": 50,
        "variants": [
            {"label": "single T1", "model": {"name": "fusion_early", "params": {"widths": [4, 8]}}, "modalities": ["T1"]},
            {"label": "hybrid", "model": {"name": "fusion_hybrid", "params": {"widths": [4, 8]}}},
        ],
    },
}


def train_tiny_fusion(root: Path, epochs: int = 1) -> Path:
    """Train :data:`TINY_FUSION` for ``epochs`` into ``root/fusion`` (the model's name when served)."""
    import json

    import yaml

    from medanomaly.engine import train_run

    cfg = json.loads(json.dumps(TINY_FUSION))
    cfg["train"]["epochs"] = epochs
    (root / "fusion.yaml").write_text(yaml.safe_dump(cfg))
    return train_run(root / "fusion.yaml", root / "fusion")


def train_tiny_anomaly(root: Path, method: str) -> Path:
    """Train ``configs/anomaly_tiny.yaml`` with ``method`` (:data:`TINY_ANOMALY_PARAMS`) into ``root/run``."""
    import torch
    import yaml

    from medanomaly.engine import train_run

    torch.set_num_threads(1)
    cfg = yaml.safe_load((ROOT / "configs" / "anomaly_tiny.yaml").read_text())
    cfg["method"] = {"name": method, "params": TINY_ANOMALY_PARAMS[method]}
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return train_run(root / "cfg.yaml", root / "run")


def lung_detector_run(dest: Path) -> Path:
    """Copy the fixture detector (a finished run folder, ``status.json`` included) into ``dest``.

    Args:
        dest: the run folder to create; its name is the model's name in ``medanomaly serve``.

    Returns:
        ``dest``, loadable by ``medanomaly.engine.load_model``.
    """
    return Path(shutil.copytree(FIXTURE_DIR, dest))


@pytest.fixture(scope="session")
def fixture_lung_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder called ``lung`` holding the fixture detector."""
    return lung_detector_run(tmp_path_factory.mktemp("fixture-run") / "lung")


@pytest.fixture(scope="session")
def tiny_anomaly_run():
    """``tiny_anomaly_run(root, method)``: a tiny anomaly run trained into ``root/run`` (:func:`train_tiny_anomaly`)."""
    return train_tiny_anomaly


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the console entry point in-process (it turns our errors into one line and an exit code, which typer's
    CliRunner does not); returns (exit code, stdout, stderr)."""
    from medanomaly.cli.app import main

    monkeypatch.setattr(sys, "argv", ["medanomaly", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    return int(exit_info.value.code or 0), out.out, out.err
