"""The int8 accuracy guard and threshold of an exported ``anomaly`` run (normative, autoencoder, padim).

An anomaly run has no labelled validation data: its label-free model selection
(:func:`medanomaly.anomaly.pipeline.fit`) scores the normal **validation** slices with SYNTHETIC
lesions inserted (:func:`medanomaly.anomaly.synthetic.make_synthetic`, seed ``config.seed + 2``).
The guard uses that very set: the fp32 and int8 packages each map it (the run's smoothing applied)
and the int8 graph is refused when

* the pixel AUROC (lesion vs other pixels inside the mask) drops by more than
  :data:`~medanomaly.deploy.quantise.MAX_MAP_AUROC_DROP` (0.005), or
* the image AUROC drops by more than the same limit, where an image is defined: ``folder2d``
  runs, where each validation image is one image and gets the run's image score (the 99.9th
  percentile of its map). A 3D run's image is a whole volume, and its validation split holds too
  few volumes (one or two brains and their augmented copies) for an AUROC: not computed, ``None``.

The thresholds (:func:`int8_thresholds`): the run's pixel and image thresholds are quantiles at
1 - target FPR of its maps of the clean normal validation slices. The int8 graph maps the same
slices slightly differently, so the package keeps the rule, not the number: both thresholds are
recomputed on the int8 maps of the same normal validation data (no test data, no labels), and the
manifest records both pairs, the fp32 pair recomputed from the fp32 package (it must reproduce the
run's), and the pixel false-positive rate the fp32 threshold would have had on the int8 maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GuardSet", "guard_set", "map_metrics", "auroc_problem", "int8_thresholds"]


class GuardSet:
    """The run's normal validation slices, the same with synthetic lesions, and the run's config."""

    def __init__(self, config: Any, val: dict[str, np.ndarray], synthetic: np.ndarray, lesions: np.ndarray) -> None:
        self.config, self.val, self.synthetic, self.lesions = config, val, synthetic, lesions


def guard_set(run_dir: Path) -> GuardSet:
    """The normal validation split exactly as training built it (seed ``seed + 1``) and its
    SYNTHETIC-lesion copy exactly as model selection made it (seed ``seed + 2``)."""
    from medanomaly.anomaly.pipeline import build_split
    from medanomaly.anomaly.synthetic import make_synthetic
    from medanomaly.config import load_config

    cfg = load_config(Path(run_dir) / "config.yaml")
    val = build_split(cfg.data.val, cfg, cfg.seed + 1)
    synthetic, lesions = make_synthetic(val["images"], val["masks"], seed=cfg.seed + 2)
    return GuardSet(cfg, val, synthetic, lesions)


def map_metrics(method: Any, gs: GuardSet, sigma: float) -> dict[str, Any]:
    """Pixel AUROC and (``folder2d`` only, else ``None``) image AUROC of a method on the synthetic set."""
    from medanomaly.anomaly.methods import pixel_auroc
    from medanomaly.anomaly.pipeline import smooth, volume_score

    masks = gs.val["masks"]
    maps = smooth(method.score(gs.synthetic, masks, gs.val["rel_z"]), sigma)
    out: dict[str, Any] = {"pixel_auroc": round(pixel_auroc(maps, gs.lesions, masks), 6), "image_auroc": None}
    if gs.config.data.domain == "folder2d":
        scores = np.array([volume_score(m[None], k[None]) for m, k in zip(maps, masks, strict=True)])
        has = gs.lesions.reshape(len(maps), -1).any(1)
        out["image_auroc"] = round(pixel_auroc(scores, has, np.ones(len(maps), bool)), 6)
    return out


def auroc_problem(ref: dict[str, Any], got: dict[str, Any], limit: float) -> str | None:
    """The guard's complaint when int8 loses more than ``limit`` of a synthetic-set AUROC (NaN or
    ``None``, an undefined AUROC, is not compared)."""
    problems = []
    for key, what in (("pixel_auroc", "pixel AUROC"), ("image_auroc", "image AUROC")):
        a, b = ref.get(key), got.get(key)
        if a is None or b is None or np.isnan(a) or np.isnan(b):
            continue
        if a - b > limit:
            problems.append(f"synthetic-lesion validation {what} drops by {a - b:.4f} ({a:.4f} -> {b:.4f}, "
                            f"limit {limit})")  # fmt: skip
    return "; ".join(problems) or None


def int8_thresholds(fp32: Any, int8: Any, gs: GuardSet, thresholds: dict[str, Any]) -> dict[str, Any]:
    """Pixel and image (``decision``) thresholds recomputed on the int8 maps of the clean normal
    validation slices (see the module docstring), with the record that justifies them.

    Args:
        fp32: the package's fp32 method; int8: the same over the int8 graph.
        gs: the guard set (its clean normal validation slices are used, never the synthetic ones).
        thresholds: the run's ``thresholds`` (``pixel``, ``decision``, ``sigma``).
    """
    from medanomaly.anomaly.pipeline import label_free_thresholds, smooth

    sigma, masks = float(thresholds["sigma"]), gs.val["masks"]
    clean = {name: smooth(m.score(gs.val["images"], masks, gs.val["rel_z"]), sigma)
             for name, m in (("fp32", fp32), ("int8", int8))}  # fmt: skip
    fp32_pixel, fp32_image, _ = label_free_thresholds(clean["fp32"], masks, gs.config)
    pixel, image, _ = label_free_thresholds(clean["int8"], masks, gs.config)
    run = {"pixel": float(thresholds["pixel"]), "decision": float(thresholds["decision"])}
    fpr_at_run = float(np.mean(clean["int8"][masks] > run["pixel"]))
    return {
        "policy": "recomputed on the int8 maps of the normal validation slices (same rule: quantile at "
                  "1 - target FPR); sigma kept from the run",
        "target_fpr": float(gs.config.threshold.target_fpr), "fp32": run,
        "int8": {"pixel": pixel, "decision": image},
        "fp32_recomputed_max_abs_diff": max(abs(fp32_pixel - run["pixel"]), abs(fp32_image - run["decision"])),
        "int8_pixel_fpr_at_fp32_threshold": round(fpr_at_run, 6), "validation_slices": int(len(masks)),
    }  # fmt: skip
