"""The LUNA16 challenge evaluation: FROC, sensitivities at 1/8 ... 8 FP/scan, CPM, bootstrap CIs.

Follows the challenge's published evaluation (Setio et al., Med Image Anal 2017; the
``noduleCADEvaluationLUNA16`` script), re-implemented here:

* **Hit rule**: a CAD mark hits a reference nodule when its distance to the nodule's centre is
  below the nodule's radius (``diameter_mm / 2``, strict). A nodule hit by several marks counts
  once, with the highest probability among them; the other marks on it are ignored (neither true
  nor false positives). A mark may hit two nodules (both count). A mark on an *excluded* finding
  (``annotations_excluded.csv``; a negative diameter means 10 mm) that hits no reference nodule is
  ignored. Every other mark is a false positive. Per scan, only the ``max_marks`` (100) most
  probable marks are kept.
* **FROC**: as the probability threshold falls, sensitivity = nodules hit / all reference nodules
  (missed nodules included), FP per scan = false positives / scans evaluated (scans without marks
  count). Sensitivity at an FP rate is **linearly interpolated** on that curve (``np.interp``, as
  the challenge does); the **CPM** is the mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 FP/scan.
  (:mod:`medanomaly.evaluate.froc` reads the curve as a step function instead, and uses a
  5 mm minimum hit radius: its numbers are ours, these are LUNA16's.)
* **Bootstrap**: scans are resampled with replacement ``n_bootstrap`` times; the CI of each
  sensitivity and of the CPM are the percentiles of the resampled values.

Example:
    >>> nodules = {"s1": [((0.0, 0.0, 0.0), 10.0)]}
    >>> marks = {"s1": [((1.0, 0.0, 0.0), 0.9), ((30.0, 0.0, 0.0), 0.5)]}
    >>> res = evaluate_cad(nodules, marks, scans=["s1", "s2"], n_bootstrap=0)
    >>> res.sensitivity[1.0], res.n_false_positives, round(res.cpm, 3)
    (1.0, 1, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.data.luna16 import csv_numbers, csv_rows
from medanomaly.errors import InputError
from medanomaly.evaluate.froc import percentile_interval, scan_resamples, size_band_row, size_bands

FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
MAX_MARKS = 100
EXCLUDED_DEFAULT_DIAMETER_MM = 10.0
RESULT_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "probability")

#: A reference nodule: ((x, y, z) mm, diameter mm); a CAD mark: ((x, y, z) mm, probability).
Nodule = tuple[Sequence[float], float]
Mark = tuple[Sequence[float], float]

__all__ = ["FP_RATES", "Luna16Result", "ScanOutcome", "evaluate_cad", "froc_curve", "match_scan", "read_results",
           "sensitivities", "sensitivity_by_size"]


@dataclass(frozen=True)
class ScanOutcome:
    """What one scan contributes: the best probability per reference nodule (None = missed),
    the false-positive probabilities, and how many marks were ignored (duplicates, excluded)."""

    nodule_probs: tuple[float | None, ...]
    fp_probs: tuple[float, ...]
    n_ignored: int = 0


@dataclass(frozen=True)
class Luna16Result:
    """The evaluation of one CAD system on a set of scans.

    Attributes:
        fps_per_scan / sens / thresholds: the FROC curve (fps ascending; thresholds descending).
        sensitivity: {FP rate: sensitivity} at :data:`FP_RATES` (interpolated).
        cpm: mean of ``sensitivity``.
        sensitivity_ci / cpm_ci: bootstrap percentile intervals (empty / None without bootstrap).
        n_scans / n_nodules / n_detected / n_false_positives / n_ignored: counts at the lowest threshold.
        by_size: sensitivity at 1 FP/scan per nodule-diameter band (:func:`sensitivity_by_size`).
    """

    fps_per_scan: np.ndarray
    sens: np.ndarray
    thresholds: np.ndarray
    sensitivity: dict[float, float]
    cpm: float
    n_scans: int
    n_nodules: int
    n_detected: int
    n_false_positives: int
    n_ignored: int
    sensitivity_ci: dict[float, tuple[float, float]] = field(default_factory=dict)
    cpm_ci: tuple[float, float] | None = None
    confidence: float = 0.95
    n_bootstrap: int = 0
    by_size: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "cpm": self.cpm, "cpm_ci": list(self.cpm_ci) if self.cpm_ci else None,
            "sensitivity_at_fp_per_scan": {str(k): v for k, v in self.sensitivity.items()},
            "sensitivity_ci": {str(k): list(v) for k, v in self.sensitivity_ci.items()},
            "n_scans": self.n_scans, "n_nodules": self.n_nodules, "n_detected": self.n_detected,
            "n_false_positives": self.n_false_positives, "n_ignored": self.n_ignored,
            "confidence": self.confidence, "n_bootstrap": self.n_bootstrap, "sensitivity_by_size": self.by_size,
            "hit_rule": "distance < diameter/2; one hit per nodule; excluded findings ignored",
        }


# ----------------------------------------------------------------------------------- matching
def _as_points(items: Sequence[tuple[Sequence[float], float]]) -> tuple[np.ndarray, np.ndarray]:
    pts = np.array([list(c) for c, _ in items], dtype=float).reshape(-1, 3)
    vals = np.array([v for _, v in items], dtype=float)
    return pts, vals


def match_scan(nodules: Sequence[Nodule], marks: Sequence[Mark], excluded: Sequence[Nodule] = (),
               max_marks: int = MAX_MARKS) -> ScanOutcome:
    """Apply the hit rule (module docstring) to one scan."""
    if max_marks > 0 and len(marks) > max_marks:
        order = sorted(range(len(marks)), key=lambda i: -float(marks[i][1]))[:max_marks]
        marks = [marks[i] for i in sorted(order)]
    mark_pts, probs = _as_points(marks)
    matched = np.zeros(len(marks), bool)
    nodule_probs: list[float | None] = []
    for centre, diameter in nodules:
        hits = np.linalg.norm(mark_pts - np.asarray(centre, float), axis=1) < diameter / 2.0
        matched |= hits
        nodule_probs.append(float(probs[hits].max()) if hits.any() else None)
    ignored = matched.copy()
    for centre, diameter in excluded:
        d = diameter if diameter >= 0 else EXCLUDED_DEFAULT_DIAMETER_MM
        ignored |= np.linalg.norm(mark_pts - np.asarray(centre, float), axis=1) < d / 2.0
    n_hits = sum(p is not None for p in nodule_probs)
    return ScanOutcome(tuple(nodule_probs), tuple(float(p) for p in probs[~ignored]),
                       int(ignored.sum()) - int(min(n_hits, matched.sum())))


# ----------------------------------------------------------------------------------- FROC
def froc_curve(outcomes: Sequence[ScanOutcome]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FP per scan ascending, sensitivity, threshold descending) over scans; starts at (0, 0).

    Raises:
        ValueError: no scan or no reference nodule.
    """
    n_scans = len(outcomes)
    tp = np.array([p for o in outcomes for p in o.nodule_probs if p is not None], float)
    n_nodules = sum(len(o.nodule_probs) for o in outcomes)
    if n_scans == 0 or n_nodules == 0:
        raise ValueError("the FROC needs at least one scan and one reference nodule")
    fp = np.array([p for o in outcomes for p in o.fp_probs], float)
    thresholds = np.unique(np.r_[tp, fp])[::-1]
    tp_sorted, fp_sorted = np.sort(tp), np.sort(fp)
    n_tp = len(tp_sorted) - np.searchsorted(tp_sorted, thresholds, side="left")  # probability >= threshold
    n_fp = len(fp_sorted) - np.searchsorted(fp_sorted, thresholds, side="left")
    fps = np.r_[0.0, n_fp / n_scans]
    sens = np.r_[0.0, n_tp / n_nodules]
    return fps, sens, np.r_[np.inf, thresholds]


