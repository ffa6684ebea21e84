"""``train`` and ``evaluate``: dispatch a config or a run directory to its task."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

#: Longest list printed inline by ``evaluate``; longer ones (curves) stay in metrics.json.
_MAX_INLINE_LIST = 8


def summarise_metrics(metrics: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Readable lines of a task's metrics: ``name  value [ci_low, ci_high]``; curves left out.

    Example:
        >>> list(summarise_metrics({"auc": {"value": 0.9, "ci_low": 0.8, "ci_high": 0.95}, "n": 10}))
        ['auc                                 0.900 [0.800, 0.950]', 'n                                   10']
    """
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and {"value", "ci_low", "ci_high"} <= value.keys():
            v, lo, hi = (value[k] for k in ("value", "ci_low", "ci_high"))
            if v is None:
                yield f"{name:<35} n/a"
            else:
                ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
                yield f"{name:<35} {v:.3f}{ci}"
        elif isinstance(value, dict):
            yield from summarise_metrics(value, prefix=f"{name}.")
        elif isinstance(value, list) and len(value) > _MAX_INLINE_LIST:
            continue
        elif isinstance(value, float):
            yield f"{name:<35} {value:.4g}"
        else:
            yield f"{name:<35} {value}"


def write_status(run_dir: Path, status: str, **extra: Any) -> None:
    """Record in ``run_dir/status.json`` whether training is ``running`` or ``complete``, so an
    interrupted run is recognisable as such."""
    (run_dir / "status.json").write_text(json.dumps({"status": status, **extra}))


def read_status(run_dir: Path) -> str | None:
    """The status written by :func:`write_status`, or None for a run made without it."""
    try:
        return str(json.loads((run_dir / "status.json").read_text())["status"])
    except (FileNotFoundError, KeyError, ValueError):
        return None


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
        task = TASKS.get(cfg.task)
        run_dir = out or default_run_dir(config, cfg.name)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir)
        write_status(run_dir, "running")
        start = time.perf_counter()
        task.train(cfg, run_dir)
        write_status(run_dir, "complete", seconds=round(time.perf_counter() - start, 1))
        typer.echo(f"run: {run_dir}")

    @app.command()
    def evaluate(
        run: Path = typer.Argument(..., help="Run directory written by `medanomaly train`."),
        split: str = typer.Option("test", help="Which split to evaluate."),
        as_json: bool = typer.Option(False, "--json", help="Print the metrics as one JSON object."),
    ) -> None:
        """Evaluate a trained run: metrics with 95% CIs, plots and an HTML report in the run dir."""
        from medanomaly.config import load_config
        from medanomaly.errors import InputError
        from medanomaly.registry import TASKS

        if not (run / "config.yaml").is_file():
            raise InputError("not a run directory (no config.yaml)", run)
        if read_status(run) == "running":
            raise InputError("training of this run did not finish (status.json says running); train it again", run)
        cfg = load_config(run / "config.yaml")
        metrics = TASKS.get(cfg.task).evaluate(run, split)
        if as_json:
            typer.echo(json.dumps(metrics, indent=2, default=float))
            return
        for line in summarise_metrics(metrics):
            typer.echo(line)
        typer.echo(f"full metrics and report: {run}/metrics.json, {run}/report.html")
