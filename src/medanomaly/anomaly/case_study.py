"""Brain tumour case study of an anomaly run: trained on normal brains, tested on the real tumours
of pyradiomics brain1 and brain2 (T1 post-contrast, expert masks).

Metrics (``metrics.json``): pixel AUROC inside the brain mask (per case and pooled), slice-level
AUROC (slices with tumour vs tumour-free slices of the same scans; slice score = 99th percentile of
the map in the slice's brain) with a stratified bootstrap 95 % CI, Dice of the map thresholded at
the validation-chosen pixel threshold, and findings (connected components of the thresholded map,
measured with :mod:`medanomaly.quantify`). ``report.html``: score histograms, ROC, map overlays.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.jsonio import write_json

__all__ = ["run_case_study", "auroc_ci", "case_metrics"]


def auroc_ci(y: np.ndarray, s: np.ndarray, n_bootstrap: int, seed: int = 0) -> dict[str, Any]:
    """ROC AUC with a stratified bootstrap 95 % CI (:func:`medanomaly.evaluate.metrics.bootstrap_indices`)."""
    from sklearn.metrics import roc_auc_score

    from medanomaly.evaluate.metrics import bootstrap_indices

    y = np.asarray(y, bool)
    if y.all() or not y.any():
        return {"value": None, "ci95": None, "n_pos": int(y.sum()), "n_neg": int((~y).sum())}
    value = float(roc_auc_score(y, s))
    ci = None
    if n_bootstrap:
        boots = [roc_auc_score(y[i], s[i]) for i in bootstrap_indices(y.astype(int), n_bootstrap, seed)]
        ci = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
    return {"value": value, "ci95": ci, "n_pos": int(y.sum()), "n_neg": int((~y).sum())}


def _findings(amap: Any, binary: np.ndarray, image: Any, min_ml: float) -> list[dict[str, Any]]:
    from medanomaly.quantify.measure import measure_lesions

    if not binary.any():
        return []
    found = measure_lesions(amap.with_array(binary.astype(np.uint8)), image, label="anomaly")
    return [f.to_json() for f in found if f.measurements is None or f.measurements.volume_ml >= min_ml][:10]


def case_metrics(model: Any, name: str, config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics of one pyradiomics case, and the arrays the report plots."""
    from medanomaly.anomaly.pipeline import predict_volume
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read
    from medanomaly.preprocess.tissue_masks import brain_mask

    image_path, mask_path = pyradiomics_case(name)
    image = read(image_path).with_meta(modality="MR")
    tumour = np.asarray(read(mask_path).array) > 0
    brain = np.asarray(brain_mask(image).array) > 0
    amap, score, _, _ = predict_volume(model.method, image, int(model.info.extra["size"]), float(model.info.thresholds["sigma"]))
    values = np.asarray(amap.array)
    binary = (values > float(model.info.thresholds["pixel"])) & brain
    inter = float((binary & tumour).sum())
    dice = 2 * inter / max(float(binary.sum() + tumour.sum()), 1.0)
    zs = [z for z in range(values.shape[0]) if brain[z].any()]
    slice_scores = np.asarray([np.percentile(values[z][brain[z]], 99) for z in zs])
    slice_y = np.asarray([tumour[z].any() for z in zs])
    out = {"case": name, "image_score": score, "label": "anomaly" if score > model.info.thresholds["decision"] else "normal",
           "pixel_auroc": auroc_ci(tumour[brain], values[brain], 0)["value"], "dice": dice,
           "tumour_ml": float(tumour.sum() * image.voxel_volume_mm3 / 1000),
           "flagged_ml": float(binary.sum() * image.voxel_volume_mm3 / 1000),
           "findings": _findings(amap, binary, image, config.evaluate.min_finding_ml)}  # fmt: skip
    arrays = {"image": np.asarray(image.array, np.float32), "map": values, "tumour": tumour, "brain": brain,
              "slice_scores": slice_scores, "slice_y": slice_y, "binary": binary}  # fmt: skip
    return out, arrays