def sensitivities(fps: np.ndarray, sens: np.ndarray, rates: Sequence[float] = FP_RATES) -> dict[float, float]:
    """Sensitivity at each FP rate, linearly interpolated on the FROC curve (the challenge's rule).

    Example:
        >>> sensitivities(np.array([0.0, 1.0]), np.array([0.0, 1.0]), (0.5, 2.0))
        {0.5: 0.5, 2.0: 1.0}
    """
    return {float(r): float(np.interp(r, fps, sens)) for r in rates}


def sensitivity_by_size(outcomes: Sequence[ScanOutcome], diameters_mm: Sequence[Sequence[float]],
                        fp_rate: float = 1.0) -> list[dict[str, Any]]:  # fmt: skip
    """Per nodule-diameter band (:data:`medanomaly.evaluate.froc.SIZE_BANDS_MM`, mm): the band's nodules, how many
    any mark hits, and the sensitivity at ``fp_rate`` FP/scan on the band's own FROC, by the challenge's rules (every
    false positive counts, a mark on a nodule of another band is neither; linear interpolation). ``diameters_mm[i]``:
    the reference nodules of scan ``i``, in ``outcomes[i].nodule_probs`` order.

    Example:
        >>> o = ScanOutcome(nodule_probs=(0.9, None, 0.4), fp_probs=(0.5,))
        >>> [(b["band_mm"], b["n"], b["found"], b["sensitivity"]) for b in sensitivity_by_size([o], [[3.5, 3.8, 12.0]])]
        [([0.0, 4.0], 2, 1, 0.5), ([10.0, None], 1, 1, 1.0)]
    """
    rows = []
    for lo, hi, keep in size_bands(diameters_mm):
        sub = [ScanOutcome(tuple(p for p, k in zip(o.nodule_probs, ks, strict=True) if k), o.fp_probs, o.n_ignored)
               for o, ks in zip(outcomes, keep, strict=True)]  # fmt: skip
        fps, sens, _ = froc_curve(sub)
        found = sum(p is not None for o in sub for p in o.nodule_probs)
        rows.append(size_band_row(lo, hi, keep, found, sensitivities(fps, sens, (fp_rate,))[float(fp_rate)], fp_rate))
    return rows


