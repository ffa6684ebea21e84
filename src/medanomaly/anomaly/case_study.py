"""Case study of an anomaly run on real lesions with expert masks: brain MR (trained on normal
brains, tested on the real tumours of pyradiomics brain1 and brain2, T1 post-contrast) or chest CT
(trained on one CT's lung parenchyma away from its lesion, tested on the other CT's lesion, inside
its lung mask: ``metrics.json`` ``region`` says which); a brain run also on the user's labelled scans in an MSD-layout
folder (``evaluate.folder``: BraTS as MSD Task01 ships it; :mod:`medanomaly.anomaly.test_cases`).

Metrics (``metrics.json``): pixel AUROC and AUPRO (per-region overlap up to ``evaluate.max_fpr`` = 30 %
FPR, normalised: :mod:`medanomaly.evaluate.aupro`; 3D regions) inside the brain mask (per case and pooled), slice-level
AUROC (slices with tumour vs tumour-free slices of the same scans; slice score = 99th percentile of
the map in the slice's brain) with a stratified bootstrap 95 % CI, Dice of the map thresholded at
the validation-chosen pixel threshold with the flagged mL and the pixel FPR (normal voxels of the
region above it) and TPR (lesion voxels above it), and findings (connected components of the thresholded map,
measured with :mod:`medanomaly.quantify`). ``report.html``: score histograms, ROC, map overlays.

Chest CT with ``evaluate.simulated_nodules``: each test CT also gets that many held-out simulated
nodules (SYNTHETIC; :func:`medanomaly.anomaly.chest.simulated_test_case`) away from its real lesion;
``metrics.json`` ``simulated`` gives their pixel AUROC and AUPRO inside the lung mask (the real lesion's
voxels left out), apart from the real-lesion numbers, which are measured on the unaltered CT.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.anomaly.test_cases import LabelledCase, describe_test_data, labelled_cases
from medanomaly.evaluate.aupro import aupro_report
from medanomaly.evaluate.report import run_warnings
from medanomaly.jsonio import write_json, write_text_atomic

__all__ = ["run_case_study", "auroc_ci", "case_metrics", "simulated_metrics"]

_REFERENCE_BRAIN = {"BMAD BraTS2021 PatchCore pixel AUROC": 0.9697, "note": "different data (BraTS, not ours)"}
_REFERENCE_CHEST = {"BMAD liver CT SimpleNet pixel AUROC": 0.9751,
                    "note": "different organ and data (BMAD liver CT, not ours); two chest CTs only here"}  # fmt: skip


def auroc_ci(y: np.ndarray, s: np.ndarray, n_bootstrap: int, seed: int = 0) -> dict[str, Any]:
    """ROC AUC with a stratified bootstrap 95 % CI (:func:`medanomaly.evaluate.metrics.bootstrap_indices`)."""
    from medanomaly.evaluate.auroc import binary_auroc
    from medanomaly.evaluate.metrics import bootstrap_indices

    y = np.asarray(y, bool)
    if y.all() or not y.any():
        return {"value": None, "ci95": None, "n_pos": int(y.sum()), "n_neg": int((~y).sum())}
    value = binary_auroc(s, y)
    ci = None
    if n_bootstrap:
        boots = [binary_auroc(s[i], y[i]) for i in bootstrap_indices(y.astype(int), n_bootstrap, seed)]
        ci = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
    return {"value": value, "ci95": ci, "n_pos": int(y.sum()), "n_neg": int((~y).sum())}


def _findings(amap: Any, binary: np.ndarray, image: Any, min_ml: float) -> list[dict[str, Any]]:
    from medanomaly.anomaly.model import map_findings

    return [f.to_json() for f in map_findings(amap, binary, image, min_ml)]


def case_metrics(model: Any, case: LabelledCase, config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics of one labelled case (a pyradiomics scan, or one of ``evaluate.folder``), and the arrays the report
    plots (``brain`` = the region: brain mask, or lung mask for a chest CT run)."""
    from medanomaly.anomaly.pipeline import predict_volume

    name, image, tumour = case.name, case.image, case.lesion
    domain = model.info.extra.get("domain") or {}
    chest = domain.get("name") == "chest_ct"
    model.check_input(image, case.path)
    if chest:
        from medanomaly.anomaly.chest import chest_case
        from medanomaly.preprocess.segment import lung_mask

        case = chest_case(name)  # its lung mask is computed once (cached) when the CT is already LPS
        brain = case.lungs if case.canonical.same_grid(image) else np.asarray(lung_mask(image).array) > 0
        if case.canonical.same_grid(image):
            domain = {**domain, "lungs": case.lungs}
    else:
        from medanomaly.preprocess.tissue_masks import brain_mask

        brain = np.asarray(brain_mask(image).array) > 0
    amap, score, _, _ = predict_volume(model.method, image, int(model.info.extra["size"]),
                                       float(model.info.thresholds["sigma"]), domain or None)  # fmt: skip
    values = np.asarray(amap.array)
    binary = (values > float(model.info.thresholds["pixel"])) & brain
    inter = float((binary & tumour).sum())
    dice = 2 * inter / max(float(binary.sum() + tumour.sum()), 1.0)
    zs = [z for z in range(values.shape[0]) if brain[z].any()]
    slice_scores = np.asarray([np.percentile(values[z][brain[z]], 99) for z in zs])
    slice_y = np.asarray([tumour[z].any() for z in zs])
    out = {"case": name, "image_score": score, "label": "anomaly" if score > model.info.thresholds["decision"] else "normal",
           "pixel_auroc": auroc_ci(tumour[brain], values[brain], 0)["value"], "dice": dice,
           "aupro": aupro_report([values], [tumour], [brain], config.evaluate.max_fpr)["value"],
           "tumour_ml": float(tumour.sum() * image.voxel_volume_mm3 / 1000),
           "tumour_in_region_fraction": float((tumour & brain).sum() / max(tumour.sum(), 1)),
           "flagged_ml": float(binary.sum() * image.voxel_volume_mm3 / 1000),
           "pixel_fpr": float((binary & ~tumour).sum() / max(int((brain & ~tumour).sum()), 1)),
           "pixel_tpr": float((binary & tumour).sum() / max(int((brain & tumour).sum()), 1)),
           "findings": _findings(amap, binary, image, config.evaluate.min_finding_ml)}  # fmt: skip
    arrays = {"image": np.asarray(image.array, np.float32), "map": values, "tumour": tumour, "brain": brain,
              "slice_scores": slice_scores, "slice_y": slice_y, "binary": binary}  # fmt: skip
    return out, arrays


