"""``export``: a finished run of any task -> a self-contained ONNX package (fp32, optional int8).

``medanomaly export RUN --out PKG [--int8] [--calibration N] [--force]`` writes PKG/model.onnx
(+ model.int8.onnx), model.json and manifest.json (see :mod:`medanomaly.deploy.package`). The
package is then accepted wherever a run is: ``medanomaly predict PKG IMAGE``, ``medanomaly detect
PKG CT``. Importing this module registers the package loader with the engine.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def export(
        run: Path = typer.Argument(..., help="Finished run folder (classification, lung_nodule, fusion, detection, anomaly)."),
        out: Path = typer.Option(..., "--out", "-o", help="Package folder to create."),
        int8: bool = typer.Option(False, "--int8", help=(
            "Also write model.int8.onnx (static QDQ, per-channel weights, calibrated on validation data), refused "
            "(exit 2) when the validation metric drops: AUC > 0.005 / accuracy > 0.01 (classification, fusion), "
            "CPM > 0.02 (lung_nodule: or a real lesion's rank changes; detection), synthetic-lesion pixel/image "
            "AUROC > 0.005 (anomaly, normal validation slices with synthetic lesions; thresholds "
            "recomputed on the int8 maps; the atlas method is not exportable).")),
        calibration: int = typer.Option(64, "--calibration", help="Validation items for int8 calibration."),
        force: bool = typer.Option(False, "--force", help="Keep an int8 graph the accuracy guard refuses."),
    ) -> None:
        """Export a run to ONNX (opset 17, dynamic batch), checked against torch on validation."""
        from medanomaly.deploy.export import export_run
        from medanomaly.deploy.package import read_manifest

        pkg = export_run(run, out, int8=int8, calibration=calibration, force=force)
        manifest = read_manifest(pkg)
        typer.echo(f"fp32: max |onnx - torch| = {manifest['fp32_max_abs_diff']:.2e} on "
                   f"{manifest['validation_items']} validation item(s)")  # fmt: skip
        guard = manifest.get("int8")
        if guard:
            drops = {k: guard[k] for k in ("auc_drop", "accuracy_drop", "cpm_drop", "pixel_auroc_drop", "image_auroc_drop") if k in guard}
            typer.echo(f"int8: guard {'passed' if guard['passed'] else 'REFUSED (kept with --force)'} {drops}")
        for warning in manifest.get("warnings", []):
            typer.echo(f"warning: {warning}", err=True)
        typer.echo(f"package: {pkg} (default graph {manifest['default_graph']})")
