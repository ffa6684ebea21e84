"""The ``anomaly`` demo step: train the normative baseline on the normal brains and report the
brain1/brain2 tumour maps (a few minutes on 2 CPU cores)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["run_anomaly_step"]


def run_anomaly_step(out_dir: str | Path) -> Path:
    """Train ``configs/anomaly_brain.yaml``'s data with the normative method into
    ``out_dir/anomaly_run`` and evaluate it; returns the path of ``report.html``."""
    from medanomaly.anomaly.config import AnomalyConfig
    from medanomaly.engine import evaluate_run, train_run

    config = AnomalyConfig(name="demo_anomaly", method={"name": "normative", "params": {}},
                           data={"train": ("mni152", "ch2"), "val": ("ch2better",), "size": 96, "step_mm": 3.0, "copies": 2},
                           evaluate={"n_bootstrap": 500})  # fmt: skip
    run = train_run(config, Path(out_dir) / "anomaly_run", overwrite=True)
    evaluate_run(run)
    return run / "report.html"
