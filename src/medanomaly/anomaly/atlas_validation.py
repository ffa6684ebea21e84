"""Validation volumes for the registered atlas (:mod:`medanomaly.anomaly.atlas`): normal brains made
to look like clinical scans, clean and with SYNTHETIC 3D lesions, for its label-free choices.

A clinical test scan differs from the atlas in ways a normal validation brain must imitate, or the
validation cannot see them:

- **another person**: with ``val_leave_out`` a validation brain is scored against the atlas without
  the training brain of the same person (ch2better is the same person as ch2; the test person is
  never in the atlas either);
- **thick slices** and **noise** (:func:`medanomaly.anomaly.atlas.thick_slices`, ``noise``: Gaussian
  noise of SD = level x the region's interquartile intensity range);
- **the lesions** (``val_lesions``): ``mixed`` (bright, dark, CutPaste) or ``enhancing`` (a tumour
  on a post-contrast T1; :func:`medanomaly.anomaly.synthetic.make_synthetic_3d`); in a whole head
  (``edge_heads``) with ``val_cross_outline`` they may cross the brain's outline, as a test tumour can;
- **intensity inhomogeneity** (``val_bias``): a smooth multiplicative field between
  ``exp(-val_bias)`` and ``exp(+val_bias)`` over the region (:func:`bias_field`), as in a T1 scan
  without bias-field correction (10-30 % across the brain is common at 1.5-3 T).

Everything made here is SYNTHETIC and is never the test.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from medanomaly.anomaly.methods import pixel_auroc
from medanomaly.boxes import mask_bounds
from medanomaly.errors import InputError
from medanomaly.types import Volume

__all__ = ["bias_field", "lesioned", "leave_out", "validation_cases", "choose_by_validation", "fit_volumes",
           "SAME_PERSON", "OUTLINE_SHARE"]

#: With ``val_cross_outline``, the share of an edge head's SYNTHETIC lesions centred on the brain's outline (the
#: rest anywhere in the brain): half, as bright and dark lesions are drawn in equal share; fixed, not tuned.
OUTLINE_SHARE = 0.5

#: Validation brains that are the same person as a training brain (left out of the atlas for them).
SAME_PERSON = {"ch2better": "ch2", "ch2bet": "ch2", "ch2": "ch2"}


def bias_field(shape: tuple[int, ...], region: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative intensity field ``exp(strength * p)``: ``p`` is a random quadratic
    polynomial of the voxel position (coordinates -1..1 across ``region``'s bounding box) scaled so
    that ``max |p| = 1`` inside ``region``; so the field spans at most ``exp(+-strength)`` there
    (0.2: -18 % .. +22 %). ``strength`` 0 gives ones."""
    if strength <= 0 or not region.any():
        return np.ones(shape, np.float32)
    lo, end = mask_bounds(region)
    hi = end - 1  # the last voxel inside
    axes = [(np.arange(n) - (a + b) / 2) / max((b - a) / 2, 1.0) for n, a, b in zip(shape, lo, hi)]
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    terms = (z, y, x, z * y, z * x, y * x, z * z, y * y, x * x)
    p = sum(rng.normal() * t for t in terms)
    p = np.broadcast_to(p, shape)
    return np.exp(strength * p / max(float(np.abs(p[region]).max()), 1e-6)).astype(np.float32)


def lesioned(clean: Volume, region: np.ndarray, lesion_area: np.ndarray, noise: tuple[float, ...], seed: int,
             bias: float = 0.0, model: str = "mixed", confine: np.ndarray | None = None,
             outline_share: float = 0.0) -> list[tuple[Volume, np.ndarray]]:  # fmt: skip
    """SYNTHETIC copies of one clean volume: for each ``noise`` level, Gaussian noise of SD = level x
    the region's interquartile intensity range inside ``region`` (lowering the grey/white
    contrast-to-noise ratio as in clinical scans), then 3D lesions (:func:`make_synthetic_3d`)
    of lesion ``model`` centred in ``lesion_area`` (the brain) and cut to ``confine`` (default
    ``lesion_area``; a whole head's rough brain mask lets them cross the brain's outline; ``outline_share``
    of them centred on ``lesion_area``'s outline), then (``bias`` > 0) a multiplicative
    :func:`bias_field` over the whole volume (lesion included, as an acquisition would)."""
    from medanomaly.anomaly.synthetic import make_synthetic_3d

    arr = np.asarray(clean.array, np.float32)
    iqr = float(np.subtract(*np.percentile(arr[region], [75, 25])))
    out = []
    for j, level in enumerate(noise):
        rng = np.random.default_rng(seed + j)
        noisy = arr + region * rng.normal(0.0, level * iqr, arr.shape).astype(np.float32)
        case, lesions = make_synthetic_3d(noisy, lesion_area, clean.spacing, seed=seed + j, model=model,
                                          confine=confine, outline_share=outline_share)
        case = case * bias_field(arr.shape, region, bias, rng)
        out.append((clean.with_array(case.astype(np.float32)), lesions))
    return out


