"""``train`` and ``evaluate``: dispatch a config or a run directory to its task."""

from __future__ import annotations

import json
from collections.abc import Iterator
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
        >>> list(summarise_metrics({"cases": [{"case": "b1", "findings": [{"score": 1.0}]}]}))
        ['cases[0].case                       b1', 'cases[0].findings                   1 rows (in metrics.json)']
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
        elif value and isinstance(value, list) and all(isinstance(v, dict) for v in value):
            if "[" in prefix or len(value) > _MAX_INLINE_LIST:  # rows within rows (a case's findings): a count
                yield f"{name:<35} {len(value)} rows (in metrics.json)"
            else:
                for i, row in enumerate(value):
                    yield from summarise_metrics(row, prefix=f"{name}[{i}].")
        elif isinstance(value, list) and len(value) > _MAX_INLINE_LIST:
            continue
        elif isinstance(value, float):
            yield f"{name:<35} {value:.4g}"
        elif isinstance(value, list) and any(isinstance(v, float) for v in value):
            yield f"{name:<35} [" + ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value) + "]"
        else:
            yield f"{name:<35} {value}"


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        config: Path = typer.Argument(..., help="YAML config (its `task:` picks what is trained)."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Run folder (default runs/train-<name>-<time>)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Train into a folder that already holds a run."),
    ) -> None:
        """Train the task a config describes; writes config, model.json, weights, metrics and report.

        Under `torchrun --nproc_per_node N` it trains with PyTorch DDP (only rank 0 writes the run).
        """
        from medanomaly.engine import train_run

        run_dir = train_run(config, out, overwrite=overwrite)
        typer.echo(f"run: {run_dir}")

    @app.command()
    def evaluate(
        run: Path = typer.Argument(..., help="Run folder written by `medanomaly train`."),
        split: str = typer.Option("test", help="Which split to evaluate."),
        as_json: bool = typer.Option(False, "--json", help="Print the metrics as one JSON object."),
    ) -> None:
        """Evaluate a trained run: metrics with 95% CIs, plots and report.html in the run folder."""
        from medanomaly.engine import evaluate_run
        from medanomaly.jsonio import finite_json

        metrics = evaluate_run(run, split)
        if as_json:
            typer.echo(json.dumps(finite_json(metrics), indent=2))
            return
        for line in summarise_metrics({k: v for k, v in metrics.items() if k != "files"}):
            typer.echo(line)
        files = metrics.get("files") or ["metrics.json", "report.html"]  # a task that writes elsewhere names its files
        typer.echo("full metrics and report: " + ", ".join(f"{run}/{name}" for name in files))
