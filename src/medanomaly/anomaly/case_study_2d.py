"""Evaluation of a 2D anomaly run (``data.domain: folder2d``) on its test images: ``test/normal`` vs
``test/abnormal`` of the folder tree (or the non-normal labels of a MedMNIST-style ``.npz``).

``metrics.json``: image AUROC (image score = 99.9th percentile of the map) with a stratified bootstrap
95 % CI, sensitivity and specificity at the image threshold chosen on the normal validation images
(target false-positive rate), and, when abnormal images have masks, pixel AUROC and AUPRO (per-region
overlap to ``evaluate.max_fpr``, normalised; :mod:`medanomaly.evaluate.aupro`) over the masked
abnormal images and all normal test images, each on its own grid. ``report.html``: image-score
histograms (normal vs abnormal) with the threshold, the image ROC, map overlays.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.anomaly.case_study import _fmt, _png, auroc_ci, score_panels, warning_html, write_html
from medanomaly.errors import InputError
from medanomaly.evaluate.aupro import aupro_report
from medanomaly.evaluate.report import run_warnings
from medanomaly.jsonio import write_json

__all__ = ["run_folder_study", "score_images"]


def score_images(model: Any, images: Any) -> tuple[np.ndarray, list[np.ndarray]]:
    """Image scores and maps (each on its image's own grid) of a list of :class:`Image2D`."""
    from medanomaly.anomaly.images2d import map_to_image, stack_images
    from medanomaly.anomaly.pipeline import smooth, volume_score

    size, sigma = int(model.info.extra["size"]), float(model.info.thresholds["sigma"])
    split = stack_images(images, size, model.info.extra["domain"].get("intensity_range"))
    maps = smooth(model.method.score(split["images"], split["masks"], split["rel_z"]), sigma)
    scores = np.asarray([volume_score(maps[i : i + 1], split["masks"][i : i + 1]) for i in range(len(maps))])
    return scores, [map_to_image(m, im.array.shape) for m, im in zip(maps, images)]


def _pixel_metrics(test: Any, maps: list[np.ndarray], max_fpr: float) -> dict[str, Any] | None:
    """Pixel AUROC and AUPRO over masked abnormal images and all normal test images (None without masks)."""
    keep = [i for i, im in enumerate(test) if not im.abnormal or im.mask is not None]
    if not any(test[i].abnormal for i in keep):
        return None
    truth = [test[i].mask if test[i].abnormal else np.zeros(test[i].array.shape, bool) for i in keep]
    y = np.concatenate([t.ravel() for t in truth])
    s = np.concatenate([maps[i].ravel() for i in keep])
    return {"pixel_auroc": auroc_ci(y, s, 0)["value"],
            "aupro": aupro_report([maps[i] for i in keep], truth, None, max_fpr),
            "n_abnormal_with_mask": int(sum(test[i].abnormal for i in keep)), "n_normal": int(sum(not test[i].abnormal for i in keep))}  # fmt: skip


def run_folder_study(model: Any, config: Any, run_dir: Path) -> dict[str, Any]:
    """Evaluate a folder2d run on its test images; writes ``metrics.json`` and ``report.html``."""
    from medanomaly.anomaly.images2d import image_set

    images = image_set(config.data.folder, config.data.normal_label)
    test = images.test
    y = np.asarray([im.abnormal for im in test], bool)
    if y.all() or not y.any():
        raise InputError("the 2D test set needs normal and abnormal images (test/normal and test/abnormal; BMAD: "
                         "test/good and test/Ungood)",
                         images.source)  # fmt: skip
    scores, maps = score_images(model, test)
    decision = float(model.info.thresholds["decision"])
    called = scores > decision
    metrics = {"task": "anomaly", "method": config.method.name, "domain": "folder2d", "region": "image",
               "synthetic": "not known (the user's images)", "test_data": f"{images.layout} {images.source.name}: {int((~y).sum())} normal, "
               f"{int(y.sum())} abnormal test images", "grey_from_rgb": images.grey_from_rgb,
               "skipped_files": list(images.skipped),
               "image_auroc": auroc_ci(y, scores, config.evaluate.n_bootstrap, config.seed),
               "sensitivity": float(called[y].mean()), "specificity": float((~called[~y]).mean()),
               "pixel": _pixel_metrics(test, maps, config.evaluate.max_fpr), "thresholds": dict(model.info.thresholds),
               "images": [{"name": im.name, "abnormal": bool(im.abnormal), "score": float(sc), "call": "anomaly" if c else "normal"}
                          for im, sc, c in zip(test, scores, called)], "warnings": run_warnings(run_dir)}  # fmt: skip
    write_json(Path(run_dir) / "metrics.json", metrics)
    write_html(Path(run_dir) / "report.html", _report(metrics, test, scores, maps, y))
    return metrics


def _figures(metrics: dict[str, Any], test: Any, scores: np.ndarray, maps: list[np.ndarray], y: np.ndarray) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = score_panels(scores, y, metrics["thresholds"]["decision"], ("normal test images", "abnormal test images"),
                       "image anomaly score", f"image AUROC {metrics['image_auroc']['value']:.3f}", bins=20)
    figs = [("Image scores (normal vs abnormal) and image ROC", _png(fig))]
    plt.close(fig)
    picks = list(np.flatnonzero(y)[:4]) + list(np.flatnonzero(~y)[:2])
    fig, ax = plt.subplots(2, len(picks), figsize=(2.6 * len(picks), 5.4), squeeze=False)
    for k, i in enumerate(picks):
        ax[0, k].imshow(test[i].array, cmap="gray")
        ax[1, k].imshow(test[i].array, cmap="gray")
        ax[1, k].imshow(maps[i], cmap="inferno", alpha=0.6)
        ax[1, k].contour(maps[i] > metrics["thresholds"]["pixel"], colors="lime", linewidths=0.8)
        if test[i].mask is not None:
            for row in (0, 1):
                ax[row, k].contour(test[i].mask, colors="c", linewidths=0.8)
        ax[0, k].set_title(f"{'abnormal' if y[i] else 'normal'} {scores[i]:.2f}", fontsize=8)
        for row in (0, 1):
            ax[row, k].axis("off")
    figs.append(("Test images and their maps: cyan = lesion mask, green = above the pixel threshold", _png(fig)))
    plt.close(fig)
    return figs


def _report(metrics: dict[str, Any], test: Any, scores: np.ndarray, maps: list[np.ndarray], y: np.ndarray) -> str:
    im = metrics["image_auroc"]
    ci = f" (95 % CI {im['ci95'][0]:.3f}-{im['ci95'][1]:.3f})" if im.get("ci95") else ""
    px = metrics["pixel"]
    pixel = ("no lesion masks: no pixel metrics" if px is None else
             f"pixel AUROC {_fmt(px['pixel_auroc'])}, AUPRO (to {px['aupro']['max_fpr']:.0%} FPR, normalised) "
             f"{_fmt(px['aupro']['value'])} over {px['n_abnormal_with_mask']} masked abnormal and {px['n_normal']} normal images")  # fmt: skip
    grey = f" {metrics['grey_from_rgb']} colour images were converted to grey (luma)." if metrics["grey_from_rgb"] else ""
    skipped = metrics.get("skipped_files") or []
    if skipped:  # files of the folder that could not be used: the reader must know the test set is not all of it
        grey += (f" {len(skipped)} file(s) could not be used and were left out: "
                 + "; ".join(html.escape(line) for line in skipped[:20]) + (" ..." if len(skipped) > 20 else "") + ".")
    figs = "".join(f"<h3>{html.escape(t)}</h3><img src='data:image/png;base64,{b}'>"
                   for t, b in _figures(metrics, test, scores, maps, y))  # fmt: skip
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>2D anomaly detection: "
            f"{html.escape(metrics['method'])}</title></head><body><h1>2D anomaly detection "
            f"({html.escape(metrics['method'])}), trained on normal images only</h1>"
            f"{warning_html(metrics)}<p>Test: {html.escape(metrics['test_data'])}. Image AUROC {_fmt(im['value'])}{ci}; at the threshold "
            f"chosen on normal validation images: sensitivity {metrics['sensitivity']:.3f}, specificity "
            f"{metrics['specificity']:.3f}; {pixel}.{grey}</p>{figs}</body></html>")  # fmt: skip
