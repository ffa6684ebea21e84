"""``atlas``: a registered voxel-wise normative atlas of brain MRI (the classical baseline in 3D).

Train: each normal brain is reoriented to LPS, skull-stripped (the template's own brain, or for
``ch2`` its skull-stripped twin ``ch2bet``), resampled to ``spacing_mm`` (2 mm) and its brain
intensities replaced by their rank in the brain (0..1); the arrays and their geometry are the
run's weights (safetensors, no pickle).

Predict (a volume on its own grid, nothing reoriented): the test brain is found
(:func:`medanomaly.anomaly.data._brain`: ``preprocess.tissue_masks.brain_mask``, or the non-zero
voxels of a skull-stripped image) and ranked; each normal brain is registered to it with
:func:`medanomaly.preprocess.registration.register` (moving = normal brain ranks, fixed = test
brain ranks at ``fixed_mm`` in-plane; centre-of-mass start, rigid then affine, optionally a coarse
B-spline; 2 resolution levels). A registration whose warped brain mask overlaps the test brain
mask with Dice below ``min_dice`` is dropped and flagged (``atlas_registration_failed:<k>``);
if all fail, the best one is kept (flagged too) and the prediction abstains
(``quality_check_failed:no_atlas_registration_passed``). Each warped normal brain is averaged over the
test's slice thickness (thin template -> thick clinical slices) and re-ranked inside the test
brain; their voxel-wise mean gives the test's expected rank ``e`` and spread ``s`` by the
intensity ``match``: ``conditional`` (the test's median rank and robust spread given the atlas
mean, learned from the test brain itself: :func:`conditional_expectation`; handles a test with
another grey/white contrast), ``rank`` (``e`` = the atlas mean, ``s`` = its SD over the brains) or, when
``matches`` lists it, ``mirror`` (``e`` = the test's own rank at the mirror place, :mod:`~medanomaly.anomaly.mirror`):

=========  ==========================================================================
map        value per voxel (higher = more abnormal)
=========  ==========================================================================
abs        ``|x - e|``
z          ``|x - e| / sqrt(s^2 + floor^2)``
bright     ``max(x - e, 0)`` (brighter than the normal brains predict)
robust     ``|x - e| / (1.4826 MAD of x - e in the test brain)``: ``abs`` in units of the test's
           own robust residual spread (one scale per volume, so thresholds transfer between scans)
=========  ==========================================================================

where, with ``local_mm`` > 0, ``x - e`` first loses its local mean over the brain (Gaussian
weighting of SD ``local_mm``, :func:`local_offset`): a regional offset (intensity inhomogeneity,
partial volume of the top slice, a region whose contrast differs from the atlas's) is removed, a
lesion much smaller than ``local_mm`` keeps most of its contrast;

then Gaussian smoothing of ``sigma`` mm; with ``map_scale: robust`` the smoothed map of each volume
is finally put in units of its own robust spread over its brain (:func:`robust_scaled`), so that
the pixel threshold set on the normal validation volume means the same on a scan whose map runs
on another scale (see ``map_scale``). Voxels of the test brain that no warped normal brain
covers take the nearest covered atlas value; with the atlas brain ``support`` on, the map is
weighted by the signed distance (mm) to the edge of the warped normal brains' own brain masks
(:func:`support_weight`), so such voxels score 0. The match, the map kind, ``sigma`` and the
support, ``local_mm`` are chosen on SYNTHETIC 3D lesions inserted into the normal validation brain
and, with ``edge_heads``, into a whole normal head inside its rough ``brain_mask`` (:func:`medanomaly.anomaly.atlas_validation.fit_volumes`;
the volumes: :mod:`medanomaly.anomaly.atlas_validation`), never on the test. Example (a trained run)::

    >>> from medanomaly.engine import load_model                       # doctest: +SKIP
    >>> prediction = load_model("runs/atlas").predict(volume)          # doctest: +SKIP
    >>> prediction.anomaly_map                                         # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from medanomaly.anomaly.data import BRAIN_LABELS, SKULL_STRIPPED
from medanomaly.anomaly.methods import METHODS
from medanomaly.anomaly.synthetic import LESION_MODELS
from medanomaly.errors import ConfigError, InputError
from medanomaly.processes import usable_cpus
from medanomaly.types import QUALITY_FAILED, Volume

__all__ = ["AtlasMethod", "MAP_KINDS", "MATCHES", "MAP_SCALES", "median_spread", "robust_scaled", "DEFAULT_SUPPORTS", "thick_slices", "atlas_brain",
           "conditional_expectation", "local_offset", "signed_distance_mm", "support_weight"]  # fmt: skip

#: Map kinds the validation chooses from (see the module docstring).
MAP_KINDS = ("abs", "z", "bright", "robust")
#: Intensity matches: the test's expected rank given the atlas (:func:`conditional_expectation`), the
#: atlas mean's own rank, or the test's own mirror image (:mod:`medanomaly.anomaly.mirror`; a candidate only
#: when ``matches`` lists it).
MATCHES = ("conditional", "rank", "mirror")
#: Atlas brain-support candidates ``(edge_mm, ramp_mm)`` the validation chooses from (besides off):
#: a hard cut at 4 mm outside / at / 4 or 8 mm inside the support edge, or the same edges with an
#: 8 mm linear ramp (see :func:`support_weight`). Fixed before any test run.
DEFAULT_SUPPORTS: tuple[tuple[float, float], ...] = tuple((e, r) for r in (0.0, 8.0) for e in (-4.0, 0.0, 4.0, 8.0))
#: Per-volume scalings of the final (smoothed) map: ``none`` or ``robust`` (:func:`robust_scaled`).
MAP_SCALES = ("none", "robust")


def atlas_brain(volume: Volume, spacing_mm: float) -> tuple[Volume, np.ndarray]:
    """One normal brain for the atlas: LPS, ``spacing_mm`` isotropic, brain ranks 0..1 (the brain:
    :func:`medanomaly.anomaly.data._brain`, i.e. the non-zero voxels of a skull-stripped image).

    Returns:
        (rank Volume, 0 outside the brain; bool brain mask on the same grid).
    """
    from medanomaly.anomaly.data import _brain, _scale
    from medanomaly.preprocess.resample import resample_to_spacing, to_canonical

    volume = to_canonical(volume)
    volume = resample_to_spacing(volume.with_array(np.asarray(volume.array, np.float32)), spacing_mm,
                                 interpolator="linear", antialias=True)  # fmt: skip
    brain = _brain(volume)
    if brain.sum() < 1000:
        raise InputError(f"normal brain: fewer than 1000 brain voxels at {spacing_mm} mm")
    return volume.with_array(_scale(np.asarray(volume.array, np.float32), brain)), brain


def thick_slices(volume: Volume, in_plane_mm: float, thickness_mm: float) -> Volume:
    """A thin-slice normal brain made to look like a clinical scan: LPS, ``in_plane_mm`` pixels and
    axial slices ``thickness_mm`` thick (each the average of the thin slices it covers)."""
    from scipy import ndimage

    from medanomaly.preprocess.resample import resample_to_spacing, to_canonical

    fine = max(0.5, thickness_mm / 13)
    thin = resample_to_spacing(to_canonical(volume).with_array(np.asarray(to_canonical(volume).array, np.float32)),
                               (in_plane_mm, in_plane_mm, fine), interpolator="linear", antialias=True)  # fmt: skip
    k = max(1, int(round(thickness_mm / fine)))
    arr = ndimage.uniform_filter1d(np.asarray(thin.array, np.float32), size=k, axis=0)[k // 2 :: k]
    origin = np.asarray(thin.origin) + thin.direction[:, 2] * (k // 2) * fine
    return Volume(arr, (in_plane_mm, in_plane_mm, k * fine), tuple(origin), thin.direction, meta=dict(volume.meta))


def _rank_in(arr: np.ndarray, region: np.ndarray) -> np.ndarray:
    from medanomaly.anomaly.data import _scale

    return _scale(arr, region) if region.any() else np.zeros_like(arr, np.float32)


def _shifted(reference: Volume, dz_mm: float) -> Volume:
    """``reference``'s grid moved ``dz_mm`` along its slice axis (for slab averaging)."""
    origin = np.asarray(reference.origin) + reference.direction[:, 2] * dz_mm
    return Volume(np.zeros(reference.shape, np.float32), reference.spacing, tuple(origin), reference.direction)


