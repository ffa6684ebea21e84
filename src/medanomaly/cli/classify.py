"""``predict`` and ``tune``: apply a trained run to image files; search hyper-parameters."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _format_prediction(path: Path, prediction) -> str:
    probs = " ".join(f"{c}={p:.3f}" for c, p in zip(prediction.class_names, prediction.scores, strict=True))
    note = " (abstained: low confidence)" if prediction.abstained else ""
    return f"{path.name}: {prediction.label}{note}  [{probs}]"


def register(app: typer.Typer) -> None:
    @app.command()
    def predict(
        run: Path = typer.Argument(..., help="Run directory written by `medanomaly train`."),
        paths: list[Path] = typer.Argument(..., help="Image files (DICOM, NIfTI, NRRD, PNG, ...)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object per image."),
    ) -> None:
        """Classify images: prints the class, the probabilities, and "uncertain" when abstaining."""
        from medanomaly.config import load_config
        from medanomaly.errors import InputError
        from medanomaly.registry import TASKS

        if not (run / "config.yaml").is_file():
            raise InputError("not a run directory (no config.yaml)", run)
        task = TASKS.get(load_config(run / "config.yaml").task)
        if not hasattr(task, "predict"):
            raise InputError("this run's task has no predict", run)
        failures = 0
        for path, outcome in task.predict(run, paths):
            if isinstance(outcome, InputError):
                failures += 1
                typer.echo(f"skipped: {outcome}", err=True)
            elif as_json:
                typer.echo(json.dumps({"file": path.name, **outcome.to_json()}))
            else:
                typer.echo(_format_prediction(path, outcome))
        if failures == len(paths):
            raise typer.Exit(code=2)

    @app.command()
    def tune(
        config: Path = typer.Argument(..., help="YAML config with a `tune:` section (the search space)."),
        trials: int | None = typer.Option(None, "--trials", "-n", help="Number of trials (default: the config's)."),
        out: Path | None = typer.Option(None, "--out", help="Output folder (default runs/<name>-tune-<time>)."),
    ) -> None:
        """Optuna search over the declared space, scored on the validation split; writes best.yaml."""
        from medanomaly.cli.runs import default_run_dir
        from medanomaly.config import load_config
        from medanomaly.errors import InputError
        from medanomaly.registry import TASKS

        cfg = load_config(config)
        task = TASKS.get(cfg.task)
        if not hasattr(task, "tune"):
            raise InputError(f"task {cfg.task!r} has no tuning", config)
        out_dir = out or default_run_dir(config, f"{cfg.name or config.stem}-tune")
        summary = task.tune(cfg, trials, out_dir)
        tag = " (SYNTHETIC data)" if summary.get("synthetic") else ""
        typer.echo(f"best {summary['metric']} = {summary['best_value']:.4f}{tag} with {summary['best_params']}")
        typer.echo(f"tune: {out_dir}")
