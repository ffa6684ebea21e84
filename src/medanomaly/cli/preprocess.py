"""``preprocess`` (a YAML steps pipeline) and ``segment`` (a classical ROI mask) commands."""

from __future__ import annotations

import json
from pathlib import Path

import typer

ROIS = ("lung", "body", "breast", "brain")


def _sidecar(out: Path) -> Path:
    name = out.name
    for ext in (".nii.gz", ".nrrd", ".nii", ".mha", ".mhd", ".png", ".npz"):
        if name.endswith(ext):
            return out.with_name(name[: -len(ext)] + ".steps.json")
    return out.with_name(name + ".steps.json")


def register(app: typer.Typer) -> None:
    @app.command()
    def preprocess(
        in_path: Path = typer.Argument(..., metavar="IN", help="Image (DICOM folder/file, NIfTI, NRRD, PNG)."),
        out_path: Path = typer.Argument(..., metavar="OUT", help="Output image (.nii.gz, .nrrd, ...)."),
        config: Path = typer.Option(..., "--config", "-c", help="YAML list of steps (- {name: window, preset: lung})."),
    ) -> None:
        """Run a preprocessing pipeline; writes OUT and OUT's .steps.json (what every step did)."""
        from medanomaly.io import read, write
        from medanomaly.preprocess.pipeline import Pipeline

        pipeline = Pipeline.from_yaml(config)
        result = pipeline(read(in_path))
        write(result.volume, out_path)
        sidecar = _sidecar(out_path)
        sidecar.write_text(json.dumps(result.to_json(), indent=2))
        typer.echo(f"wrote {out_path} {result.volume.shape} ({len(result.records)} steps; log {sidecar.name})")

    @app.command()
    def segment(
        in_path: Path = typer.Argument(..., metavar="IN", help="Image to segment."),
        out_path: Path = typer.Argument(..., metavar="OUT", help="Output mask (.nii.gz, .nrrd, ...)."),
        roi: str = typer.Option("lung", "--roi", help="lung (CT: 1 right, 2 left), body, breast or brain."),
    ) -> None:
        """Write a classical ROI mask (uint8, same grid as IN) and print its volume in mL."""
        from medanomaly.errors import InputError
        from medanomaly.io import read, write
        from medanomaly.preprocess.steps import ROI_FUNCTIONS

        if roi not in ROI_FUNCTIONS:
            raise InputError(f"unknown --roi {roi!r}; valid: {', '.join(ROIS)}")
        image = read(in_path)
        mask = ROI_FUNCTIONS[roi](image)
        write(mask, out_path)
        voxel_ml = mask.voxel_volume_mm3 / 1000.0
        labels = {int(v): round(float((mask.array == v).sum() * voxel_ml), 1) for v in range(1, int(mask.array.max()) + 1)}
        names = {1: "right", 2: "left"} if roi == "lung" else {1: roi}
        parts = ", ".join(f"{names.get(k, k)} {v} mL" for k, v in labels.items())
        typer.echo(f"wrote {out_path}: {roi} mask, {parts}")
