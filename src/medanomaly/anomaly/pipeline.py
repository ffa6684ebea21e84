"""Train and apply one anomaly method: normal data -> fitted method -> smoothing and thresholds
chosen label-free -> a map and a score for a new volume on its own grid.

Model selection (epochs, smoothing) uses synthetic anomalies made from the normal validation
brains; the thresholds are quantiles of the normal validation brains' scores at the target
false-positive rate. The test cases are never looked at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medanomaly.anomaly.data import CommonSlices, augment, load_normal, maps_to_volume, to_common
from medanomaly.anomaly.methods import METHODS, finite_map, pixel_auroc
from medanomaly.types import Volume

__all__ = ["build_split", "fit", "smooth", "volume_score", "label_free_thresholds", "predict_volume", "Fitted"]


def _stack(items: list[CommonSlices]) -> dict[str, np.ndarray]:
    return {"images": np.concatenate([c.images for c in items]), "masks": np.concatenate([c.masks for c in items]),
            "rel_z": np.concatenate([c.rel_z for c in items])}  # fmt: skip


def build_split(names: tuple[str, ...], config: Any, seed: int, part: str | None = None) -> dict[str, np.ndarray]:
    """Common-grid slices of normal brains (or, for ``chest_ct``, of lung parenchyma with the grown
    lesion excluded) plus ``copies`` augmented copies of each.

    ``part`` (``train``/``val``) matters only for a chest CT that both trains and validates (its
    slices are split); by default a call with ``config.seed`` is ``train``, any other seed ``val``.
    """
    d = config.data
    part = part or ("train" if seed == config.seed else "val")
    if d.domain == "folder2d":
        from medanomaly.anomaly.images2d import folder_split

        split = folder_split(d, part)
    elif d.domain == "chest_ct":
        from medanomaly.anomaly.chest import chest_split_slices

        split = _stack([chest_split_slices(n, d, part) for n in names])
    else:
        split = _stack([to_common(load_normal(n), d.size, d.slab_mm, d.step_mm) for n in names])
    if d.copies:
        rng = np.random.default_rng(seed)
        images, masks = augment(split["images"], split["masks"], rng, d.copies,
                                {"rotate_deg": d.rotate_deg, "scale": d.scale, "bias": d.bias})  # fmt: skip
        split = {"images": np.concatenate([split["images"], images]), "masks": np.concatenate([split["masks"], masks]),
                 "rel_z": np.concatenate([split["rel_z"]] * (d.copies + 1))}  # fmt: skip
    return split


def smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    """In-plane Gaussian smoothing of (N, S, S) maps (sigma in common-grid pixels); a map with NaN or infinite values
    is refused (:func:`finite_map`)."""
    from scipy import ndimage

    maps = finite_map(maps)
    return ndimage.gaussian_filter(maps, (0, sigma, sigma)) if sigma > 0 else maps


def volume_score(maps: np.ndarray, masks: np.ndarray) -> float:
    """Image-level score: the 99.9th percentile of the map inside the brain."""
    values = maps[masks]
    return float(np.percentile(values, 99.9)) if values.size else 0.0


@dataclass
class Fitted:
    """A fitted method with its label-free choices."""

    method: Any
    sigma: float
    pixel_threshold: float
    image_threshold: float
    log: dict[str, Any]


def fit(config: Any) -> Fitted:
    """Fit ``config.method`` on the normal training brains; choose smoothing on synthetic anomalies
    of the normal validation brains; set thresholds on the clean validation brains."""
    import torch

    from medanomaly.anomaly.synthetic import make_synthetic

    torch.set_num_threads(config.train.threads)
    method = METHODS.create(config.method.name, **config.method.params)
    if hasattr(method, "check_grid"):  # the networks' methods: a grid they cannot take, before the data work
        method.check_grid(config.data.size)
    if getattr(method, "volumetric", False):  # the registered atlas: whole volumes, its own validation
        from medanomaly.anomaly.atlas_validation import fit_volumes

        got = fit_volumes(method, config)
        return Fitted(method, got["sigma"], got["pixel_threshold"], got["image_threshold"], got["log"])
    train = build_split(config.data.train, config, config.seed, "train")
    val = build_split(config.data.val, config, config.seed + 1, "val")
    synth_images, lesions = make_synthetic(val["images"], val["masks"], seed=config.seed + 2)
    synth = {**val, "images": synth_images, "lesions": lesions}
    settings = {**config.train.model_dump(), "seed": config.seed}
    log = method.fit(train, synth, settings)
    raw = method.score(synth["images"], synth["masks"], synth["rel_z"])
    by_sigma = {s: pixel_auroc(smooth(raw, s), lesions, synth["masks"]) for s in config.threshold.sigmas}
    sigma = max(by_sigma, key=lambda s: -1 if np.isnan(by_sigma[s]) else by_sigma[s])
    clean = smooth(method.score(val["images"], val["masks"], val["rel_z"]), sigma)
    pixel_threshold, image_threshold, image_scores = label_free_thresholds(clean, val["masks"], config)
    weak = chance_message(config.method.name, by_sigma[sigma])
    log.update({"warnings": [weak] if weak else [],
                "synthetic_val_pixel_auroc_by_sigma": {str(k): round(v, 4) for k, v in by_sigma.items()},
                "sigma": sigma, "n_train_slices": int(len(train["images"])), "n_val_slices": int(len(clean)),
                "val_image_scores": [round(s, 4) for s in image_scores]})  # fmt: skip
    if config.data.domain == "chest_ct":
        from medanomaly.anomaly.chest import exclusion_record

        log["training_exclusion"] = [exclusion_record(n, config.data.exclude_margin_mm)
                                     for n in dict.fromkeys(config.data.train + config.data.val)]  # fmt: skip
    return Fitted(method, float(sigma), pixel_threshold, image_threshold, log)


def chance_message(method: str, auc: float) -> str | None:
    """One line when the synthetic-anomaly validation pixel AUROC at the chosen smoothing is at chance level
    (<= :data:`~medanomaly.train.engine.CHANCE_AUC`, the house's line for every task), else None.

    Example:
        >>> chance_message("draem", 0.53)[:65]
        'synthetic-anomaly validation pixel AUROC 0.530 is at chance level'
        >>> chance_message("normative", 0.75) is None
        True
    """
    from medanomaly.train.engine import CHANCE_AUC

    if not auc <= CHANCE_AUC:  # NaN (no lesion pixel) is no judgement
        return None
    return (f"synthetic-anomaly validation pixel AUROC {auc:.3f} is at chance level (<= {CHANCE_AUC}): the {method} "
            "maps do not separate the validation's SYNTHETIC anomalies from normal tissue; train longer "
            "(train.epochs) or choose another method")


def label_free_thresholds(clean: np.ndarray, masks: np.ndarray, config: Any) -> tuple[float, float, list[float]]:
    """(pixel threshold, image threshold, image scores) from smoothed maps of the NORMAL validation data:
    the quantiles at 1 - ``threshold.target_fpr`` of the map values inside the masks and of the image
    scores (3D: the split's ``copies + 1`` parts as pseudo-volumes; 2D ``folder2d``: each image)."""
    q = 1.0 - config.threshold.target_fpr
    pixel_threshold = float(np.quantile(clean[masks], q))
    groups = np.array_split(np.arange(len(clean)), max(config.data.copies + 1, 1))  # pseudo-volumes
    if config.data.domain == "folder2d":  # 2D: each validation image is one image
        groups = list(np.arange(len(clean))[:, None])
    image_scores = [volume_score(clean[g], masks[g]) for g in groups if len(g)]
    return pixel_threshold, float(np.quantile(image_scores, q)), image_scores


def predict_volume(method: Any, volume: Volume, size: int, sigma: float,
                   domain: dict[str, Any] | None = None) -> tuple[Volume, float, CommonSlices | None, np.ndarray | None]:  # fmt: skip
    """Anomaly map of one volume on its own grid, its image-level score, the common slices and
    the common-grid maps (``None, None`` for a volumetric method, the ``atlas``, whose ``sigma`` is
    in mm). ``domain`` is the run's ``model.json`` ``extra.domain`` (brain MR when ``None``;
    ``{"name": "chest_ct", "window": ...}`` maps a CT inside its lung mask)."""
    if getattr(method, "volumetric", False):  # the registered atlas maps the volume on its own grid
        amap, score = method.predict_volume(volume, sigma)
        return amap, score, None, None
    if domain and domain.get("name") == "folder2d":
        from medanomaly.anomaly.images2d import predict_image

        return predict_image(method, volume, size, sigma, domain.get("intensity_range"))  # type: ignore[return-value]
    if domain and domain.get("name") == "chest_ct":
        from medanomaly.anomaly.chest import chest_to_common

        common = chest_to_common(volume, size, str(domain["window"]), lungs=domain.get("lungs"))  # case study: known lungs
    else:
        common = to_common(volume, size, min_brain_fraction=0.0)
    maps = smooth(method.score(common.images, common.masks, common.rel_z), sigma)
    return maps_to_volume(common, maps, volume), volume_score(maps, common.masks), common, maps