def _slab_resample(reference: Volume, moving: Volume, transform: Any, samples: int) -> np.ndarray:
    """``moving`` resampled onto ``reference`` through ``transform``, averaged over its slice thickness."""
    from medanomaly.preprocess.registration import resample_to

    dz = reference.spacing[2]
    offsets = [((i + 0.5) / samples - 0.5) * dz for i in range(samples)]
    out = [np.asarray(resample_to(_shifted(reference, o), moving, transform).array, np.float32) for o in offsets]
    return np.mean(out, axis=0)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))


def _fill_nearest(values: np.ndarray, covered: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Each uncovered voxel takes the value of the nearest covered one (distances in mm)."""
    from scipy import ndimage

    if covered.all() or not covered.any():
        return values
    idx = ndimage.distance_transform_edt(~covered, sampling=spacing[::-1], return_distances=False, return_indices=True)
    return values[tuple(idx)]


def signed_distance_mm(support: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Signed distance to the edge of ``support`` in mm (positive inside, negative outside); the
    array border is not an edge (a brain cut by the field of view stays inside)."""
    from scipy import ndimage

    if not support.any():
        return np.full(support.shape, -1e6, np.float32)
    if support.all():
        return np.full(support.shape, 1e6, np.float32)
    sampling = spacing[::-1]
    inside = ndimage.distance_transform_edt(support, sampling=sampling)
    outside = ndimage.distance_transform_edt(~support, sampling=sampling)
    return (inside - outside).astype(np.float32)


def support_weight(distance_mm: np.ndarray, edge_mm: float, ramp_mm: float) -> np.ndarray:
    """Weight of the anomaly map by the signed distance to the atlas brain support (mm, positive
    inside): 0 up to ``edge_mm`` (negative = a margin outside the support, positive = an erosion),
    rising linearly to 1 at ``edge_mm + ramp_mm`` (a hard cut when ``ramp_mm`` is 0)."""
    if ramp_mm <= 0:
        return (distance_mm >= edge_mm).astype(np.float32)
    return np.clip((distance_mm - edge_mm) / ramp_mm, 0.0, 1.0).astype(np.float32)


def local_offset(residual: np.ndarray, brain: np.ndarray, spacing: tuple[float, ...], local_mm: float) -> np.ndarray:
    """The local mean of ``residual`` over ``brain`` (Gaussian weights of SD ``local_mm`` mm; a
    normalised convolution, so the brain's edge and the field of view do not pull it to 0); 0
    outside the brain and when ``local_mm`` is 0."""
    from scipy import ndimage

    if local_mm <= 0 or not brain.any():
        return np.zeros(residual.shape, np.float32)
    sigma = [local_mm / s for s in spacing[::-1]]
    weight = brain.astype(np.float32)
    num = ndimage.gaussian_filter(np.where(brain, residual, 0.0).astype(np.float32), sigma)
    den = ndimage.gaussian_filter(weight, sigma)
    return np.where(brain, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)


def median_spread(values: np.ndarray) -> tuple[float, float]:
    """(median, robust spread = 1.4826 x median absolute deviation) of non-empty ``values``: the
    location and the normal-equivalent SD that a small lesion among them barely moves."""
    median = float(np.median(values))
    return median, 1.4826 * float(np.median(np.abs(values - median)))


def robust_scaled(amap: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``amap`` in units of its own robust spread over ``region``: ``(m - median) / (1.4826 MAD)`` of the
    map values in the region (a robust z, unitless), 0 outside. A lesion covering a few % of the
    region barely moves the median and MAD, while a scan-wide change of the map's scale (noise,
    contrast, how well the atlas fits this person) is divided out; a flat map gives 0."""
    values = amap[region]
    if not values.size:
        return np.zeros(amap.shape, np.float32)
    median, spread = median_spread(values)
    return np.where(region, (amap - median) / max(spread, 1e-6), 0.0).astype(np.float32)


def conditional_expectation(ranks: np.ndarray, atlas: np.ndarray, brain: np.ndarray,
                            bins: int = 32) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The test's expected rank given the atlas value, and its spread, learned from the test brain itself.

    The brain voxels are put in ``bins`` quantile bins of the atlas value; per bin the median and the
    robust spread (1.4826 x median absolute deviation) of the test's ranks are taken, then linearly
    interpolated in the atlas value. This maps any contrast of the test (a T1 after contrast with
    little grey/white difference, another sequence) onto the atlas without labels; a lesion, a small
    fraction of each bin, barely moves the medians. Returns (expected, spread) arrays like ``ranks``.
    """
    a, x = atlas[brain], ranks[brain]
    edges = np.unique(np.quantile(a, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, a, side="right") - 1, 0, len(edges) - 2)
    centres, med, mad = [], [], []
    for b in range(len(edges) - 1):
        sel = which == b
        if sel.sum() >= 20:
            centres.append(float(np.median(a[sel])))
            m, spread = median_spread(x[sel])
            med.append(m)
            mad.append(spread)
    if len(centres) < 2:
        return atlas.astype(np.float32), np.zeros_like(atlas, np.float32)
    expected = np.interp(atlas, centres, med).astype(np.float32)
    return expected, np.interp(atlas, centres, mad).astype(np.float32)


def _values(state: dict[str, np.ndarray], key: str, n: int) -> np.ndarray:
    """The ``n`` numbers a saved atlas keeps under ``key`` (float64); ValueError for another count."""
    values = np.asarray(state[key], np.float64).ravel()
    if values.size != n:
        raise ValueError(f"atlas {key!r} holds {values.size} values, not {n}")
    return values


def _index(state: dict[str, np.ndarray], key: str, options: tuple[str, ...]) -> int:
    """The saved index ``key`` of one of ``options``; ValueError when it is not a whole number in range."""
    value = float(_values(state, key, 1)[0])
    if value != int(value) or not 0 <= value < len(options):
        raise ValueError(f"atlas {key!r} index {value:g} is not one of 0..{len(options) - 1} ({', '.join(options)})")
    return int(value)


@METHODS.register("atlas")
class AtlasMethod:
    """Registered voxel-wise atlas of the normal brains (see the module docstring).

    Args:
        spacing_mm: voxel size the normal brains are stored at, mm.
        fixed_mm: in-plane voxel size the test brain is registered at, mm.
        stages: registration stages (``rigid``, ``affine``, ``bspline``; rigid first).
        bspline_mesh: B-spline control-grid cells per axis (coarse: 4 = ~4 cm cells).
        iterations: optimiser iterations per resolution level.
        sampling: fraction of fixed voxels the metric samples.
        min_dice: brain-mask Dice below which a registration is dropped and flagged.
        floor: spread floor of the ``z`` map (rank units).
        match: ``conditional`` (the test's expected rank given the atlas mean, learned from the
            test brain: :func:`conditional_expectation`) or ``rank`` (the atlas mean's own ranks).
        kind: the map (``abs``, ``z``, ``bright``); chosen on synthetic lesions by ``fit_volumes``.
        kinds: the kinds validation chooses from.
        matches: the intensity matches validation chooses from (``mirror`` costs one more rigid
            registration per volume).
        support: ``None`` (off), or ``(edge_mm, ramp_mm)``: the map is weighted by the distance to
            the edge of the atlas brain support (the warped normal brains' own brain masks, a voxel
            is in the support when at least half of them cover it; :func:`support_weight`), so test
            voxels no normal brain covers (scalp, orbits, skull base inside a rough test mask) score
            0, and the conditional match is learned inside the support; chosen on synthetic lesions.
        supports: the ``(edge_mm, ramp_mm)`` candidates validation chooses from (besides off).
        demons_iterations: iterations of a deformable demons refinement after the linear stages
            (0 = none; :func:`medanomaly.preprocess.registration.demons_refine`).
        demons_smooth_mm: SD (mm) of the demons displacement-field smoothing.
        local_mm: SD (mm) of the local mean removed from the residual ``x - e`` (0 = off;
            :func:`local_offset`); chosen on synthetic lesions from ``locals_mm``.
        locals_mm: the ``local_mm`` candidates validation chooses from.
        val_leave_out: score a validation brain against the atlas without the training brain of
            the same person (:mod:`medanomaly.anomaly.atlas_validation`).
        val_lesions: the SYNTHETIC validation lesion model (``mixed`` or ``enhancing``).
        val_bias: strength of the smooth multiplicative intensity field put on the validation
            volumes (``exp(+-val_bias)`` at most over the brain; 0 = none).
        edge_heads: whole-head normal volumes (``ch2``) for an edge validation: the rough
            ``brain_mask`` of the head is the region (as for the test), the synthetic lesions are
            put in its skull-stripped twin's brain, and the training brain of the same name is left
            out of the atlas for it (see :func:`fit_volumes`).
        val_cross_outline: in the ``edge_heads``, the SYNTHETIC lesions (centred in the brain) are
            cut to the head's rough brain mask instead of its brain, so those near the edge cross
            the normal brain's outline, as a tumour can; the brain ``support`` cuts such lesions,
            so only then can the validation see what the support costs.
        map_scale: ``none`` or ``robust``: the final map of each volume is divided by its own robust
            spread over the brain after its median is taken off (:func:`robust_scaled`); the
            thresholds are then set on the scaled maps of the normal validation volumes. Not a
            label-free choice: a rule fixed in the config (it does not change a volume's ranking).
    """

    volumetric = True

    def __init__(self, spacing_mm: float = 2.0, fixed_mm: float = 2.0, stages: tuple[str, ...] = ("rigid", "affine"),
                 bspline_mesh: int = 4, iterations: int = 200, sampling: float = 0.25, min_dice: float = 0.6,
                 floor: float = 0.05, kind: str = "abs", kinds: tuple[str, ...] = MAP_KINDS, seed: int = 0,
                 match: str = "conditional", support: tuple[float, float] | None = None,
                 supports: tuple[tuple[float, float], ...] = DEFAULT_SUPPORTS, edge_heads: tuple[str, ...] = (),
                 local_mm: float = 0.0, locals_mm: tuple[float, ...] = (0.0,), val_leave_out: bool = False,
                 val_bias: float = 0.0, val_lesions: str = "mixed", demons_iterations: int = 0, demons_smooth_mm: float = 4.0,
                 map_scale: str = "none", val_cross_outline: bool = False,
                 matches: tuple[str, ...] = ("conditional", "rank")) -> None:  # fmt: skip
        if kind not in MAP_KINDS or any(k not in MAP_KINDS for k in kinds):
            raise ConfigError(f"atlas map kind must be one of {MAP_KINDS}, got {kind!r} / {list(kinds)}")
        if match not in MATCHES or not matches or any(m not in MATCHES for m in matches):
            raise ConfigError(f"atlas intensity match must be one of {MATCHES}, got {match!r} / {list(matches)}")
        self.match, self.matches = match, tuple(matches)
        self.support = None if support is None else (float(support[0]), float(support[1]))
        self.supports = tuple((float(e), float(r)) for e, r in supports)
        if any(r < 0 for _, r in self.supports) or (self.support is not None and self.support[1] < 0):
            raise ConfigError(f"atlas support ramp_mm must be >= 0, got {self.support} / {list(self.supports)}")
        self.edge_heads, self.val_cross_outline = tuple(edge_heads), bool(val_cross_outline)
        if self.val_cross_outline and not self.edge_heads:
            raise ConfigError("atlas val_cross_outline needs edge_heads (a whole head whose brain outline lesions can cross)")
        self.local_mm, self.locals_mm = float(local_mm), tuple(float(v) for v in locals_mm)
        if self.local_mm < 0 or any(v < 0 for v in self.locals_mm) or not self.locals_mm:
            raise ConfigError(f"atlas local_mm must be >= 0 mm, got {local_mm} / {list(locals_mm)}")
        self.val_leave_out, self.val_bias, self.val_lesions = bool(val_leave_out), float(val_bias), str(val_lesions)
        if self.val_lesions not in LESION_MODELS:
            raise ConfigError(f"atlas val_lesions must be one of {LESION_MODELS}, got {val_lesions!r}")
        self.demons_iterations, self.demons_smooth_mm = int(demons_iterations), float(demons_smooth_mm)
        if map_scale not in MAP_SCALES:
            raise ConfigError(f"atlas map_scale must be one of {MAP_SCALES}, got {map_scale!r}")
        self.map_scale = str(map_scale)
        heads = sorted({*SKULL_STRIPPED, *BRAIN_LABELS})
        if any(h not in heads for h in self.edge_heads):
            raise ConfigError(f"atlas edge_heads must be whole heads with a known brain {heads}, got {list(edge_heads)}")
        self.spacing_mm, self.fixed_mm, self.stages = float(spacing_mm), float(fixed_mm), tuple(stages)
        self.bspline_mesh, self.iterations, self.sampling = int(bspline_mesh), int(iterations), float(sampling)
        self.min_dice, self.floor, self.kind, self.kinds, self.seed = float(min_dice), float(floor), kind, tuple(kinds), int(seed)
        self.brains_: list[tuple[Volume, np.ndarray]] = []
        self.names_: tuple[str, ...] = ()
        self._last = threading.local()  # the last predict_volume of each thread (a model may serve several)

    @property
    def last_flags(self) -> tuple[str, ...]:
        """The flags of this thread's last :meth:`predict_volume` (a failed registration), () before one."""
        return getattr(self._last, "flags", ())

    @property
    def last_log(self) -> dict[str, Any]:
        """What this thread's last :meth:`predict_volume` logged (mask Dice per brain, kept, CPU s), {} before one."""
        return getattr(self._last, "log", {})

    # ------------------------------------------------------------------ train / state
    def fit_brains(self, names: tuple[str, ...]) -> dict[str, Any]:
        """Store the normal training brains, skull-stripped (see :func:`atlas_brain`)."""
        from medanomaly.anomaly.data import load_brain_only

        self.brains_ = [atlas_brain(load_brain_only(n), self.spacing_mm) for n in names]
        self.names_ = tuple(names)
        return {"atlas_brains": list(names), "atlas_voxels": [int(m.sum()) for _, m in self.brains_]}

    def state(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"kind": np.asarray([MAP_KINDS.index(self.kind)], np.int64),
                                      "match": np.asarray([MATCHES.index(self.match)], np.int64),
                                      "support": np.asarray([0.0, 0.0, 0.0] if self.support is None
                                                            else [1.0, *self.support], np.float64),
                                      "local_mm": np.asarray([self.local_mm], np.float64)}  # fmt: skip
        for k, (vol, brain) in enumerate(self.brains_):
            out[f"brain{k}.ranks"] = np.asarray(vol.array, np.float32)
            out[f"brain{k}.mask"] = brain.astype(np.uint8)
            out[f"brain{k}.geometry"] = np.concatenate([vol.spacing, vol.origin, np.ravel(vol.direction)]).astype(np.float64)
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """The atlas a run saved; ValueError (one line naming the weights, through the task's loader) for arrays no
        training writes: a map kind or match index out of range (an IndexError), a support or geometry of another
        length, a spacing <= 0, a brain mask of another shape than its ranks, no brain at all."""
        self.kind, self.match = MAP_KINDS[_index(state, "kind", MAP_KINDS)], MATCHES[_index(state, "match", MATCHES)]
        flag, edge, ramp = _values(state, "support", 3) if "support" in state else (0.0, 0.0, 0.0)
        if ramp < 0:
            raise ValueError(f"atlas support ramp {ramp} mm is negative")
        self.support = (float(edge), float(ramp)) if flag else None
        self.local_mm = float(_values(state, "local_mm", 1)[0]) if "local_mm" in state else 0.0
        if self.local_mm < 0:
            raise ValueError(f"atlas local_mm {self.local_mm} is negative")
        self.brains_ = []
        for k in range(sum(1 for key in state if key.endswith(".ranks"))):
            g = _values(state, f"brain{k}.geometry", 15)
            ranks, mask = np.asarray(state[f"brain{k}.ranks"], np.float32), np.asarray(state[f"brain{k}.mask"]) > 0
            if ranks.ndim != 3 or mask.shape != ranks.shape or min(g[:3]) <= 0:
                raise ValueError(f"atlas brain {k}: ranks {ranks.shape}, mask {mask.shape}, spacing {list(g[:3])} "
                                 "(3D arrays of one shape and a positive spacing)")  # fmt: skip
            self.brains_.append((Volume(ranks, tuple(g[:3]), tuple(g[3:6]), g[6:].reshape(3, 3)), mask))
        if not self.brains_:
            raise ValueError("the atlas holds no normal brain")

    def network(self) -> Any:
        return None

    def score(self, images: np.ndarray, masks: np.ndarray, rel_z: np.ndarray) -> np.ndarray:
        raise InputError("the atlas method maps whole volumes (predict_volume), not common-grid slices")

    # ------------------------------------------------------------------ predict
    def _register(self, fixed: Volume, brain: Volume, k: int) -> Any:
        from medanomaly.preprocess.registration import demons_refine, register

        result = register(fixed, brain, stages=self.stages, metric="mattes", sampling=self.sampling,
                          iterations=self.iterations, bspline_mesh=self.bspline_mesh, seed=self.seed + k,
                          init="moments")  # fmt: skip
        return demons_refine(fixed, brain, result.transform, self.demons_iterations, self.demons_smooth_mm)

    def _warp_all(self, fixed: Volume, fine: Volume, samples: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each normal brain registered to ``fixed`` and its (brain mask, ranks) resampled onto ``fine``'s grid, in
        the atlas's order. The registrations run side by side, one per usable CPU: each runs on one ITK thread
        (reproducible, :data:`~medanomaly.preprocess.registration.REGISTRATION_THREADS`) with its own seed, so the
        result is the one they give one after the other."""
        from concurrent.futures import ThreadPoolExecutor

        def warp(k: int) -> tuple[np.ndarray, np.ndarray]:
            atlas, mask = self.brains_[k]
            transform = self._register(fixed, atlas, k)
            w_mask = _slab_resample(fine, atlas.with_array(mask.astype(np.float32)), transform, samples) > 0.5
            return w_mask, _slab_resample(fine, atlas, transform, samples)

        workers = min(len(self.brains_), usable_cpus())
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="atlas-registration") as pool:
            return list(pool.map(warp, range(len(self.brains_))))

    def components(self, volume: Volume, brain: np.ndarray | None = None,
                   matches: tuple[str, ...] | None = None) -> dict[str, Any]:  # fmt: skip
        """Test ranks, test brain (``brain``, default :func:`medanomaly.anomaly.data._brain`), the
        registered normal brains' voxel-wise mean and spread on ``volume``'s grid, and the signed
        distance (mm) to the edge of their brain support; registrations failing the mask-Dice
        check are dropped and flagged. The test's mirror expectation is made only when ``matches``
        (default: the method's chosen match) holds ``mirror``: the validation passes every candidate."""
        from medanomaly.anomaly.data import _brain
        from medanomaly.preprocess.resample import resample_to_spacing

        if not self.brains_:
            raise InputError("the atlas method has no normal brains (train it first)")
        start = time.process_time()
        brain = _brain(volume) if brain is None else np.asarray(brain, bool)
        if brain.sum() < 100:
            raise InputError("no brain found in the image (fewer than 100 brain voxels)")
        ranks = _rank_in(np.asarray(volume.array, np.float32), brain)
        fine = volume.with_array(ranks)
        fixed = resample_to_spacing(fine, (self.fixed_mm, self.fixed_mm, volume.spacing[2]), interpolator="linear",
                                    antialias=True) if min(volume.spacing[:2]) < self.fixed_mm else fine  # fmt: skip
        samples = max(1, int(np.ceil(volume.spacing[2] / self.spacing_mm)))
        warped, dices, masks = [], [], []
        for w_mask, w_ranks in self._warp_all(fixed, fine, samples):
            dices.append(_dice(w_mask, brain))
            masks.append(w_mask)
            warped.append((_rank_in(w_ranks, w_mask & brain), w_mask & brain))
        keep = [k for k, d in enumerate(dices) if d >= self.min_dice] or [int(np.argmax(dices))]
        flags = tuple(f"atlas_registration_failed:{k}" for k, d in enumerate(dices) if d < self.min_dice)
        count = np.sum([warped[k][1] for k in keep], axis=0).astype(np.float32)
        total = np.sum([warped[k][0] for k in keep], axis=0)
        squares = np.sum([warped[k][0] ** 2 for k in keep], axis=0)
        covered = count > 0
        mean = np.where(covered, total / np.maximum(count, 1), 0.0).astype(np.float32)
        spread = np.sqrt(np.maximum(np.where(count >= 2, squares / np.maximum(count, 1) - mean**2, 0.0), 0.0))
        mean, spread = (_fill_nearest(a, covered, volume.spacing) for a in (mean, spread.astype(np.float32)))
        support = np.mean([masks[k] for k in keep], axis=0) >= 0.5
        inside = brain & support
        log = {"mask_dice": [round(d, 4) for d in dices], "kept": keep, "cpu_s": round(time.process_time() - start, 1),
               "covered_fraction": round(float(covered[brain].mean()), 4),
               "support_fraction": round(float(inside.sum() / brain.sum()), 4)}  # fmt: skip
        parts = {"ranks": ranks, "brain": brain, "rank": (mean, spread), "flags": flags, "log": log,
                 "support_mm": signed_distance_mm(support, volume.spacing)}  # fmt: skip
        parts["conditional"] = conditional_expectation(ranks, mean, brain)
        if "mirror" in (matches if matches is not None else (self.match,)):  # its registration only where used
            from medanomaly.anomaly.mirror import mirror_expectation

            expected, mirror_log = mirror_expectation(fine, brain, parts["conditional"][0], seed=self.seed)
            parts["mirror"] = (expected, parts["conditional"][1])  # the spread: the test's own, per atlas level
            log.update(mirror_log)
        parts["conditional_in_support"] = (conditional_expectation(ranks, mean, inside) if inside.sum() >= 1000
                                           else parts["conditional"])  # fmt: skip
        return parts

    def map_from(self, parts: dict[str, Any], kind: str, sigma_mm: float, spacing: tuple[float, ...],
                 match: str | None = None, support: Any = "method", local_mm: float | None = None) -> np.ndarray:  # fmt: skip
        """The anomaly map of ``kind`` with the intensity ``match`` (default: the method's), the local
        residual offset removed at ``local_mm`` (default: the method's; :func:`local_offset`), weighted
        by the atlas brain ``support`` (``None`` = off, ``(edge_mm, ramp_mm)``, default: the method's;
        :func:`support_weight`), smoothed by ``sigma_mm`` (0 outside the test brain)."""
        from scipy import ndimage

        support = self.support if isinstance(support, str) else support
        match = match or self.match
        local_mm = self.local_mm if local_mm is None else float(local_mm)
        which = "conditional_in_support" if support is not None and match == "conditional" else match
        expected, spread = parts[which]
        cache = parts.setdefault("residual_cache", {})  # the validation asks for many kinds and sigmas
        if (which, local_mm) not in cache:
            diff = parts["ranks"] - expected
            cache[(which, local_mm)] = diff - local_offset(diff, parts["brain"], spacing, local_mm)
        diff = cache[(which, local_mm)]
        if kind == "abs":
            out = np.abs(diff)
        elif kind == "bright":
            out = np.maximum(diff, 0.0)
        elif kind == "robust":
            inside = diff[parts["brain"]]
            spread = median_spread(inside)[1] if inside.size else 0.0
            out = np.abs(diff) / max(spread, 1e-6)
        else:
            out = np.abs(diff) / np.sqrt(spread**2 + self.floor**2)
        out = out * parts["brain"]
        if support is not None:
            out = out * support_weight(parts["support_mm"], *support)
        if sigma_mm > 0:
            out = ndimage.gaussian_filter(out.astype(np.float32), [sigma_mm / s for s in spacing[::-1]])
        return (out * parts["brain"]).astype(np.float32)

    def final_map(self, parts: dict[str, Any], sigma_mm: float, spacing: tuple[float, ...]) -> np.ndarray:
        """The method's own map (:meth:`map_from` with its kind, match, support, local mm), scaled per
        volume when ``map_scale`` is ``robust`` (:func:`robust_scaled` over the volume's brain)."""
        amap = self.map_from(parts, self.kind, sigma_mm, spacing)
        return robust_scaled(amap, parts["brain"]) if self.map_scale == "robust" else amap

    def predict_volume(self, volume: Volume, sigma_mm: float) -> tuple[Volume, float]:
        """(map on ``volume``'s grid, image score = 99.9th percentile of the map in the brain)."""
        from medanomaly.anomaly.pipeline import volume_score

        parts = self.components(volume)
        none_passed = len(parts["flags"]) == len(self.brains_)  # the map then rests on a misaligned brain
        self._last.flags = parts["flags"] + ((f"{QUALITY_FAILED}:no_atlas_registration_passed",) if none_passed else ())
        self._last.log = parts["log"]
        amap = self.final_map(parts, sigma_mm, volume.spacing)
        score = volume_score(amap, parts["brain"])
        return volume.with_array(amap, units="anomaly score"), score
