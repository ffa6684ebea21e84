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
        mask: Path = typer.Option(None, "--mask", help="Lesion mask on the image grid (non-zero = lesion)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON (one object per connected lesion)."),
        label: int = typer.Option(0, "--label", help="Only this mask label (0 = any non-zero voxel)."),
    ) -> None:
        """Measure every connected lesion of a mask: volume (mL), diameters (mm), HU statistics."""
        import numpy as np

        from medanomaly.errors import InputError
        from medanomaly.io import read
        from medanomaly.quantify.measure import measure_lesions

        if mask is None:
            raise InputError("a lesion mask is required (--mask MASK)", image)
        if not mask.exists():
            raise InputError("mask file not found", mask)
        img = read(image)
        msk = read(mask)
        if not msk.same_grid(img, tol=1e-3):
            raise InputError(f"mask grid {msk.shape} does not match image grid {img.shape}", mask)
        arr = np.asarray(msk.array)
        binary = arr == label if label else arr > 0
        if not binary.any():
            raise InputError("mask is empty" + (f" for label {label}" if label else ""), mask)
        findings = measure_lesions(msk.with_array(binary.astype(np.uint8)), img)
        rows = [f.to_json() for f in findings]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        for i, r in enumerate(rows, start=1):
            typer.echo(
                f"lesion {i}: {r['volume_ml']:.3f} mL, max diameter {r['max_diameter_mm']:.1f} mm, "
                f"axes {r['long_axis_mm']:.1f} x {r['short_axis_mm']:.1f} mm, mean {r['mean_hu']:.0f}"
            )