def _summary(outcomes: Sequence[ScanOutcome], rates: Sequence[float]) -> tuple[dict[float, float], float]:
    fps, sens, _ = froc_curve(outcomes)
    at = sensitivities(fps, sens, rates)
    return at, float(np.mean(list(at.values())))


def _bootstrap(outcomes: Sequence[ScanOutcome], rates: Sequence[float], n: int, seed: int,
               confidence: float) -> tuple[dict[float, tuple[float, float]], tuple[float, float]]:
    rows, cpms = [], []
    for sample in scan_resamples(outcomes, lambda o: len(o.nodule_probs) > 0, n, seed):
        at, cpm = _summary(sample, rates)
        rows.append([at[float(r)] for r in rates])
        cpms.append(cpm)
    arr = np.array(rows)
    ci = {float(r): percentile_interval(arr[:, k], confidence) for k, r in enumerate(rates)}
    return ci, percentile_interval(cpms, confidence)


def evaluate_cad(nodules: Mapping[str, Sequence[Any]], marks: Mapping[str, Sequence[Mark]], scans: Sequence[str],
                 excluded: Mapping[str, Sequence[Any]] | None = None, max_marks: int = MAX_MARKS,
                 n_bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95,
                 rates: Sequence[float] = FP_RATES) -> Luna16Result:
    """Evaluate CAD marks against reference nodules on ``scans`` (the LUNA16 rules, module docstring).

    Args:
        nodules: series UID -> reference nodules, each ``((x, y, z), diameter_mm)`` or an object with
            ``center_mm`` and ``diameter_mm`` (:class:`medanomaly.data.luna16.Luna16Nodule`).
        marks: series UID -> CAD marks ``((x, y, z), probability)``; UIDs outside ``scans`` are ignored.
        scans: the series evaluated (the FP-per-scan denominator).
        excluded: series UID -> findings whose marks are ignored (``annotations_excluded.csv``).
        max_marks: marks kept per scan, most probable first (0 = all).
        n_bootstrap: bootstrap resamples of the scans (0 = no CI).

    Raises:
        InputError: no scan, or no reference nodule in the scans.
    """
    if not scans:
        raise InputError("no scan to evaluate")
    as_pairs = lambda items: [_pair(n) for n in items]  # noqa: E731
    reference = [as_pairs(nodules.get(uid, [])) for uid in scans]
    outcomes = [match_scan(ref, list(marks.get(uid, [])), as_pairs((excluded or {}).get(uid, [])), max_marks)
                for uid, ref in zip(scans, reference, strict=True)]  # fmt: skip
    n_nodules = sum(len(o.nodule_probs) for o in outcomes)
    if n_nodules == 0:
        raise InputError(f"none of the {len(scans)} scans has a reference nodule; the FROC is undefined")
    fps, sens, thr = froc_curve(outcomes)
    at = sensitivities(fps, sens, rates)
    ci, cpm_ci = _bootstrap(outcomes, rates, n_bootstrap, seed, confidence) if n_bootstrap > 0 else ({}, None)
    diameters = [[d for _, d in ref] for ref in reference]
    return Luna16Result(fps, sens, thr, at, float(np.mean(list(at.values()))), len(scans), n_nodules,
                        sum(p is not None for o in outcomes for p in o.nodule_probs),
                        sum(len(o.fp_probs) for o in outcomes), sum(o.n_ignored for o in outcomes),
                        ci, cpm_ci, confidence, n_bootstrap, sensitivity_by_size(outcomes, diameters))


def _pair(item: Any) -> Nodule:
    if hasattr(item, "center_mm"):
        return tuple(item.center_mm), float(item.diameter_mm)
    centre, diameter = item
    return tuple(centre), float(diameter)


def read_results(path: str | Path) -> dict[str, list[Mark]]:
    """A LUNA16 submission CSV (``seriesuid,coordX,coordY,coordZ,probability``) -> marks per series.

    Raises:
        InputError: missing file or column, or a value that is not a finite number (the message gives the line).
    """
    path = Path(path)
    out: dict[str, list[Mark]] = {}
    for line, row in csv_rows(path, RESULT_COLUMNS, "LUNA16 result CSV"):
        x, y, z, p = csv_numbers(row, RESULT_COLUMNS[1:], path, line)
        out.setdefault(row["seriesuid"].strip(), []).append(((x, y, z), p))
    return out
