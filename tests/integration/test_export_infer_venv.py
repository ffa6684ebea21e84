"""An inference-only install: ``pip install "medanomaly[infer]"`` (a copy of this source tree, so the
build writes nothing here) into a fresh venv without system site packages, pinned by
constraints.txt, has no torch and no MONAI, and runs ``predict`` on a classification package and
``detect`` on a 2D detection package, giving the torch run's answers. Packages come from the
configured index / pip cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medanomaly.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = ("No matching distribution", "Could not find a version", "Failed to establish", "Network is unreachable")

sys.path.insert(0, str(ROOT / "tests" / "unit" / "deploy"))
from test_export import _classify_config  # noqa: E402


def _source_copy(dest: Path) -> Path:
    """What a source distribution holds (pyproject, README, LICENSE, src/), copied to ``dest``."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


def _fresh_venv(path: Path, source: Path) -> Path:
    """A venv without system site packages with ``medanomaly[infer]`` installed from ``source``
    (skipped when no package index or cache is reachable)."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    python = path / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), f"{source}[infer]"]
    res = subprocess.run(pip, capture_output=True, text=True, timeout=1200)
    if res.returncode != 0 and any(word in res.stdout + res.stderr for word in OFFLINE):
        pytest.skip("no package index or cached wheels reachable for the inference-only venv")
    assert res.returncode == 0, res.stderr[-2000:]
    return python


def _cli(python: Path, *args: object) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(python), "-m", "medanomaly.cli.app", *map(str, args)], capture_output=True, text=True,
                          cwd=python.parents[2], env=env, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_packages_run_in_a_torch_free_venv(tmp_path: Path) -> None:
    import torch

    from medanomaly.deploy.export import export_run
    from medanomaly.engine import train_run
    from medanomaly.io import write
    from medanomaly.synth.mammo import render_mammogram

    torch.set_num_threads(1)
    cls_run = train_run(_classify_config(tmp_path / "cls"), tmp_path / "cls" / "run")
    cls_pkg = export_run(cls_run, tmp_path / "cls" / "pkg")
    det_run = train_run(ROOT / "configs" / "breast_mammo_detect_tiny.yaml", tmp_path / "det" / "run")
    det_pkg = export_run(det_run, tmp_path / "det" / "pkg")
    mg = write(render_mammogram(["malignant"], size=96, seed=3).image, tmp_path / "mg.nrrd")

    python = _fresh_venv(tmp_path / "venv", _source_copy(tmp_path / "source"))
    for module in ("torch", "monai"):  # really torch-free
        probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0 and f"No module named '{module}'" in probe.stderr
    image = tmp_path / "cls" / "img" / "p1.nrrd"
    res = _cli(python, "predict", cls_pkg, image, "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout)
    ref = json.loads(CliRunner().invoke(app, ["predict", str(cls_run), str(image), "--json"]).output)
    assert got["label"] == ref["label"]
    assert max(abs(got["probabilities"][k] - ref["probabilities"][k]) for k in ref["probabilities"]) <= 1e-4

    res = _cli(python, "detect", det_pkg, mg, "--out", tmp_path / "venv_detect")
    assert res.returncode == 0, res.stderr[-2000:]
    res = CliRunner().invoke(app, ["detect", str(det_run), str(mg), "--out", str(tmp_path / "torch_detect")])
    assert res.exit_code == 0, res.output
    a = json.loads((tmp_path / "torch_detect" / "findings.json").read_text())["findings"]
    b = json.loads((tmp_path / "venv_detect" / "findings.json").read_text())["findings"]
    assert len(a) == len(b) and [f["bbox_mm"] for f in a] == [f["bbox_mm"] for f in b]
