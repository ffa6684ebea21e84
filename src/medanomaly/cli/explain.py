"""``medanomaly explain RUN IMAGE --method M --out DIR``: explanation maps, overlays, faithfulness.

Works for every task through the engine contract (``load_model(run).explainable()``); the work is
:func:`medanomaly.explain.driver.explain_file`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from medanomaly.cli.pacs import REGISTER_TO_FIRST, RESAMPLE_TO_FIRST

def register(app: typer.Typer) -> None:
    @app.command()
    def explain(
        run: Path = typer.Argument(..., help="Run folder of any task (classification, lung_nodule, fusion...)."),
        image: Path = typer.Argument(..., help="Image file; with --evaluate also a folder or CSV manifest; "
                                     "fusion runs: MOD=path,MOD=path (one file per modality)."),
        method: str = typer.Option("gradcam", "--method", "-m",
                                   help="gradcam, gradcampp, occlusion, integrated_gradients, guided_backprop."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default runs/explain-<image>-<time>)."),
        layer: str | None = typer.Option(None, "--layer", help="Target layer for CAM methods (default: automatic)."),
        target: int | None = typer.Option(None, "--target", help="Class index to explain (default: predicted)."),
        mask: Path | None = typer.Option(None, "--mask", help="Reference lesion mask on the image grid (a label map, "
                                         "a DICOM SEG or an RT Structure Set)."),
        label: int = typer.Option(0, "--label", min=0, help="The mask's label that is the lesion (an RT Structure "
                                  "Set's ROI Number); default: every non-zero voxel."),
        evaluate: bool = typer.Option(False, "--evaluate", help="Faithfulness: deletion/insertion AUC vs random maps."),
        dicom: bool = typer.Option(False, "--dicom", help="Also write a DICOM secondary capture (classification)."),
        fov: float = typer.Option(80.0, "--fov", help="Field of view (mm) of each finding's overlay."),
        findings: Path | None = typer.Option(None, "--findings",
                                             help="findings.json to explain instead of running the detector."),
        frame: int | None = typer.Option(None, "--frame", min=0, help="A cine loop (frames in time) or a 4D "
                                         "image: explain this frame or volume (0-based); --mask is that frame's."),
        resample_to_first: bool = RESAMPLE_TO_FIRST,
        register_to_first: bool = REGISTER_TO_FIRST,
    ) -> None:
        """Explain a trained model's call on an image: heatmap overlays (PNG), NIfTI map, faithfulness."""
        from medanomaly.engine import default_out, load_model
        from medanomaly.engine.alignment import alignment_of
        from medanomaly.engine.outputs import output_dir, output_stem
        from medanomaly.errors import InputError, about_file
        from medanomaly.explain.driver import check_options, explain_file
        from medanomaly.jsonio import finite_json

        model = load_model(run)
        explainable = model.explainable()
        check_options(explainable, fov, target, method, layer)  # option errors: not about the image
        fusion = "=" in str(image)  # one file per modality: stacked as components in the model's order
        if label and mask is None:
            raise InputError("--label picks a label of --mask: give --mask")
        alignment = alignment_of(resample_to_first, register_to_first)
        if alignment != "none" and not fusion:
            raise InputError(f"--{alignment}-to-first brings a fusion model's modalities onto one grid: give "
                             "MODALITY=path,MODALITY=path", image)  # fmt: skip
        if frame is not None and (fusion or evaluate or dicom):
            raise InputError("--frame explains one frame of one cine: not with a fusion input, --evaluate or --dicom",
                             image)  # fmt: skip
        # a folder it cannot write (or ITK cannot name) is one line before the image is read; one it made stays only
        # if the explanation is written
        with output_dir(out or default_out("explain", "fusion" if fusion else output_stem(image))) as target_dir:
            source = image
            if fusion:
                from medanomaly.cli.predict import _fusion_inputs
                from medanomaly.engine.verbs import stack_modalities

                source = stack_modalities(model, _fusion_inputs([Path(p) for p in str(image).split(",")]),
                                          alignment)  # fmt: skip
            elif frame is not None:
                from medanomaly.io.frames import read_frame

                with about_file(image):
                    source = read_frame(image, frame)
            with about_file(image):
                report = explain_file(explainable, source, method, target_dir, layer, target, mask, evaluate,
                                      dicom, fov, findings, check_input=getattr(model, "check_input", None),
                                      label=label, frame=frame)  # fmt: skip
        summary = {k: v for k, v in report.items() if k not in ("items",)}
        if fusion and source.meta.get("registration"):  # explained on a modality moved onto another: said with it
            summary["registration"] = source.meta["registration"]
        typer.echo(json.dumps(finite_json(summary), indent=2, allow_nan=False))  # valid JSON: NaN -> null