def run_case_study(model: Any, config: Any, run_dir: Path) -> dict[str, Any]:
    """Evaluate on ``config.evaluate.cases``; writes ``metrics.json`` and ``report.html``."""
    cases, arrays = [], []
    for name in config.evaluate.cases:
        row, arr = case_metrics(model, name, config)
        cases.append(row)
        arrays.append(arr)
    y = np.concatenate([a["tumour"][a["brain"]] for a in arrays])
    s = np.concatenate([a["map"][a["brain"]] for a in arrays])
    sy = np.concatenate([a["slice_y"] for a in arrays])
    ss = np.concatenate([a["slice_scores"] for a in arrays])
    metrics = {"task": "anomaly", "method": config.method.name, "synthetic": False,
               "test_data": "pyradiomics " + " + ".join(config.evaluate.cases) + " (real tumours, expert masks)",
               "pixel_auroc": auroc_ci(y, s, 0)["value"],
               "slice_auroc": auroc_ci(sy, ss, config.evaluate.n_bootstrap, config.seed),
               "dice_mean": float(np.mean([c["dice"] for c in cases])),
               "thresholds": dict(model.info.thresholds), "cases": cases,
               "reference": {"BMAD BraTS2021 PatchCore pixel AUROC": 0.9697, "note": "different data (BraTS, not ours)"}}  # fmt: skip
    write_json(Path(run_dir) / "metrics.json", metrics)
    write_report(Path(run_dir) / "report.html", metrics, arrays, y, s)
    return metrics


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _figures(metrics: dict[str, Any], arrays: list[dict[str, Any]], y: np.ndarray, s: np.ndarray) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    figs = []
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].hist(s[~y], bins=60, density=True, alpha=0.6, label="brain, no tumour")
    ax[0].hist(s[y], bins=60, density=True, alpha=0.6, label="tumour (expert mask)")
    ax[0].axvline(metrics["thresholds"]["pixel"], color="k", ls="--", label="threshold (normal validation)")
    ax[0].set_xlabel("anomaly score per voxel")
    ax[0].legend(fontsize=8)
    fpr, tpr, _ = roc_curve(y, s)
    ax[1].plot(fpr, tpr, label=f"pixel AUROC {metrics['pixel_auroc']:.3f}")
    ax[1].plot([0, 1], [0, 1], ls="--", color="0.6")
    ax[1].set_xlabel("false-positive rate")
    ax[1].set_ylabel("true-positive rate")
    ax[1].legend()
    figs.append(("Score histograms and pixel ROC inside the brain", _png(fig)))
    plt.close(fig)
    for row, a in zip(metrics["cases"], arrays):
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
        figs.append((f"{row['case']} slice {z}: cyan = expert tumour mask, map in the brain, green = above the "
                     f"validation threshold (Dice {row['dice']:.2f})", _png(fig)))  # fmt: skip
        plt.close(fig)
    return figs


def write_report(path: Path, metrics: dict[str, Any], arrays: list[dict[str, Any]], y: np.ndarray, s: np.ndarray) -> Path:
    """Self-contained ``report.html`` (figures inline), written atomically."""
    import os

    sl = metrics["slice_auroc"]
    ci = f" (95 % CI {sl['ci95'][0]:.3f}-{sl['ci95'][1]:.3f})" if sl.get("ci95") else ""
    rows = "".join(f"<tr><td>{html.escape(c['case'])}</td><td>{c['pixel_auroc']:.3f}</td><td>{c['dice']:.3f}</td>"
                   f"<td>{c['image_score']:.3f}</td><td>{c['label']}</td><td>{len(c['findings'])}</td></tr>"
                   for c in metrics["cases"])  # fmt: skip
    figs = "".join(f"<h3>{html.escape(t)}</h3><img src='data:image/png;base64,{b}'>" for t, b in _figures(metrics, arrays, y, s))
    slice_text = f"{sl['value']:.3f}" if sl.get("value") is not None else "n/a"
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>Anomaly detection: {html.escape(metrics['method'])}"
           f"</title></head><body><h1>Anomaly detection ({html.escape(metrics['method'])}), trained on normal brains only</h1>"
           f"<p>Test: {html.escape(metrics['test_data'])}. Pixel AUROC inside the brain {metrics['pixel_auroc']:.3f}; "
           f"slice AUROC {slice_text}{ci}; mean Dice at the validation threshold {metrics['dice_mean']:.3f}. "
           f"BMAD's best pixel AUROC on BraTS2021 is 0.970 (different data, for orientation only).</p>"
           f"<table border=1><tr><th>case</th><th>pixel AUROC</th><th>Dice</th><th>image score</th><th>call</th>"
           f"<th>findings</th></tr>{rows}</table>{figs}</body></html>")  # fmt: skip
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(doc)
    os.replace(tmp, path)
    return path
