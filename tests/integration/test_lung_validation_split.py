"""``medanomaly evaluate RUN --split val`` on a lung_nodule run: a validation draw in the training lung, as large
as the held-out draw, disjoint from the learning curve's scans; it writes its own files and leaves the held-out
``metrics.json`` and ``report.html`` alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.integration.conftest import lung_detector_run


def _cli(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medanomaly.cli.app", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600)  # fmt: skip


def test_validation_split_scores_its_own_draw_and_keeps_the_heldout_record(tmp_path):
    run = lung_detector_run(tmp_path / "lung")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["simulation"].update(sources=[{"case": "lung1"}], test_scans_per_source=1, nodules_per_test_scan=2,
                                val_scans_per_source=2)  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.json").write_text('{"heldout": "kept"}')
    res = _cli("evaluate", run, "--split", "val", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"{run}/metrics_val.json" in res.stdout
    metrics = json.loads((run / "metrics_val.json").read_text())
    val = metrics["validation_synthetic"]
    assert (val["n_scans"], val["n_lesions"]) == (1, 2)
    assert val["synthetic"] is True and "from scan 2 on" in val["split"] and "training" in val["split"]
    assert 0.0 <= val["cpm"] <= 1.0
    assert (run / "froc_val.png").stat().st_size > 0
    assert json.loads((run / "metrics.json").read_text()) == {"heldout": "kept"}
    assert not (run / "report.html").exists()
    bad = _cli("evaluate", run, "--split", "train", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: lung_nodule has the splits 'test' and 'val', got 'train'"], bad.stderr
