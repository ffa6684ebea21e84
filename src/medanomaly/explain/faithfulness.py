"""Is the explanation faithful? Deletion/insertion curves, pointing game, energy inside the lesion.

* **Deletion** (Petsiuk et al. 2018, RISE): remove the voxels the map ranks highest first (replace
  them with a baseline) and follow the target probability; a faithful map makes it fall fast, so
  a **lower** deletion AUC is better. **Insertion** starts from the baseline image and puts the
  top-ranked voxels back; a **higher** insertion AUC is better.
* **Random-map baseline**: the same curves for uniformly random maps on the same model and image.
  A map worth showing must beat it.
* **Pointing game** (Zhang et al. 2016): does the map's peak fall inside the lesion mask (within an
  optional tolerance in mm)? **Energy inside**: fraction of the map's positive mass inside the mask.

Curves are computed on the model's input grid; the pointing game and the energy on the image grid
in patient space (the map is resampled there). Scores are probabilities (0..1), AUC over the
deleted/inserted fraction 0..1.

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> m = Volume(np.zeros((3, 8, 8), np.float32)); m.array[1, 2, 3] = 1.0
    >>> lesion = Volume(np.zeros((3, 8, 8), np.uint8)); lesion.array[1, 2:4, 2:4] = 1
    >>> pointing_game(m, lesion), energy_inside(m, lesion)
    (True, 1.0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.types import Volume

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class Curve:
    """A deletion or insertion curve: target probability after each fraction of voxels changed."""

    kind: str
    fractions: tuple[float, ...]
    scores: tuple[float, ...]
    auc: float


@dataclass(frozen=True)
class Faithfulness:
    """Faithfulness of one map on one image (curves on the model grid, pointing on the image grid).

    Attributes:
        deletion_auc / insertion_auc: AUC of the map's curves (lower / higher is better).
        random_deletion_auc / random_insertion_auc: the same for random maps (mean of ``n_random``).
        pointing_hit: peak inside the lesion (None without a mask).
        energy_inside: fraction of positive map mass inside the lesion, 0..1 (None without a mask).
        synthetic: True when measured on simulated lesions.
    """

    method: str
    target: int
    deletion_auc: float
    insertion_auc: float
    random_deletion_auc: float
    random_insertion_auc: float
    pointing_hit: bool | None = None
    energy_inside: float | None = None
    synthetic: bool = False

    def to_json(self) -> dict[str, Any]:
        return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in self.__dict__.items()}


def _baseline_tensor(x: torch.Tensor, baseline: str | float) -> torch.Tensor:
    import torch

    if baseline == "mean":
        return torch.full_like(x, float(x.mean()))
    if baseline == "min":
        return torch.full_like(x, float(x.min()))
    if baseline == "blur":
        from scipy.ndimage import gaussian_filter

        arr = x.detach().cpu().numpy()
        sigma = [0, 0] + [max(1.0, s / 16) for s in arr.shape[2:]]
        return torch.from_numpy(gaussian_filter(arr, sigma=sigma).astype(np.float32))
    try:
        return torch.full_like(x, float(baseline))
    except (TypeError, ValueError):
        raise InputError(f"unknown baseline {baseline!r}; use mean, min, blur or a number") from None


def _ranking(attribution: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Voxel indices, highest attribution first; ties (flat CAM regions) broken at random."""
    flat = np.asarray(attribution, dtype=np.float64).ravel()
    return np.lexsort((rng.random(flat.size), -flat))


