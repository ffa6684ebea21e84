"""Case study of an anomaly run on real lesions with expert masks: brain MR (trained on normal
brains, tested on the real tumours of pyradiomics brain1 and brain2, T1 post-contrast) or chest CT
(trained on one CT's lung parenchyma away from its lesion, tested on the other CT's lesion, inside
its lung mask: ``metrics.json`` ``region`` says which).

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

_REFERENCE_BRAIN = {"BMAD BraTS2021 PatchCore pixel AUROC": 0.9697, "note": "different data (BraTS, not ours)"}
_REFERENCE_CHEST = {"BMAD liver CT SimpleNet pixel AUROC": 0.9751,
                    "note": "different organ and data (BMAD liver CT, not ours); two chest CTs only here"}  # fmt: skip


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
    """Metrics of one pyradiomics case, and the arrays the report plots (``brain`` = the region:
    brain mask, or lung mask for a chest CT run)."""
    from medanomaly.anomaly.pipeline import predict_volume
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read

    image_path, mask_path = pyradiomics_case(name)
    domain = model.info.extra.get("domain") or {}
    chest = domain.get("name") == "chest_ct"
    image = read(image_path).with_meta(modality="CT" if chest else "MR")
    model.check_input(image, image_path)
    tumour = np.asarray(read(mask_path).array) > 0
    if chest:
        from medanomaly.preprocess.segment import lung_mask

        brain = np.asarray(lung_mask(image).array) > 0
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
           "tumour_ml": float(tumour.sum() * image.voxel_volume_mm3 / 1000),
           "tumour_in_region_fraction": float((tumour & brain).sum() / max(tumour.sum(), 1)),
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
    domain = model.info.extra.get("domain") or {"name": "brain_mr", "region": "brain_mask"}
    chest = domain.get("name") == "chest_ct"
    metrics = {"task": "anomaly", "method": config.method.name, "synthetic": False, "domain": domain["name"],
               "region": domain.get("region", "brain_mask"),
               "test_data": "pyradiomics " + " + ".join(config.evaluate.cases) + " (real "
               + ("lesions" if chest else "tumours") + ", expert masks)",
               "training_exclusion": domain.get("training_exclusion"),
               "pixel_auroc": auroc_ci(y, s, 0)["value"],
               "slice_auroc": auroc_ci(sy, ss, config.evaluate.n_bootstrap, config.seed),
               "dice_mean": float(np.mean([c["dice"] for c in cases])),
               "thresholds": dict(model.info.thresholds), "cases": cases,
               "reference": _REFERENCE_CHEST if chest else _REFERENCE_BRAIN}  # fmt: skip
    write_json(Path(run_dir) / "metrics.json", metrics)
    write_report(Path(run_dir) / "report.html", metrics, arrays, y, s)
    return metrics


def _where(metrics: dict[str, Any]) -> str:
    return "lungs" if metrics.get("region") == "lung_mask" else "brain"


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _figures(metrics: dict[str, Any], arrays: list[dict[str, Any]], y: np.ndarray, s: np.ndarray) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    figs, where = [], _where(metrics)
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].hist(s[~y], bins=60, density=True, alpha=0.6, label=f"{where}, no lesion")
    ax[0].hist(s[y], bins=60, density=True, alpha=0.6, label="lesion (expert mask)")
    ax[0].axvline(metrics["thresholds"]["pixel"], color="k", ls="--", label="threshold (normal validation)")
    ax[0].set_xlabel("anomaly score per voxel")
    ax[0].legend(fontsize=8)
    fpr, tpr, _ = roc_curve(y, s)
    ax[1].plot(fpr, tpr, label=f"pixel AUROC {metrics['pixel_auroc']:.3f}")
    ax[1].plot([0, 1], [0, 1], ls="--", color="0.6")
    ax[1].set_xlabel("false-positive rate")
    ax[1].set_ylabel("true-positive rate")
    ax[1].legend()
    figs.append((f"Score histograms and pixel ROC inside the {where}", _png(fig)))
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
        figs.append((f"{row['case']} slice {z}: cyan = expert lesion mask, map in the {where}, green = above the "
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
    where = _where(metrics)
    trained = ("one chest CT's lung parenchyma, its lesion grown by a margin excluded" if where == "lungs"
               else "normal brains only")
    ref = ("For orientation only, BMAD's best pixel AUROC on liver CT is 0.975 (different organ and data)."
           if where == "lungs" else "BMAD's best pixel AUROC on BraTS2021 is 0.970 (different data, for orientation only).")  # fmt: skip
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>Anomaly detection: {html.escape(metrics['method'])}"
           f"</title></head><body><h1>Anomaly detection ({html.escape(metrics['method'])}), trained on {trained}</h1>"
           f"<p>Test: {html.escape(metrics['test_data'])}. Pixel AUROC inside the {where} {metrics['pixel_auroc']:.3f}; "
           f"slice AUROC {slice_text}{ci}; mean Dice at the validation threshold {metrics['dice_mean']:.3f}. "
           f"{ref}</p>"
           f"<table border=1><tr><th>case</th><th>pixel AUROC</th><th>Dice</th><th>image score</th><th>call</th>"
           f"<th>findings</th></tr>{rows}</table>{figs}</body></html>")  # fmt: skip
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(doc)
    os.replace(tmp, path)
    return path
