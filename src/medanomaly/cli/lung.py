"""``detect`` and ``quantify``: whole-image lesion detection and lesion measurement.

``medanomaly detect RUN IMAGE --out DIR`` writes ``DIR/findings.json`` (the one findings schema of
:mod:`medanomaly.io.findings`: ``center_mm``, ``bbox_mm``, ``score``, ``volume_ml``, ``mean_hu``, ...).
``medanomaly quantify IMAGE --mask MASK --json`` prints one object per connected lesion, same keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def detect(
        run: Path = typer.Argument(..., help="Run folder of a trained detector (e.g. lung_nodule)."),
        image: Path = typer.Argument(..., help="Image to search (chest CT in HU for the lung recipe)."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default runs/detect-<image>-<time>)."),
        overlays: bool = typer.Option(False, "--overlays", help="Also write an axial overlay PNG per finding."),
        masks: bool = typer.Option(False, "--masks", help="Also write each finding's mask as NRRD."),
        dicom: bool = typer.Option(False, "--dicom", help="Also write DICOM SEG + SR (TID 1500) for a DICOM input."),
        frame: int | None = typer.Option(None, "--frame", min=0, help="A cine loop (frames in time) or a 4D image: "
                                         "detect in this frame or volume (0-based)."),
    ) -> None:
        """Find lesions in a whole image; write findings.json (centre, box, score, mask, measurements)."""
        from medanomaly.engine import default_out, load_model
        from medanomaly.engine.outputs import output_dir, output_stem, write_detection
        from medanomaly.errors import InputError, about_file
        from medanomaly.io.assumed_spacing import spacing_note
        from medanomaly.io.frames import read_frame

        if dicom and frame is not None:
            raise InputError("--dicom writes a SEG and an SR on the source series' grid: not for one frame of a cine "
                             "(give one of --dicom and --frame)", image)  # fmt: skip
        with output_dir(out or default_out("detect", output_stem(image))) as target:
            model = load_model(run)
            if not model.class_names or model.task not in ("lung_nodule", "detection"):
                raise InputError(f"a {model.task} run does not detect lesions; use `medanomaly predict`", run)
            with about_file(image):
                volume = read_frame(image, frame)
                model.check_input(volume, image)
                if dicom:  # the source headers our SEG / SR reference, checked before the model runs
                    from medanomaly.deploy.dicom_out import source_series_for_path

                    source = source_series_for_path(image, volume)
                prediction = model.predict(volume)
            path = write_detection(target, image, volume, prediction, overlays, masks, run=run.name)
            note = spacing_note(volume)
            typer.echo(f"{len(prediction.findings)} finding(s) -> {path}" + (f" ({note})" if note else ""))
            if dicom:
                from medanomaly.deploy.dicom_out import write_dicom_outputs_for_path
                from medanomaly.deploy.dicom_sr import threshold_parameters

                written = write_dicom_outputs_for_path(source, volume, prediction, target / "dicom", run_id=run.name,
                                                       algorithm=model.task, task=model.task,
                                                       parameters=threshold_parameters(model.info))  # fmt: skip
                typer.echo(f"DICOM outputs: {', '.join(str(p) for p in written.paths())}")

    @app.command()
    def quantify(
        image: Path = typer.Argument(..., help="The image the mask belongs to (CT in HU for HU statistics)."),
        mask: Path = typer.Option(None, "--mask", help="Lesion mask on the image grid (0 = background), a DICOM SEG, "
                                  "or an RT Structure Set (its contours filled on the image's grid)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON: per label the whole lesion, then its parts."),
        label: int = typer.Option(0, "--label", min=0, help="Only this mask label (0 = every label, each on its own; "
                                  "of an RT Structure Set, its ROI Number: overlapping ROIs are read one at a time)."),
        partial_volume: bool = typer.Option(False, "--partial-volume", help="Chest CT: also each lesion's "
                                            "partial-volume volume in the lungs (partial_volume_ml; docs/quantify.md)."),
        frame: int | None = typer.Option(None, "--frame", min=0, help="A cine loop (frames in time) or a 4D image: "
                                         "measure this frame or volume (0-based) as one image; the mask is that "
                                         "frame's or the cine's (the volume's grid for a 4D image)."),
        show_roi_names: bool = typer.Option(False, "--roi-names", help="An RT Structure Set: print each ROI's name "
                                            "beside its number (free text a person typed: off by default)."),
    ) -> None:
        """Measure each label of a mask as one lesion, then its connected parts: volume (mL),
        diameters (mm), IBSI / pyradiomics shape features, intensity statistics."""
        from medanomaly.errors import InputError, about_file
        from medanomaly.io import read_mask
        from medanomaly.io.assumed_spacing import assumed_spacing_json, spacing_note
        from medanomaly.io.frames import frame_of_mask, read_with_frame
        from medanomaly.io.rtstruct import roi_names
        from medanomaly.jsonio import finite_json
        from medanomaly.preprocess.checks import require_float32_range
        from medanomaly.quantify.labels import INTENSITY_STATISTICS, measure_labels
        from medanomaly.types import require_scalar, require_slices

        if mask is None:
            raise InputError("a lesion mask is required (--mask MASK)", image)
        if not mask.exists():
            raise InputError("mask file not found", mask)
        with about_file(image):
            cine, img = read_with_frame(image, frame)
            require_scalar(img, INTENSITY_STATISTICS)  # before the mask is read: names the image file
            require_float32_range(img, INTENSITY_STATISTICS)  # an SD of values over 1e154 overflowed to inf
            require_slices(img, "measuring a lesion")
        msk = frame_of_mask(read_mask(mask, cine, label=label, frame=frame), cine, frame)  # RT Structure Set: ROIs
        names = roi_names(mask) if show_roi_names and msk.meta.get("modality") == "RTSTRUCT" else {}
        try:
            lesions = measure_labels(msk, img, label=label)
        except InputError as exc:
            raise InputError(exc.reason, mask) from None
        if partial_volume:
            with about_file(image):
                lesions = _with_partial_volumes(lesions, img)
        assumed = assumed_spacing_json(img)  # the file states no pixel spacing along some axes: those "mm" are voxels
        if as_json:
            rows = [{**lesion.to_json(), **({"roi_name": names[lesion.label_value]} if lesion.label_value in names
                                            else {}), **assumed}
                    for lesion in lesions]  # fmt: skip
            typer.echo(json.dumps(finite_json(rows), indent=2, allow_nan=False))
            return
        if assumed:
            typer.echo(f"note: {spacing_note(img)}", err=True)
        for lesion in lesions:
            typer.echo(_lesion_line(lesion, partial_volume, names.get(lesion.label_value) if lesion.whole else None))


def _lesion_line(lesion: Any, partial_volume: bool, roi_name: str | None = None) -> str:
    """One measured lesion (or part) as ``quantify`` prints it: volume and sphericity for a volume, area (mm², cm²)
    for a one-slice image, whose lesions have no volume to speak of; a structure set's ROI name after its number."""
    import math

    from medanomaly.errors import printable

    m = lesion.finding.measurements
    head = f"label {lesion.label_value}" if lesion.whole else f"  part {lesion.part} of {lesion.n_parts}"
    if roi_name:
        head += f" ({printable(roi_name)})"
    if lesion.whole and lesion.n_parts > 1:
        head += f" (whole, {lesion.n_parts} parts)"
    flat = math.isfinite(m.area_mm2)
    size = f"area {m.area_mm2:.1f} mm² ({m.area_mm2 / 100:.2f} cm²)" if flat else f"{m.volume_ml:.3f} mL"
    shape = "" if flat else f", sphericity {m.sphericity:.2f}"
    return (f"{head}: {size}, max diameter {m.max_diameter_mm:.1f} mm, axes {m.long_axis_mm:.1f} x "
            f"{m.short_axis_mm:.1f} mm{shape}, mean {m.mean:.0f} {m.intensity_unit}"
            + (f", partial volume {m.partial_volume_ml:.3f} mL" if partial_volume else ""))  # fmt: skip


def _with_partial_volumes(lesions: list[Any], image: Any) -> list[Any]:
    """Each measured lesion with its partial-volume volume (mL) in the lungs of ``image``, a chest CT in HU
    (:func:`medanomaly.quantify.partial_volume.with_partial_volume`). Raises InputError (one line) for an image
    that is not a chest CT."""
    from dataclasses import replace

    import numpy as np

    from medanomaly.preprocess.lungs import lung_region
    from medanomaly.quantify.partial_volume import with_partial_volume

    lung = np.asarray(lung_region(image, what="partial-volume analysis").array) > 0
    hu = np.asarray(image.array)
    return [replace(les, finding=with_partial_volume(les.finding, hu, lung, image.spacing, image.direction))
            for les in lesions]