def perturbation_curve(model: Any, x: torch.Tensor, attribution: np.ndarray, kind: str = "deletion", *,
                       target: int = 0, n_steps: int = 16, baseline: str | float = "mean",
                       batch_size: int = 8, seed: int = 0,
                       output_fn: Callable[[Any], Any] | None = None) -> Curve:  # fmt: skip
    """Deletion or insertion curve of ``attribution`` (spatial shape of ``x``) for class ``target``.

    Args:
        kind: "deletion" (start from the image, remove top voxels) or "insertion".
        n_steps: number of equal fractions from 0 to 1 (``n_steps + 1`` points).
        baseline: what removed voxels become: "mean" (image mean), "min", "blur" or a number.
        batch_size: perturbed copies per forward pass (bounds memory).
    """
    import torch

    from medanomaly.explain.methods import scores

    if kind not in ("deletion", "insertion"):
        raise InputError(f"unknown curve {kind!r}; use deletion or insertion")
    spatial = tuple(x.shape[2:])
    if tuple(np.shape(attribution)) != spatial:
        raise InputError(f"attribution shape {np.shape(attribution)} does not match input {spatial}")
    rng = np.random.default_rng(seed)
    order = _ranking(attribution, rng)
    n_vox = order.size
    base = _baseline_tensor(x, baseline)
    src, dst = (x, base) if kind == "deletion" else (base, x)
    src_flat = src.reshape(x.shape[0], x.shape[1], -1)
    dst_flat = dst.reshape(x.shape[0], x.shape[1], -1)
    fractions = np.linspace(0.0, 1.0, int(n_steps) + 1)
    counts = np.rint(fractions * n_vox).astype(int)
    order_t = torch.from_numpy(order.astype(np.int64))
    values: list[float] = []
    for start in range(0, len(counts), max(1, int(batch_size))):
        batch = []
        for k in counts[start : start + batch_size]:
            cur = src_flat.clone()
            idx = order_t[:k]
            cur[:, :, idx] = dst_flat[:, :, idx]
            batch.append(cur.reshape(x.shape))
        probs = scores(model, torch.cat(batch), output_fn)
        values.extend(float(p) for p in probs[:, target])
    auc = float(np.trapezoid(values, fractions))
    return Curve(kind, tuple(float(f) for f in fractions), tuple(values), auc)


def random_baseline_auc(model: Any, x: torch.Tensor, kind: str = "deletion", *, target: int = 0,
                        n_maps: int = 3, seed: int = 0, **curve_options: Any) -> float:  # fmt: skip
    """Mean AUC of ``n_maps`` uniformly random maps: the bar a faithful map must clear."""
    rng = np.random.default_rng(seed)
    aucs = [
        perturbation_curve(model, x, rng.random(tuple(x.shape[2:])), kind, target=target,
                           seed=seed + i, **curve_options).auc  # fmt: skip
        for i in range(int(n_maps))
    ]
    return float(np.mean(aucs))


def _on_same_grid(map_volume: Volume, mask: Volume) -> Volume:
    from medanomaly.preprocess.resample import mask_onto_grid

    return mask_onto_grid(mask, map_volume)


def pointing_game(map_volume: Volume, mask: Volume, tolerance_mm: float = 0.0) -> bool:
    """True when the map's maximum lies inside ``mask`` (or within ``tolerance_mm`` of it).

    A flat-topped maximum counts at the plateau voxel nearest its centroid (``maps.peak_index``);
    a flat map (empty or constant, ``maps.is_flat``) points nowhere: a miss.
    """
    lesion = np.asarray(_on_same_grid(map_volume, mask).array) > 0
    if not lesion.any():
        raise InputError("lesion mask is empty; the pointing game needs a lesion")
    from medanomaly.explain.maps import is_flat, peak_index

    if is_flat(map_volume.array):
        return False

    peak = peak_index(map_volume.array)
    if lesion[peak]:
        return True
    if tolerance_mm <= 0:
        return False
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(~lesion, sampling=map_volume.spacing[::-1])
    return bool(dist[peak] <= tolerance_mm)


def energy_inside(map_volume: Volume, mask: Volume) -> float:
    """Fraction (0..1) of the map's positive mass that falls inside ``mask``."""
    lesion = np.asarray(_on_same_grid(map_volume, mask).array) > 0
    positive = np.clip(np.asarray(map_volume.array, dtype=np.float64), 0, None)
    total = positive.sum()
    return float(positive[lesion].sum() / total) if total > 0 else 0.0