def leave_out(method: Any, name: str) -> Any:
    """The atlas without the training brain ``name`` (for validating on the same person)."""
    import copy

    other = copy.copy(method)
    other.brains_ = [b for n, b in zip(method.names_, method.brains_) if n != name]
    if not other.brains_:
        raise InputError(f"atlas edge validation head {name!r} is the only training brain; add another")
    return other


def _atlas_for(method: Any, name: str) -> Any:
    """The atlas a validation brain is scored against: without its own person when ``val_leave_out``."""
    person = SAME_PERSON.get(name, name)
    return leave_out(method, person) if method.val_leave_out and person in method.names_ else method


def validation_cases(method: Any, config: Any, val_grid_mm: tuple[float, float],
                     noise: tuple[float, ...]) -> list[dict[str, Any]]:  # fmt: skip
    """The validation volumes, clean (``lesions`` None) and with SYNTHETIC lesions, made to look like
    clinical scans (``val_grid_mm``: in-plane pixel and slice thickness, mm; ``method.val_bias``
    inhomogeneity on all of them): the skull-stripped validation brains (``config.data.val``; region
    = their brain), and the whole-head ``edge_heads`` (region = the rough ``brain_mask`` of the head,
    as for the test, so non-brain tissue inside it is scored; lesions only in the head's
    skull-stripped twin, centred in its brain and, with ``method.val_cross_outline``, free to cross
    the brain's outline into the rest of the region, :data:`OUTLINE_SHARE` of them centred on it, as a
    tumour that pushes out of the brain or sits against it does; the atlas leaves that person out)."""
    from medanomaly.anomaly.atlas import thick_slices
    from medanomaly.anomaly.data import _brain, load_brain_only, load_normal
    from medanomaly.preprocess.tissue_masks import brain_mask

    def clean_case(volume: Volume, region: np.ndarray, seed: int) -> Volume:
        field = bias_field(volume.shape, region, method.val_bias, np.random.default_rng(seed))
        return volume.with_array(np.asarray(volume.array, np.float32) * field)

    cases = []
    for i, name in enumerate(config.data.val):
        clean = thick_slices(load_brain_only(name), *val_grid_mm)
        brain, atlas, seed = _brain(clean), _atlas_for(method, name), config.seed + 100 * i
        cases.append({"name": name, "volume": clean_case(clean, brain, seed + 99), "lesions": None, "region": None,
                      "atlas": atlas})  # fmt: skip
        for j, (case, lesions) in enumerate(lesioned(clean, brain, brain, noise, seed, method.val_bias,
                                                     method.val_lesions)):  # fmt: skip
            cases.append({"name": f"{name}/noise{noise[j]:g}", "volume": case, "lesions": lesions, "region": None,
                          "atlas": atlas})  # fmt: skip
    for i, head in enumerate(method.edge_heads):
        clean = thick_slices(load_normal(head), *val_grid_mm)
        stripped = thick_slices(load_brain_only(head), *val_grid_mm)
        region = np.asarray(brain_mask(clean).array) > 0
        atlas, seed = leave_out(method, head), config.seed + 1000 + 100 * i
        cases.append({"name": f"{head}_head", "volume": clean_case(clean, region, seed + 99), "lesions": None,
                      "region": region, "atlas": atlas})  # fmt: skip
        confine, share = (region, OUTLINE_SHARE) if method.val_cross_outline else (None, 0.0)
        for j, (case, lesions) in enumerate(lesioned(clean, region, _brain(stripped) & region, noise, seed,
                                                     method.val_bias, method.val_lesions, confine, share)):  # fmt: skip
            cases.append({"name": f"{head}_head/noise{noise[j]:g}", "volume": case, "lesions": lesions,
                          "region": region, "atlas": atlas})  # fmt: skip
    return cases


def choose_by_validation(method: Any, lesioned: list[dict[str, Any]], sigmas: list[float]) -> dict[tuple, float]:
    """Pooled pixel AUROC on the SYNTHETIC lesion cases, in two stages (to keep training cheap): every
    (match, kind, sigma mm, local mm) with the support off, then every support candidate with the best
    of those. Keys are ``(match, kind, sigma, support, local_mm)``; on a tie the earlier candidate
    (``locals_mm`` in order: list 0 first) wins. The cases' maps are made in parallel threads (one per
    usable CPU, at most 4; SciPy's filters release the GIL, and each thread works on its own case, so the
    values are those of a serial run)."""
    from concurrent.futures import ThreadPoolExecutor

    from medanomaly.train.thread_probe import thread_candidates

    y = np.concatenate([c["lesions"][c["parts"]["brain"]] for c in lesioned])

    def auroc(m: str, k: str, s: float, sup: tuple[float, float] | None, loc: float) -> float:
        def case_scores(c: dict[str, Any]) -> np.ndarray:
            return method.map_from(c["parts"], k, s, c["volume"].spacing, m, sup, loc)[c["parts"]["brain"]]

        return pixel_auroc(np.concatenate(list(pool.map(case_scores, lesioned))), y, np.ones_like(y))

    with ThreadPoolExecutor(max(thread_candidates())) as pool:
        out = {(m, k, float(s), None, loc): auroc(m, k, float(s), None, loc)
               for m in method.matches for k in method.kinds for loc in method.locals_mm for s in sigmas}  # fmt: skip
        m, k, s, _, loc = max(out, key=lambda c: np.nan_to_num(out[c], nan=-1.0))
        out.update({(m, k, s, sup, loc): auroc(m, k, s, sup, loc) for sup in method.supports})
    return out


