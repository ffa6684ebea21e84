"""``medanomaly explain RUN IMAGE --method M --out DIR``: explanation maps, overlays, faithfulness.

Lung-nodule runs: the detector runs on the CT (or ``--findings findings.json`` gives the findings)
and each finding is explained on a patch around it (one PNG per finding, plus the stitched map as
NIfTI on the CT grid). Classification runs: the
whole image is explained (PNG + NIfTI). ``--mask`` adds the reference lesion (contour, pointing
game, energy inside). ``--evaluate`` adds deletion/insertion AUCs against random maps; with a
folder or a CSV manifest (columns ``image``, optional ``mask``) as IMAGE it evaluates a dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

IMAGE_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha", ".mhd", ".dcm", ".png", ".jpg", ".jpeg", ".npz")


def _dataset_items(path: Path) -> list[tuple[str, Path, Path | None]]:
    """(name, image, mask) from a CSV manifest or a folder (``X_image.*`` paired with ``X_label/_mask.*``)."""
    import csv

    from medanomaly.errors import InputError

    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or "image" not in rows[0]:
            raise InputError("manifest needs an 'image' column", path)
        return [(Path(r["image"]).name, path.parent / r["image"], (path.parent / r["mask"]) if r.get("mask") else None)
                for r in rows]  # fmt: skip
    files = sorted(p for p in path.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES))
    masks = {p.name for p in files if "_label" in p.name or "_mask" in p.name}
    items = []
    for p in files:
        if p.name in masks:
            continue
        mask = next((p.with_name(p.name.replace("_image", tag)) for tag in ("_label", "_mask")
                     if "_image" in p.name and p.name.replace("_image", tag) in masks), None)  # fmt: skip
        items.append((p.name, p, mask))
    if not items:
        raise InputError("no images found", path)
    return items


def _evaluate_dataset(ex: Any, path: Path, method: str, layer: str | None, target: int | None) -> dict[str, Any]:
    from medanomaly.errors import InputError
    from medanomaly.explain.faithfulness import evaluate_dataset
    from medanomaly.io import read

    skipped: list[tuple[str, str]] = []

    def items():
        for name, image, mask in _dataset_items(path):
            try:
                yield name, read(image), read(mask) if mask is not None else None
            except InputError as exc:
                skipped.append((name, str(exc)))

    if ex.patch_size is not None:
        raise InputError("--evaluate on a folder needs a whole-image model; give one CT with --mask for a lung run")
    result = evaluate_dataset(ex.model, items(), method, layer=layer, target=target if target is not None else ex.target,
                              preprocess=ex.preprocess, output_fn=ex.output_fn)  # fmt: skip
    out = result.to_json()
    out["skipped"] += [{"name": n, "reason": r} for n, r in skipped]
    out["summary"]["synthetic_model"] = ex.synthetic
    return out


def _stitch(ct: Any, results: list[Any]) -> Any:
    """Maximum of the finding maps, resampled onto the full CT grid (a Volume)."""
    import numpy as np

    from medanomaly.explain.maps import resample_to

    full = np.zeros(ct.shape, np.float32)
    for r in results:
        full = np.maximum(full, np.asarray(resample_to(r.map, ct).array))
    meta = {"description": results[0].map.meta.get("description", "attribution map")} if results else {}
    return ct.with_array(full, **meta)


def _read_findings(path: Path) -> list[Any]:
    """Findings from a ``findings.json`` (a list, or ``{"findings": [...]}``; ``center_mm`` required)."""
    from medanomaly.errors import InputError
    from medanomaly.types import Finding

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise InputError("not a readable findings JSON file", path) from None
    items = data.get("findings", []) if isinstance(data, dict) else data
    findings = []
    for item in items:
        try:
            centre = tuple(float(v) for v in item["center_mm"])
            box = item.get("bbox_mm") or [centre, centre]
            findings.append(Finding(center_mm=centre, bbox_mm=(tuple(box[0]), tuple(box[1])),
                                    score=float(item.get("score", float("nan"))), label=str(item.get("label", "lesion"))))  # fmt: skip
        except (KeyError, TypeError, ValueError, IndexError):
            raise InputError("each finding needs center_mm (x, y, z in mm)", path) from None
    return findings


def explain_command(run: Path, image: Path, method: str, out: Path, layer: str | None, target: int | None,
                    mask: Path | None, evaluate: bool, dicom: bool, fov: float,
                    findings_path: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """The work of ``medanomaly explain`` (importable; returns what it writes to ``explain.json``)."""
    import numpy as np

    from medanomaly.errors import InputError
    from medanomaly.explain.adapters import load_run
    from medanomaly.explain.findings import explain_findings_detailed
    from medanomaly.explain.maps import crop_patch, explain, peak_mm, resample_to
    from medanomaly.explain.overlay import save_explanation, write_map
    from medanomaly.io import read
    from medanomaly.registry import EXPLAINERS
    from medanomaly.types import Finding

    EXPLAINERS.get(method)
    ex = load_run(run)
    out.mkdir(parents=True, exist_ok=True)
    if image.is_dir() or image.suffix.lower() == ".csv":
        if not evaluate:
            raise InputError("a folder or manifest is evaluated: add --evaluate", image)
        report = _evaluate_dataset(ex, image, method, layer, target)
        (out / "explain.json").write_text(json.dumps(report, indent=2, default=float))
        return report
    volume = read(image)
    lesion = read(mask) if mask is not None else None
    if lesion is not None and not lesion.same_grid(volume, tol=1e-3):
        raise InputError("the mask is not on the image grid", mask)
    report: dict[str, Any] = {"method": method, "run_kind": ex.kind, "synthetic_model": ex.synthetic, "files": []}
    if ex.kind == "lung_nodule":
        volume = volume if volume.meta.get("modality") else volume.with_meta(modality="CT")
        findings = _read_findings(findings_path) if findings_path is not None else list(ex.runner.detect(volume))
        if lesion is not None:
            centre = volume.index_to_physical(np.argwhere(np.asarray(lesion.array) > 0).mean(0)[::-1])
            findings.append(Finding(center_mm=tuple(centre), bbox_mm=(tuple(centre), tuple(centre)), score=float("nan"),
                                    label="reference lesion", mask=lesion))  # fmt: skip
        results = explain_findings_detailed(ex, volume, findings, out, method=method, layer=layer, fov_mm=fov)
        report["findings"] = [
            {"index": r.index, "label": f.label, "score": f.score, "peak_mm": [round(v, 2) for v in r.peak_mm],
             "peak_in_mask": r.peak_in_mask, "png": str(r.png)}
            for r, f in zip(results, findings, strict=False)
        ]  # fmt: skip
        report["files"] += [str(r.png) for r in results]
        if results:
            full = _stitch(volume, results)
            report["files"].append(str(write_map(full, out / "explanation.nii.gz")))
        if evaluate and results:
            from medanomaly.explain.faithfulness import evaluate_image

            grid = ex.preprocess(volume)
            evals = []
            for r, f in zip(results, findings, strict=False):
                patch = crop_patch(grid, f.center_mm, ex.patch_size)
                pmask = None
                if f.mask is not None:
                    pm = resample_to(f.mask.with_array(np.asarray(f.mask.array, np.float32)), patch)
                    pmask = pm.with_array((np.asarray(pm.array) >= 0.5).astype(np.uint8)) if pm.array.max() >= 0.5 else None
                res = evaluate_image(ex.model, patch, method, mask=pmask, target=ex.target, layer=layer,
                                     output_fn=ex.output_fn)  # fmt: skip
                evals.append({"index": r.index, **res.to_json()})
            report["faithfulness"] = evals
    else:
        heat = explain(ex.model, volume, method, target=target if target is not None else ex.target, layer=layer,
                       preprocess=ex.preprocess, output_fn=ex.output_fn)  # fmt: skip
        files = save_explanation(volume, heat, out, mask=lesion, method=method)
        report["files"] += [str(p) for p in files.values()]
        report["peak_mm"] = [round(v, 2) for v in peak_mm(heat)]
        if lesion is not None:
            from medanomaly.explain.faithfulness import energy_inside, pointing_game

            report["pointing_hit"] = pointing_game(heat, lesion)
            report["energy_inside"] = energy_inside(heat, lesion)
        if dicom:
            from medanomaly.explain.dicom_out import write_secondary_capture

            report["files"] += [str(p) for p in write_secondary_capture(volume, heat, out / "dicom", mask=lesion)]
        if evaluate:
            from medanomaly.explain.faithfulness import evaluate_image

            res = evaluate_image(ex.model, volume, method, mask=lesion, target=target if target is not None else ex.target,
                                 layer=layer, preprocess=ex.preprocess, output_fn=ex.output_fn)  # fmt: skip
            report["faithfulness"] = res.to_json()
    (out / "explain.json").write_text(json.dumps(report, indent=2, default=float))
    return report


def register(app: typer.Typer) -> None:
    @app.command()
    def explain(
        run: Path = typer.Argument(..., help="Run directory (lung_nodule or classification)."),
        image: Path = typer.Argument(..., help="Image file; with --evaluate also a folder or CSV manifest."),
        method: str = typer.Option("gradcam", "--method", "-m",
                                   help="gradcam, gradcampp, occlusion, integrated_gradients, guided_backprop."),
        out: Path = typer.Option(Path("explain-out"), "--out", "-o", help="Output folder."),
        layer: str | None = typer.Option(None, "--layer", help="Target layer for CAM methods (default: automatic)."),
        target: int | None = typer.Option(None, "--target", help="Class index to explain (default: predicted)."),
        mask: Path | None = typer.Option(None, "--mask", help="Reference lesion mask on the image grid."),
        evaluate: bool = typer.Option(False, "--evaluate", help="Faithfulness: deletion/insertion AUC vs random maps."),
        dicom: bool = typer.Option(False, "--dicom", help="Also write a DICOM secondary capture (classification)."),
        fov: float = typer.Option(80.0, "--fov", help="Field of view (mm) of each finding's overlay."),
        findings: Path | None = typer.Option(None, "--findings",
                                             help="findings.json to explain instead of running the detector."),
    ) -> None:
        """Explain a trained model's call on an image: heatmap overlays (PNG), NIfTI map, faithfulness."""
        report = explain_command(run, image, method, out, layer, target, mask, evaluate, dicom, fov, findings)
        summary = {k: v for k, v in report.items() if k not in ("items",)}
        typer.echo(json.dumps(summary, indent=2, default=float))