def simulated_metrics(model: Any, name: str, config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Held-out simulated nodules (SYNTHETIC) in chest CT ``name``: pixel AUROC and AUPRO inside its lung
    mask without its real lesion, and per nodule its peak score against the validation pixel threshold."""
    from medanomaly.anomaly.chest import chest_case, simulated_test_case
    from medanomaly.anomaly.pipeline import predict_volume

    domain = model.info.extra["domain"]
    ev = config.evaluate
    ct, labels, records = simulated_test_case(name, ev.simulated_nodules, ev.simulated_seed,
                                              float(domain.get("exclude_margin_mm", 20.0)))  # fmt: skip
    case = chest_case(name)
    amap, _, _, _ = predict_volume(model.method, ct, int(model.info.extra["size"]),
                                   float(model.info.thresholds["sigma"]), {**domain, "lungs": case.lungs})  # fmt: skip
    values = np.asarray(amap.array)
    region = case.lungs & ~case.lesion
    nodules = labels > 0
    threshold = float(model.info.thresholds["pixel"])
    for k, rec in enumerate(records, start=1):
        inside = labels == k
        rec.update(peak_score=float(values[inside].max()), detected=bool(values[inside].max() > threshold),
                   in_region_fraction=float(region[inside].mean()))  # fmt: skip
    out = {"case": name, "synthetic": True, "n_nodules": len(records),
           "shapes": "LIDC-IDRI consensus outlines, library test split, 6-20 mm, inserted by synth.insert",
           "pixel_auroc": auroc_ci(nodules[region], values[region], 0)["value"],
           "aupro": aupro_report([values], [nodules], [region], ev.max_fpr)["value"],
           "detected_at_pixel_threshold": int(sum(r["detected"] for r in records)), "nodules": records}  # fmt: skip
    arrays = {"image": np.asarray(ct.array, np.float32), "map": values, "tumour": nodules, "brain": region,
              "binary": (values > threshold) & region}  # fmt: skip
    return out, arrays


def _simulated(model: Any, config: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The pooled simulated-nodule block of ``metrics.json`` (None without simulated nodules)."""
    if not config.evaluate.simulated_nodules:
        return None, []
    rows, arrays = zip(*(simulated_metrics(model, n, config) for n in config.evaluate.cases))
    y = np.concatenate([a["tumour"][a["brain"]] for a in arrays])
    s = np.concatenate([a["map"][a["brain"]] for a in arrays])
    block = {"synthetic": True, "pixel_auroc": auroc_ci(y, s, 0)["value"],
             "aupro": aupro_report([a["map"] for a in arrays], [a["tumour"] for a in arrays],
                                   [a["brain"] for a in arrays], config.evaluate.max_fpr)["value"],
             "cases": list(rows)}  # fmt: skip
    return block, list(arrays)


def run_case_study(model: Any, config: Any, run_dir: Path) -> dict[str, Any]:
    """Evaluate on ``config.evaluate.cases``; writes ``metrics.json`` and ``report.html``."""
    domain = model.info.extra.get("domain") or {"name": "brain_mr", "region": "brain_mask"}
    if domain.get("name") == "folder2d":
        from medanomaly.anomaly.case_study_2d import run_folder_study

        return run_folder_study(model, config, run_dir)
    chest = domain.get("name") == "chest_ct"
    cases, arrays = [], []
    for case in labelled_cases(config.evaluate, chest):
        row, arr = case_metrics(model, case, config)
        cases.append(row)
        arrays.append(arr)
    y = np.concatenate([a["tumour"][a["brain"]] for a in arrays])
    s = np.concatenate([a["map"][a["brain"]] for a in arrays])
    sy = np.concatenate([a["slice_y"] for a in arrays])
    ss = np.concatenate([a["slice_scores"] for a in arrays])
    simulated, sim_arrays = _simulated(model, config) if chest else (None, [])
    metrics = {"task": "anomaly", "method": config.method.name, "synthetic": False, "domain": domain["name"],
               "region": domain.get("region", "brain_mask"),
               "test_data": describe_test_data(config.evaluate, chest),
               "training_exclusion": domain.get("training_exclusion"),
               "pixel_auroc": auroc_ci(y, s, 0)["value"],
               "aupro": aupro_report([a["map"] for a in arrays], [a["tumour"] for a in arrays],
                                     [a["brain"] for a in arrays], config.evaluate.max_fpr),
               "slice_auroc": auroc_ci(sy, ss, config.evaluate.n_bootstrap, config.seed),
               "dice_mean": float(np.mean([c["dice"] for c in cases])),
               "thresholds": dict(model.info.thresholds), "cases": cases,
               "reference": _REFERENCE_CHEST if chest else _REFERENCE_BRAIN, "warnings": run_warnings(run_dir)}  # fmt: skip
    if simulated is not None:
        metrics["simulated"] = simulated
    write_json(Path(run_dir) / "metrics.json", metrics)
    write_report(Path(run_dir) / "report.html", metrics, arrays, y, s, sim_arrays)
    return metrics


def _where(metrics: dict[str, Any]) -> str:
    return "lungs" if metrics.get("region") == "lung_mask" else "brain"


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _overlay(a: dict[str, Any]) -> tuple[int, str]:
    """The middle lesion slice of one case: image with the truth contour, and the map over it."""
    import matplotlib.pyplot as plt

    zs = np.flatnonzero(a["tumour"].any(axis=(1, 2)))
    z = int(zs[len(zs) // 2]) if zs.size else a["image"].shape[0] // 2
    fig, ax = plt.subplots(1, 2, figsize=(10, 5))
    ax[0].imshow(a["image"][z], cmap="gray")
    ax[0].contour(a["tumour"][z], colors="c", linewidths=1)
    ax[1].imshow(a["image"][z], cmap="gray")
    ax[1].imshow(np.ma.masked_where(~a["brain"][z], a["map"][z]), cmap="inferno", alpha=0.6)
    ax[1].contour(a["binary"][z], colors="lime", linewidths=1)
    ax[1].contour(a["tumour"][z], colors="c", linewidths=1)
    for axis in ax:
        axis.axis("off")
    png = _png(fig)
    plt.close(fig)
    return z, png


def score_panels(scores: np.ndarray, y: np.ndarray, threshold: float, names: tuple[str, str], xlabel: str,
                 roc_label: str, bins: int, density: bool = False) -> Any:
    """A two-panel figure: score histograms of the negatives and positives of ``y`` with the threshold
    chosen on normal validation data, and the ROC curve of ``scores`` (``roc_label`` in its legend)."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].hist(scores[~y], bins=bins, density=density, alpha=0.6, label=names[0])
    ax[0].hist(scores[y], bins=bins, density=density, alpha=0.6, label=names[1])
    ax[0].axvline(threshold, color="k", ls="--", label="threshold (normal validation)")
    ax[0].set_xlabel(xlabel)
    ax[0].legend(fontsize=8)
    fpr, tpr, _ = roc_curve(y, scores)
    ax[1].plot(fpr, tpr, label=roc_label)
    ax[1].plot([0, 1], [0, 1], ls="--", color="0.6")
    ax[1].set_xlabel("false-positive rate")
    ax[1].set_ylabel("true-positive rate")
    ax[1].legend()
    return fig


def _figures(metrics: dict[str, Any], arrays: list[dict[str, Any]], y: np.ndarray, s: np.ndarray,
             sim_arrays: list[dict[str, Any]]) -> list[tuple[str, str]]:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs, where = [], _where(metrics)
    fig = score_panels(s, y, metrics["thresholds"]["pixel"], (f"{where}, no lesion", "lesion (expert mask)"),
                       "anomaly score per voxel", f"pixel AUROC {_fmt(metrics['pixel_auroc'])}", bins=60, density=True)
    figs.append((f"Score histograms and pixel ROC inside the {where}", _png(fig)))
    plt.close(fig)
    for row, a in zip(metrics["cases"], arrays):
        z, png = _overlay(a)
        figs.append((f"{row['case']} slice {z}: cyan = expert lesion mask, map in the {where}, green = above the "
                     f"validation threshold (Dice {row['dice']:.2f})", png))  # fmt: skip
    for row, a in zip((metrics.get("simulated") or {}).get("cases", []), sim_arrays):
        z, png = _overlay(a)
        figs.append((f"SYNTHETIC: {row['case']} with {row['n_nodules']} simulated nodules, slice {z}: cyan = simulated "
                     f"nodule, map in the {where} (real lesion left out), green = above the threshold", png))  # fmt: skip
    return figs


def _simulated_html(metrics: dict[str, Any]) -> str:
    sim = metrics.get("simulated")
    if not sim:
        return ""
    rows = "".join(f"<tr><td>{html.escape(c['case'])}</td><td>{c['n_nodules']}</td><td>{_fmt(c['pixel_auroc'])}</td>"
                   f"<td>{_fmt(c['aupro'])}</td><td>{c['detected_at_pixel_threshold']}</td></tr>" for c in sim["cases"])  # fmt: skip
    return (f"<h2>Held-out simulated nodules (SYNTHETIC)</h2><p>LIDC-IDRI test-split shapes inserted in the test CT's "
            f"lungs away from its real lesion; pixel AUROC {_fmt(sim['pixel_auroc'])}, AUPRO {_fmt(sim['aupro'])} inside "
            f"the lung mask (real lesion left out).</p><table border=1><tr><th>case</th><th>nodules</th>"
            f"<th>pixel AUROC</th><th>AUPRO</th><th>peak above pixel threshold</th></tr>{rows}</table>")  # fmt: skip


def write_report(path: Path, metrics: dict[str, Any], arrays: list[dict[str, Any]], y: np.ndarray, s: np.ndarray,
                 sim_arrays: list[dict[str, Any]] | None = None) -> Path:  # fmt: skip
    """Self-contained ``report.html`` (figures inline), written atomically."""
    sl = metrics["slice_auroc"]
    ci = f" (95 % CI {sl['ci95'][0]:.3f}-{sl['ci95'][1]:.3f})" if sl.get("ci95") else ""
    rows = "".join(f"<tr><td>{html.escape(c['case'])}</td><td>{_fmt(c['pixel_auroc'])}</td><td>{_fmt(c.get('aupro'))}</td>"
                   f"<td>{c['dice']:.3f}</td><td>{c['flagged_ml']:.1f}</td><td>{c['image_score']:.3f}</td><td>{c['label']}</td><td>{len(c['findings'])}</td></tr>"
                   for c in metrics["cases"])  # fmt: skip
    figs = "".join(f"<h3>{html.escape(t)}</h3><img src='data:image/png;base64,{b}'>"
                   for t, b in _figures(metrics, arrays, y, s, sim_arrays or []))  # fmt: skip
    where = _where(metrics)
    trained = ("one chest CT's lung parenchyma, its lesion grown by a margin excluded" if where == "lungs"
               else "normal brains only")
    ref = ("For orientation only, BMAD's best pixel AUROC on liver CT is 0.975 (different organ and data)."
           if where == "lungs" else "BMAD's best pixel AUROC on BraTS2021 is 0.970 (different data, for orientation only).")  # fmt: skip
    aupro = metrics["aupro"]
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>Anomaly detection: {html.escape(metrics['method'])}"
           f"</title></head><body><h1>Anomaly detection ({html.escape(metrics['method'])}), trained on {trained}</h1>"
           f"{warning_html(metrics)}<p>Test: {html.escape(metrics['test_data'])}. Pixel AUROC inside the {where} {_fmt(metrics['pixel_auroc'])}; "
           f"AUPRO (to {aupro['max_fpr']:.0%} FPR, normalised) {_fmt(aupro['value'])}; "
           f"slice AUROC {_fmt(sl.get('value'))}{ci}; mean Dice at the validation threshold {metrics['dice_mean']:.3f}. "
           f"{ref}</p>"
           f"<table border=1><tr><th>case</th><th>pixel AUROC</th><th>AUPRO</th><th>Dice</th><th>flagged mL</th><th>image score</th>"
           f"<th>call</th><th>findings</th></tr>{rows}</table>{_simulated_html(metrics)}{figs}</body></html>")  # fmt: skip
    return write_html(path, doc)


def warning_html(metrics: dict[str, Any]) -> str:
    """The training's warnings (``metrics["warnings"]``, e.g. maps at chance on the synthetic validation) as a
    banner at the top of the report; empty when there are none."""
    return "".join(f"<p style='background:#fde2e1;padding:6px'><b>Warning:</b> {html.escape(w)}</p>"
                   for w in metrics.get("warnings") or [])  # fmt: skip


def write_html(path: Path, doc: str) -> Path:
    """Write an HTML document all-or-nothing."""
    return write_text_atomic(path, doc)
