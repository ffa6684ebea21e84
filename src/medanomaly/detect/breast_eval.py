"""Evaluation of a ``detection`` run on held-out patients: FROC per image, per-lesion classes, report.

* **Detection**: every image of the split (normal ones too) is searched; a finding hits a lesion
  when its centre lies within ``max(lesion radius, hit_min_radius_mm)`` of the lesion's mask
  centroid (radius = half the longer box side, mm; :func:`medanomaly.evaluate.froc.match_findings`).
  FROC: sensitivity at 1/8 ... 8 false positives **per image**, and the CPM, each with a percentile
  bootstrap CI over images (the images are resampled, their marks kept).
* **Per-lesion classification** (benign / uncertain / malignant): the second stage on crops of the
  split's annotated lesions (classification given the lesion): accuracy, macro AUC and per-class
  recall with stratified bootstrap CIs (:func:`medanomaly.evaluate.metrics.classification_metrics`),
  how many it abstained on, and the accuracy on the answered ones. End to end, the class of the
  best-scoring hit of each detected lesion is counted too.
* **Per image**: the BI-RADS-like category of the highest-risk lesion.

Everything measured on phantom images is labelled synthetic.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.evaluate.froc import FP_RATES, ScanMarks, froc, match_findings
from medanomaly.io.staged import save_figure
from medanomaly.jsonio import write_text_atomic
from medanomaly.types import ABSTAIN

__all__ = ["evaluate_detection", "froc_bootstrap", "image_marks"]


def image_marks(item: Any, findings: Any, min_radius_mm: float) -> ScanMarks:
    """Match one image's findings to its annotated lesions (centres in LPS mm)."""
    refs = [les.to_finding(item.image) for les in item.lesions]
    centres = np.array([f.center_mm for f in findings], float).reshape(-1, 3)
    truth = np.array([r.center_mm for r in refs], float).reshape(-1, 3)
    radii = [max(les.size_mm) / 2.0 for les in item.lesions]
    return match_findings(centres, [f.score for f in findings], truth, radii, min_radius_mm)


def froc_bootstrap(marks: list[ScanMarks], n_bootstrap: int, seed: int = 0) -> dict[str, Any]:
    """FROC per image with percentile 95 % bootstrap CIs over images for each operating point and the CPM."""
    result = froc(marks)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_bootstrap):
        sample = [marks[i] for i in rng.integers(0, len(marks), len(marks))]
        if sum(m.n_lesions for m in sample) == 0:
            continue
        r = froc(sample)
        rows.append([r.operating_points[f] for f in FP_RATES] + [r.cpm])
    arr = np.array(rows) if rows else np.full((1, len(FP_RATES) + 1), np.nan)
    low, high = np.percentile(arr, [2.5, 97.5], axis=0)
    points = {f"{f:g}": {"value": result.operating_points[f], "ci_low": float(low[i]), "ci_high": float(high[i])}
              for i, f in enumerate(FP_RATES)}  # fmt: skip
    return {"result": result, "json": {"cpm": {"value": result.cpm, "ci_low": float(low[-1]), "ci_high": float(high[-1])},
                                       "sensitivity_at_fp_per_image": points, "n_images": result.n_scans,
                                       "n_lesions": result.n_lesions, "n_bootstrap": len(rows),
                                       "ci": "95% percentile bootstrap over images"}}  # fmt: skip


def _lesion_metrics(model: Any, items: list[Any], class_names: tuple[str, ...], n_bootstrap: int,
                    synthetic: bool) -> tuple[dict[str, Any], Any]:  # fmt: skip
    """Per-lesion 3-class metrics of the second stage on the split's annotated lesions."""
    from medanomaly.data.lesions2d import LesionSet
    from medanomaly.evaluate.metrics import classification_metrics

    clf = model.classifier
    subset = LesionSet(tuple(it for it in items if it.lesions), class_names)
    if clf is None or not len(subset):
        return {"available": False}, None
    from medanomaly.data.lesion_samples import lesion_crops

    data = lesion_crops(subset, clf.crop_size)
    y = np.asarray(data.labels)
    probs, called, abstained = clf.classify(np.asarray(data.images, np.float32))
    out: dict[str, Any] = {"available": True, "n_lesions": int(len(y)), "n_abstained": int(abstained.sum()),
                           "decision_rule": clf.rule_.describe(class_names), "rule_fitted_on": clf.rule_fitted_on_}
    answered = ~abstained
    out["accuracy_answered"] = float((called[answered] == y[answered]).mean()) if answered.any() else None
    present = sorted(set(y.tolist()))
    if len(present) == len(class_names):
        res = classification_metrics(y, probs, class_names, n_bootstrap=n_bootstrap, synthetic=synthetic)
        out["metrics"] = res.to_json()
        return out, res
    out["note"] = f"only classes {[class_names[i] for i in present]} among the test lesions: no 3-class metrics"
    return out, None


