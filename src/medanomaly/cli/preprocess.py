"""``preprocess`` (a YAML steps pipeline) and ``segment`` (a classical ROI mask) commands."""

from __future__ import annotations

from pathlib import Path

import typer

ROIS = ("lung", "body", "breast", "brain")


def _sidecar(out: Path) -> Path:
    name = out.name
    for ext in (".nii.gz", ".nrrd", ".nii", ".mha", ".mhd", ".png", ".npz"):
        if name.endswith(ext):
            return out.with_name(name[: -len(ext)] + ".steps.json")
    return out.with_name(name + ".steps.json")


def _check_slices(out: Path, image_path: Path, n_slices: int) -> None:
    """A PNG/JPEG output holds one slice: refuse a volume now, before the (long) work."""
    from medanomaly.errors import InputError
    from medanomaly.io.png import PICTURE_SUFFIXES

    if out.suffix.lower() in PICTURE_SUFFIXES and n_slices > 1:
        raise InputError(
            f"a picture holds one slice but {image_path.name} has {n_slices}; write .nii.gz, .nrrd or a DICOM folder",
            out,
        )


def output_file(verb: str, in_path: Path, out_arg: Path | None, out_opt: Path | None) -> Path:
    """The output file of a verb that writes one image: ``--out/-o`` (or the positional OUT), default
    ``runs/<verb>-<IN>-<time>/<IN>.nii.gz`` (``IN`` cut as :func:`medanomaly.engine.default_out` cuts it); never
    the input itself."""
    from medanomaly.engine import default_out
    from medanomaly.engine.outputs import output_stem
    from medanomaly.engine.verbs import DEFAULT_OUT_NAME_CHARS
    from medanomaly.errors import InputError

    if out_arg is not None and out_opt is not None and out_arg != out_opt:
        raise InputError("give the output once (OUT or --out), not both", out_opt)
    stem = output_stem(in_path)
    out_path = out_opt or out_arg or default_out(verb, stem) / f"{stem[:DEFAULT_OUT_NAME_CHARS]}.nii.gz"
    if out_path.exists() and in_path.exists() and out_path.resolve() == in_path.resolve():
        raise InputError("the output would overwrite the input; choose another --out", out_path)
    return out_path


def register(app: typer.Typer) -> None:
    @app.command()
    def preprocess(
        in_path: Path = typer.Argument(..., metavar="IN", help="Image (DICOM folder/file, NIfTI, NRRD, PNG)."),
        out_arg: Path | None = typer.Argument(None, metavar="[OUT]", help="Output image (same as --out)."),
        config: Path = typer.Option(..., "--config", "-c", help="YAML list of steps (- {name: window, preset: lung})."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Output image (.nii.gz, .nrrd, ...; default "
                                        "runs/preprocess-<IN>-<time>/<IN>.nii.gz)."),
        frame: int | None = typer.Option(None, "--frame", min=0, help="A cine loop (frames in time) or a 4D image: "
                                         "preprocess this frame or volume (0-based)."),
    ) -> None:
        """Run a preprocessing pipeline; writes OUT and OUT's .steps.json (what every step did).

        Example: medanomaly preprocess lung1_image.nrrd lung1_pre.nii.gz -c configs/preprocess_lung.yaml
        """
        from medanomaly.cli.info import log_warnings_to_stderr
        from medanomaly.errors import about_file
        from medanomaly.io import check_writable, write
        from medanomaly.io.frames import read_frame
        from medanomaly.io.limits import check_name_fits
        from medanomaly.jsonio import write_json
        from medanomaly.preprocess.pipeline import Pipeline

        log_warnings_to_stderr()
        out_path = output_file("preprocess", in_path, out_arg, out)
        check_writable(out_path)
        check_name_fits(out_path, _sidecar(out_path))
        pipeline = Pipeline.from_yaml(config)
        image = read_frame(in_path, frame)
        _check_slices(out_path, in_path, image.shape[0])
        with about_file(in_path):
            result = pipeline(image)
        write(result.volume, out_path)
        sidecar = _sidecar(out_path)
        write_json(sidecar, result.to_json())
        shape = " x ".join(map(str, result.volume.shape))
        typer.echo(f"wrote {out_path} ({shape} z,y,x; {len(result.records)} steps; log {sidecar.name})")

    @app.command()
    def segment(
        in_path: Path = typer.Argument(..., metavar="IN", help="Image to segment."),
        out_arg: Path | None = typer.Argument(None, metavar="[OUT]", help="Output mask (same as --out)."),
        roi: str = typer.Option(
            "lung",
            "--roi",
            help="lung (CT in HU: 1 right, 2 left), body (CT or MRI), brain (head MRI) or breast (mammogram, US).",
        ),
        out: Path | None = typer.Option(None, "--out", "-o", help="Output mask (.nii.gz, .nrrd, ...; default "
                                        "runs/segment-<IN>-<time>/<IN>.nii.gz)."),
        frame: int | None = typer.Option(None, "--frame", min=0, help="A cine loop (frames in time) or a 4D image: "
                                         "segment this frame or volume (0-based)."),
    ) -> None:
        """Write a classical ROI mask (uint8, same grid as IN) and print its volume in mL (area in cm2 for 2D).

        Example: medanomaly segment lung1_image.nrrd lung1_lungs.nii.gz --roi lung
        """
        from medanomaly.cli.info import log_warnings_to_stderr
        from medanomaly.errors import InputError, about_file
        from medanomaly.io import check_writable, write
        from medanomaly.io.frames import read_frame
        from medanomaly.preprocess.steps import ROI_FUNCTIONS

        log_warnings_to_stderr()
        if roi not in ROI_FUNCTIONS:
            raise InputError(f"unknown --roi {roi!r}; valid: {', '.join(ROIS)}")
        out_path = output_file("segment", in_path, out_arg, out)
        check_writable(out_path)
        image = read_frame(in_path, frame)
        _check_slices(out_path, in_path, image.shape[0])
        with about_file(in_path):
            mask = ROI_FUNCTIONS[roi](image)
        write(mask, out_path)
        if mask.is_2d:  # one slice: an area (cm2), not a volume
            sx, sy, _ = mask.spacing
            per_voxel, unit = sx * sy / 100.0, "cm2"
        else:
            per_voxel, unit = mask.voxel_volume_mm3 / 1000.0, "mL"
        labels = {int(v): round(float((mask.array == v).sum() * per_voxel), 1) for v in range(1, int(mask.array.max()) + 1)}
        names = {1: "right", 2: "left"} if roi == "lung" else {1: roi}
        parts = ", ".join(f"{names.get(k, k)} {v} {unit}" for k, v in labels.items())
        typer.echo(f"wrote {out_path}: {roi} mask, {parts}")
