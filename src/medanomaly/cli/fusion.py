"""``fusion-benchmark CONFIG`` and ``register FIXED MOVING --out OUT``."""

from __future__ import annotations

import json
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
    ) -> None:
        """Register MOVING to FIXED (SimpleITK); write the resampled image, the transform and the residual."""
        from medanomaly.errors import about_file
        from medanomaly.preprocess.registration import (check_options, check_registrable, load_scalar, register,
                                                        write_transform)  # fmt: skip
        from medanomaly.io import check_writable, write

        stage_list = [s.strip() for s in stages.split(",") if s.strip()]
        check_options(stage_list, metric)  # option errors: not about an image
        check_writable(out)  # an output it cannot write (extension, name), before minutes of registration
        images = {}
        for role, path in (("fixed", fixed), ("moving", moving)):
            with about_file(path):  # each bad image is named by its file
                images[role] = load_scalar(path)
                check_registrable(images[role], role)
        with about_file(moving):  # what is left is a pair that does not fit: the moving image is named
            result = register(images["fixed"], images["moving"], stages=stage_list, metric=metric,
                              progress=lambda line: typer.echo(line, err=True))  # fmt: skip
        written = write(result.resampled, out)
        name = written.name
        stem = name[: -len("".join(written.suffixes))] if written.suffixes else name
        tfm = write_transform(result.transform, written.with_name(stem + ".tfm"))
        summary = {**result.summary(), "image": str(written), "transform": str(tfm)}
        typer.echo(json.dumps(summary, indent=2))