def _overlay(item: Any, findings: list[Any], path: Path, synthetic: bool) -> Path:
    """The image with reference boxes (green, dashed) and found boxes coloured by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"benign": "tab:cyan", "uncertain": "gold", "malignant": "red", ABSTAIN: "magenta"}
    arr = np.asarray(item.image.array[0], float)
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.imshow(arr, cmap="gray", vmin=np.percentile(arr, 1), vmax=np.percentile(arr, 99.5))
    for les in item.lesions:
        x0, y0, x1, y1 = les.box_px
        ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="lime", ls="--", lw=1.2))
        ax.text(x0, y1 + 2, f"truth: {les.label}", color="lime", fontsize=7, va="top")
    for f in findings:
        lo = item.image.physical_to_index(np.array([f.bbox_mm[0]]))[0]
        hi = item.image.physical_to_index(np.array([f.bbox_mm[1]]))[0]
        (xa, xb), (ya, yb) = sorted((lo[0], hi[0])), sorted((lo[1], hi[1]))
        c = colours.get(f.label, "white")
        ax.add_patch(plt.Rectangle((xa, ya), xb - xa, yb - ya, fill=False, ec=c, lw=1.5))
        ax.text(xa, ya - 2, f"{f.label} {f.score:.2f}", color=c, fontsize=7)
    ax.set_axis_off()
    ax.set_title(f"{item.key}{' (synthetic)' if synthetic else ''}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def _search(model: Any, items: list[Any], min_radius: float, progress: bool) -> tuple[list[Any], list[Any], list[Any]]:
    """Predictions, marks and end-to-end (true class, found class) pairs of every image."""
    iterator: Any = items
    if progress:
        from rich.progress import track

        iterator = track(items, description="detect on held-out images")
    preds, marks, pairs = [], [], []
    for it in iterator:
        pred = model.predict(it.image)
        m = image_marks(it, pred.findings, min_radius)
        seen: set[int] = set()
        for fi, lid in sorted(zip(m.finding_index, m.lesion_ids, strict=True), key=lambda t: -pred.findings[t[0]].score):
            if lid >= 0 and lid not in seen:
                seen.add(lid)
                pairs.append((it.lesions[lid].label, pred.findings[fi].label))
        preds.append(pred)
        marks.append(m)
    return preds, marks, pairs


def evaluate_detection(model: Any, lesions: Any, split: str, cfg: Any, out_dir: Path,
                       progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Evaluate on ``split``; write metrics.json, froc.png, confusion.png, overlays and report.html."""
    from medanomaly.errors import InputError
    from medanomaly.evaluate.lung_report import plot_froc
    from medanomaly.evaluate.plots import plot_confusion
    from medanomaly.jsonio import write_json

    items = list(lesions.split(split))
    if not items or not any(it.lesions for it in items):
        raise InputError(f"the {split} split of {lesions.source} holds no lesion to evaluate on")
    ev, syn = cfg.evaluation, lesions.synthetic
    preds, marks, pairs = _search(model, items, ev.hit_min_radius_mm, progress)
    fr = froc_bootstrap(marks, ev.n_bootstrap, cfg.seed)
    tag = " (synthetic)" if syn else ""
    plot_froc(fr["result"], out_dir / "froc.png", title=f"FROC per image, {split} patients{tag}")
    lesion_json, res = _lesion_metrics(model, items, lesions.class_names, ev.n_bootstrap, syn)
    if res is not None:
        save_figure(plot_confusion(res.confusion, lesions.class_names, synthetic=syn), out_dir / "confusion.png")
    correct = sum(t == f for t, f in pairs)
    summary = [{"image": it.key, "truth": it.label, "birads_like": next((f.split(":")[1] for f in p.flags
                                                                       if f.startswith("birads_like:")), ""),
                "call": p.decision if p.findings else "none", "n_findings": len(p.findings)}
               for it, p in zip(items, preds, strict=True)]  # fmt: skip
    overlays = []
    for it, p in list(zip(items, preds, strict=True))[: ev.overlays]:
        kept = [f for f in p.findings if f.score >= float(model.info.thresholds.get("finding") or 0.5)]
        overlays.append(_overlay(it, kept, out_dir / f"overlay_{len(overlays) + 1:02d}.png", syn).name)
    metrics = {"synthetic": syn, "split": split, "data": lesions.summary(), "froc_per_image": fr["json"],
               "lesion_classification": lesion_json,
               "end_to_end": {"detected_lesions": len(pairs), "class_correct": correct,
                              "note": "class of the best-scoring hit of each detected lesion vs its true class"},
               "per_image": summary}  # fmt: skip
    write_json(out_dir / "metrics.json", metrics)
    _write_report(out_dir / "report.html", metrics, overlays, res is not None, cfg)
    return metrics


