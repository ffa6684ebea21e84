"""``fusion-benchmark CONFIG`` and ``register FIXED MOVING --out OUT``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("fusion-benchmark")
    def fusion_benchmark(
        config: Path = typer.Argument(..., help="YAML config with `task: fusion` (configs/fusion_brain_sim.yaml)."),
        out: Path | None = typer.Option(
            None, "--out", help="Folder for fusion_benchmark.md/.json (default runs/<name>-benchmark)."
        ),
    ) -> None:
        """Train and compare single-modality, early, feature, decision and hybrid fusion on one split."""
        from medanomaly.config import load_config
        from medanomaly.engine.outputs import output_dir
        from medanomaly.errors import InputError
        from medanomaly.fusion.benchmark import run_benchmark
        from medanomaly.fusion.task import FusionConfig

        cfg = load_config(config)
        if not isinstance(cfg, FusionConfig):
            raise InputError(f"fusion-benchmark needs a config with task: fusion, got task: {cfg.task}", config)
        with output_dir(out or Path("runs") / f"{cfg.name or config.stem}-benchmark") as out_dir:  # before training
            result = run_benchmark(cfg, out_dir, log=lambda line: typer.echo(line, err=True))
        typer.echo(result.table())
        typer.echo(f"written: {out_dir / 'fusion_benchmark.md'}")

    @app.command("register")
    def register_images(
        fixed: Path = typer.Argument(..., help="Reference image (its grid is kept), e.g. the CT or T1."),
        moving: Path = typer.Argument(..., help="Image brought into the fixed grid, e.g. the MR or PD."),
        out: Path = typer.Option(
            ..., "--out", help="Output image (.nii.gz, .nrrd); the transform goes beside it as .tfm."
        ),
        stages: str = typer.Option("rigid", help="Comma-separated: rigid[,affine[,bspline]]."),
        metric: str = typer.Option("mattes", help="mattes (mutual information, multi-modal) or mean_squares."),
        max_minutes: float | None = typer.Option(None, "--max-minutes", min=0.1, max=24 * 60, help="Stop the "
                                                 "registration after this many minutes (nothing written)."),
        fixed_frame: int | None = typer.Option(None, "--fixed-frame", min=0, help="A cine loop or 4D image as FIXED: "
                                               "this frame or volume of it (0-based)."),
        moving_frame: int | None = typer.Option(None, "--moving-frame", min=0, help="A cine loop or 4D image as "
                                                "MOVING: this frame or volume of it (0-based)."),
        threads: int = typer.Option(1, "--threads", min=1, max=256, help="ITK threads: 1 (the default) gives the "
                                    "same result every run; more is faster on many cores, not reproducible."),
    ) -> None:
        """Register MOVING to FIXED (SimpleITK); write the resampled image, the transform and the residual."""
        from medanomaly.errors import InputError
        from medanomaly.io import check_writable
        from medanomaly.preprocess.registration import check_options
        from medanomaly.preprocess.registration_files import register_files, register_files_within

        stage_list = [s.strip() for s in stages.split(",") if s.strip()]
        check_options(stage_list, metric)  # option errors: not about an image
        check_writable(out)  # an output it cannot write (extension, name), before minutes of registration
        if max_minutes is not None and not math.isfinite(max_minutes):
            raise InputError(f"--max-minutes must be a number of minutes (0.1 to 1440), got {max_minutes}")
        frames = (fixed_frame, moving_frame)
        if max_minutes is None:
            summary = register_files(fixed, moving, out, stage_list, metric,
                                     progress=lambda line: typer.echo(line, err=True), frames=frames,
                                     threads=threads)  # fmt: skip
        else:
            summary = register_files_within(max_minutes, fixed, moving, out, stage_list, metric, frames, threads)
        typer.echo(json.dumps(summary, indent=2))
