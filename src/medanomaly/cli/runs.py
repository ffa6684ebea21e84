"""``train`` and ``evaluate``: dispatch a config or a run directory to its task."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer


def default_run_dir(config_path: Path, name: str | None) -> Path:
    """``runs/<name or config stem>-<YYYYmmdd-HHMMSS>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name or config_path.stem}-{stamp}"


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        config: Path = typer.Argument(..., help="YAML config (its `task:` picks what is trained)."),
        out: Path | None = typer.Option(None, "--out", help="Run directory (default runs/<name>-<time>)."),
    ) -> None:
        """Train the task a config describes; writes config, weights, metrics and report to a run dir."""
        from medanomaly.config import load_config, save_config
        from medanomaly.registry import TASKS

        cfg = load_config(config)
        run_dir = out or default_run_dir(config, cfg.name)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir)
        TASKS.get(cfg.task).train(cfg, run_dir)
        typer.echo(f"run: {run_dir}")

    @app.command()
    def evaluate(
        run: Path = typer.Argument(..., help="Run directory written by `medanomaly train`."),
        split: str = typer.Option("test", help="Which split to evaluate."),
    ) -> None:
        """Evaluate a trained run: metrics with 95% CIs, plots and an HTML report in the run dir."""
        from medanomaly.config import load_config
        from medanomaly.errors import InputError
        from medanomaly.registry import TASKS

        if not (run / "config.yaml").is_file():
            raise InputError("not a run directory (no config.yaml)", run)
        cfg = load_config(run / "config.yaml")
        metrics = TASKS.get(cfg.task).evaluate(run, split)
        typer.echo(json.dumps(metrics, indent=2, default=float))