def evaluate_image(model: Any, image: Volume, method: str = "gradcam", *, mask: Volume | None = None,
                   target: int | None = None, layer: str | None = None,
                   preprocess: Callable[[Volume], Volume] | None = None,
                   output_fn: Callable[[Any], Any] | None = None, n_steps: int = 16, n_random: int = 3,
                   baseline: str | float = "mean", tolerance_mm: float = 0.0, seed: int = 0,
                   **options: Any) -> Faithfulness:  # fmt: skip
    """Every faithfulness measure of ``method`` on one image (and its lesion mask, if any)."""
    from medanomaly.explain.maps import map_on_grid, resample_to, volume_to_tensor
    from medanomaly.explain.methods import attribute, default_target, spatial_dims_of

    grid = preprocess(image) if preprocess is not None else image
    x = volume_to_tensor(grid, spatial_dims_of(model, default=2 if grid.is_2d else 3))
    target = default_target(model, x, output_fn) if target is None else int(target)
    attr = attribute(model, x, method, target=target, layer=layer, output_fn=output_fn, **options)
    common = dict(target=target, n_steps=n_steps, baseline=baseline, seed=seed, output_fn=output_fn)
    deletion = perturbation_curve(model, x, attr, "deletion", **common)
    insertion = perturbation_curve(model, x, attr, "insertion", **common)
    rand_del = random_baseline_auc(model, x, "deletion", n_maps=n_random, **common)
    rand_ins = random_baseline_auc(model, x, "insertion", n_maps=n_random, **common)
    hit = energy = None
    if mask is not None:
        map_vol = resample_to(map_on_grid(attr, grid, method), image)
        hit = pointing_game(map_vol, mask, tolerance_mm)
        energy = energy_inside(map_vol, mask)
    synthetic = bool(image.meta.get("synthetic", False))
    return Faithfulness(method, target, deletion.auc, insertion.auc, rand_del, rand_ins, hit, energy, synthetic)


@dataclass(frozen=True)
class DatasetFaithfulness:
    """Faithfulness over a dataset: per-image results, skipped items and the summary."""

    method: str
    items: tuple[tuple[str, Faithfulness], ...]
    skipped: tuple[tuple[str, str], ...] = ()
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "summary": self.summary,
            "items": [{"name": n, **f.to_json()} for n, f in self.items],
            "skipped": [{"name": n, "reason": r} for n, r in self.skipped],
        }


def summarise(method: str, results: list[tuple[str, Faithfulness]]) -> dict[str, Any]:
    """Means of the AUCs, pointing-game hits/count, mean energy; ``synthetic`` if any item is."""
    out: dict[str, Any] = {"method": method, "n_images": len(results)}
    if not results:
        return out
    for key in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"):
        out[f"mean_{key}"] = float(np.mean([getattr(f, key) for _, f in results]))
    out["deletion_beats_random"] = int(sum(f.deletion_auc < f.random_deletion_auc for _, f in results))
    out["insertion_beats_random"] = int(sum(f.insertion_auc > f.random_insertion_auc for _, f in results))
    hits = [f.pointing_hit for _, f in results if f.pointing_hit is not None]
    if hits:
        out["pointing_hits"] = int(sum(hits))
        out["pointing_count"] = len(hits)
        out["pointing_game"] = float(np.mean(hits))
        out["mean_energy_inside"] = float(np.mean([f.energy_inside for _, f in results if f.energy_inside is not None]))
    out["synthetic"] = any(f.synthetic for _, f in results)
    return out


def evaluate_dataset(model: Any, items: Iterable[tuple[str, Volume, Volume | None]], method: str = "gradcam",
                     **options: Any) -> DatasetFaithfulness:  # fmt: skip
    """:func:`evaluate_image` over ``(name, image, mask or None)`` items; bad items are reported, skipped."""
    from medanomaly.registry import EXPLAINERS

    EXPLAINERS.get(method)  # an unknown method fails once, not once per item
    results: list[tuple[str, Faithfulness]] = []
    skipped: list[tuple[str, str]] = []
    for name, image, mask in items:
        try:
            results.append((name, evaluate_image(model, image, method, mask=mask, **options)))
        except InputError as exc:
            skipped.append((name, str(exc)))
    return DatasetFaithfulness(method, tuple(results), tuple(skipped), summarise(method, results))