def _fmt(e: dict[str, Any] | None) -> str:
    if not e or e.get("value") is None:
        return "-"
    lo, hi = e.get("ci_low"), e.get("ci_high")
    ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None and np.isfinite(lo) else ""
    return f"{e['value']:.3f}{ci}"


def _write_report(path: Path, m: dict[str, Any], overlays: list[str], confusion: bool, cfg: Any) -> None:
    """A self-contained HTML page (images are files beside it), written atomically."""

    fr, lc = m["froc_per_image"], m["lesion_classification"]
    syn = " (SYNTHETIC data: phantom images; the numbers measure the drawing rules, not breast cancer)" if m["synthetic"] else ""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in fr["sensitivity_at_fp_per_image"].items())
    parts = [f"<h1>Lesion detection and classification: {html.escape(cfg.data.source)}</h1>",
             f"<p><b>{html.escape(m['split'])} patients{html.escape(syn)}</b>. {fr['n_images']} images, "
             f"{fr['n_lesions']} lesions; hit = centre within max(lesion radius, {cfg.evaluation.hit_min_radius_mm:g} mm).</p>",
             f"<h2>FROC per image</h2><p>CPM {_fmt(fr['cpm'])} ({html.escape(fr['ci'])})</p>",
             f"<table border=1><tr><th>FP per image</th><th>sensitivity [95% CI]</th></tr>{rows}</table>",
             '<img src="froc.png" alt="FROC">']  # fmt: skip
    parts.append("<h2>Per-lesion classification (benign / uncertain / malignant)</h2>")
    if lc.get("metrics"):
        mm = lc["metrics"]
        recall = "".join(f"<tr><td>{html.escape(c)}</td><td>{_fmt(v['recall'])}</td></tr>"
                         for c, v in mm["per_class"].items())  # fmt: skip
        parts += [f"<p>{lc['n_lesions']} annotated lesions; accuracy {_fmt(mm['accuracy'])}, macro AUC "
                  f"{_fmt(mm['macro']['roc_auc'])}; abstained on {lc['n_abstained']} "
                  f"(rule: {html.escape(lc['decision_rule'])}, learned on {html.escape(lc['rule_fitted_on'])}).</p>",
                  f"<table border=1><tr><th>class</th><th>recall [95% CI]</th></tr>{recall}</table>"]  # fmt: skip
    else:
        parts.append(f"<p>{html.escape(lc.get('note', 'no classifier in this run'))}</p>")
    if confusion:
        parts.append('<img src="confusion.png" alt="confusion matrix">')
    e2e = m["end_to_end"]
    parts.append(f"<p>End to end: {e2e['detected_lesions']} lesions detected, {e2e['class_correct']} of them with the right class.</p>")
    table = "".join(f"<tr><td>{html.escape(r['image'])}</td><td>{html.escape(r['truth'])}</td><td>{html.escape(r['call'])}</td>"
                    f"<td>{html.escape(r['birads_like'])}</td><td>{r['n_findings']}</td></tr>" for r in m["per_image"])  # fmt: skip
    parts += ["<h2>Per image</h2><table border=1><tr><th>image</th><th>truth</th><th>call</th><th>BI-RADS-like</th>"
              f"<th>findings</th></tr>{table}</table>", "<h2>Overlays</h2><p>green dashed: reference; boxes coloured by class "
              "(cyan benign, gold uncertain, red malignant, magenta abstained).</p>"]  # fmt: skip
    parts += [f'<img src="{html.escape(o)}" alt="overlay">' for o in overlays]
    text = "<!doctype html><html><head><meta charset='utf-8'><title>detection report</title></head><body>" + "\n".join(parts) + "</body></html>"
    write_text_atomic(path, text)