def _validation_fpr(cases: list[dict[str, Any]], maps: list[np.ndarray], threshold: float) -> dict[str, float]:
    """Per validation volume, the fraction of its normal brain voxels whose final map exceeds the
    pixel ``threshold`` (the FPR; for a volume with SYNTHETIC lesions, over the voxels more than 2
    voxels away from them, as the smoothing spreads a lesion): the clean volume gives the target FPR
    by construction, the noisy copies (clinical-like contrast-to-noise) show how the threshold transfers."""
    from scipy import ndimage

    out = {}
    for c, amap in zip(cases, maps, strict=True):
        brain = c["parts"]["brain"]
        normal = brain if c["lesions"] is None else brain & ~ndimage.binary_dilation(c["lesions"] > 0, iterations=2)
        out[c["name"]] = round(float(np.mean(amap[normal] > threshold)), 5)
    return out


def _key(choice: tuple) -> str:
    m, k, s, sup, loc = choice
    return f"{m}/{k}/{s:g}/" + ("off" if sup is None else f"{sup[0]:g},{sup[1]:g}") + f"/local{loc:g}"


def fit_volumes(method: Any, config: Any, val_grid_mm: tuple[float, float] = (0.8, 6.5),
                noise: tuple[float, ...] = (0.0, 0.5)) -> dict[str, Any]:  # fmt: skip
    """Store the training brains; choose the intensity match, the map kind, ``sigma`` (mm,
    ``config.threshold.sigmas``), then the atlas brain support (off or one of ``method.supports``) by
    pooled pixel AUROC on SYNTHETIC 3D lesions in the validation volumes
    (:func:`validation_cases`, :func:`choose_by_validation`);
    set the pixel threshold (quantile at ``target_fpr``) and the image threshold on the clean ones.

    Returns:
        ``{"sigma", "pixel_threshold", "image_threshold", "log"}``.
    """
    from medanomaly.anomaly.pipeline import volume_score

    start = time.process_time()
    log = method.fit_brains(tuple(config.data.train))
    cases = validation_cases(method, config, val_grid_mm, noise)
    for c in cases:
        c["parts"] = c["atlas"].components(c["volume"], c["region"], matches=method.matches)
    lesioned = [c for c in cases if c["lesions"] is not None]
    by_choice = choose_by_validation(method, lesioned, config.threshold.sigmas)
    best = max(by_choice, key=lambda c: np.nan_to_num(by_choice[c], nan=-1.0))
    method.match, method.kind, sigma, method.support, method.local_mm = best
    q = 1.0 - config.threshold.target_fpr
    maps = [method.final_map(c["parts"], sigma, c["volume"].spacing) for c in cases]
    clean_maps, image_scores = [], []
    for c, amap in zip(cases, maps, strict=True):
        if c["lesions"] is None:
            clean_maps.append(amap[c["parts"]["brain"]])
            image_scores.append(volume_score(amap, c["parts"]["brain"]))
    pixel_threshold = float(np.quantile(np.concatenate(clean_maps), q))
    by_support: dict[str, float] = {}
    by_local: dict[str, float] = {}
    for choice, value in by_choice.items():
        _, _, _, support, local = _key(choice).split("/")
        for table, name in ((by_support, support), (by_local, local)):
            table[name] = max(table.get(name, -1.0), round(float(np.nan_to_num(value, nan=-1.0)), 4))
    log.update({"val_pixel_fpr_at_threshold": _validation_fpr(cases, maps, pixel_threshold),
                "map_scale": method.map_scale})  # fmt: skip
    log.update({"synthetic_val_pixel_auroc_by_match_kind_sigma_mm_support_local": {_key(c): round(v, 4) for c, v in by_choice.items()},
                "synthetic_val_best_pixel_auroc_by_support": by_support,
                "synthetic_val_best_pixel_auroc_by_local_mm": by_local,
                "match": method.match, "kind": method.kind, "sigma_mm": sigma, "local_mm": method.local_mm,
                "val_leave_out": method.val_leave_out, "val_bias": method.val_bias, "val_lesions": method.val_lesions,
                "val_cross_outline": method.val_cross_outline,
                "demons_iterations": method.demons_iterations,
                "support": None if method.support is None else list(method.support),
                "val_cases": [c["name"] for c in cases], "val_grid_mm": list(val_grid_mm), "val_noise_iqr": list(noise),
                "registrations": [{"case": c["name"], **c["parts"]["log"]} for c in cases],
                "val_image_scores": [round(v, 4) for v in image_scores], "fit_cpu_s": round(time.process_time() - start, 1)})  # fmt: skip
    return {"sigma": sigma, "pixel_threshold": pixel_threshold,
            "image_threshold": float(np.quantile(image_scores, q)), "log": log}  # fmt: skip
