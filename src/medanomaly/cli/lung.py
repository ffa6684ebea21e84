"""``detect`` and ``quantify``: whole-volume nodule detection and lesion measurement.

``medanomaly detect RUN IMAGE --out DIR`` writes ``DIR/findings.json`` (a list of findings with
``center_mm``, ``bbox_mm``, ``score``, ``volume_ml``, ``max_diameter_mm``, ``mean_hu``, ...).
``medanomaly quantify IMAGE --mask MASK --json`` prints one object per connected lesion, same keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def detect(
        run: Path = typer.Argument(..., help="Run directory of a trained lung_nodule detector."),
        image: Path = typer.Argument(..., help="Chest CT (NRRD, NIfTI, DICOM folder...) in HU."),
        out: Path = typer.Option(Path("detections"), "--out", help="Output folder for findings.json."),
        overlays: bool = typer.Option(False, "--overlays", help="Also write an axial overlay PNG per finding."),
        masks: bool = typer.Option(False, "--masks", help="Also write each finding's mask as NRRD."),
    ) -> None:
        """Detect lung nodules in a whole chest CT; write findings.json (centre, box, score, measurements)."""
        from medanomaly.detect.detector import NoduleDetector
        from medanomaly.detect.grid import lung_region
        from medanomaly.io import read, write

        detector = NoduleDetector.load(run)
        ct = read(image)
        lung = lung_region(ct, image)
        findings = detector.detect(ct, lung)
        out.mkdir(parents=True, exist_ok=True)
        rows = []
        for i, f in enumerate(findings, start=1):
            row = f.to_json()
            row["rank"] = i
            if overlays:
                from medanomaly.evaluate.lung_report import plot_finding

                row["overlay"] = plot_finding(ct, f, out / f"finding_{i:02d}.png").name
            if masks and f.mask is not None:
                row["mask"] = write(f.mask, out / f"finding_{i:02d}_mask.nrrd").name
            rows.append(row)
        (out / "findings.json").write_text(json.dumps(rows, indent=2))
        typer.echo(f"{len(findings)} finding(s) -> {out / 'findings.json'}")

    @app.command()
    def quantify(
        image: Path = typer.Argument(..., help="The image the mask belongs to (CT in HU for HU statistics)."),
        mask: Path = typer.Option(None, "--mask", help="Lesion mask on the image grid (0 = background)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON: per label the whole lesion, then its parts."),
        label: int = typer.Option(0, "--label", help="Only this mask label (0 = every label, each on its own)."),
    ) -> None:
        """Measure each label of a mask as one lesion, then its connected parts: volume (mL),
        diameters (mm), IBSI / pyradiomics shape features, intensity statistics."""
        from medanomaly.errors import InputError
        from medanomaly.io import read
        from medanomaly.jsonio import finite_json
        from medanomaly.quantify.labels import measure_labels

        if mask is None:
            raise InputError("a lesion mask is required (--mask MASK)", image)
        if not mask.exists():
            raise InputError("mask file not found", mask)
        img = read(image)
        msk = read(mask)
        try:
            lesions = measure_labels(msk, img, label=label)
        except InputError as exc:
            raise InputError(exc.reason, mask) from None
        if as_json:
            rows = [lesion.to_json() for lesion in lesions]
            typer.echo(json.dumps(finite_json(rows), indent=2, allow_nan=False))
            return
        for lesion in lesions:
            m = lesion.finding.measurements
            head = (f"label {lesion.label_value}" if lesion.whole else f"  part {lesion.part} of {lesion.n_parts}")
            if lesion.whole and lesion.n_parts > 1:
                head += f" (whole, {lesion.n_parts} parts)"
            typer.echo(
                f"{head}: {m.volume_ml:.3f} mL, max diameter {m.max_diameter_mm:.1f} mm, "
                f"axes {m.long_axis_mm:.1f} x {m.short_axis_mm:.1f} mm, sphericity {m.sphericity:.2f}, "
                f"mean {m.mean:.0f}"
            )
