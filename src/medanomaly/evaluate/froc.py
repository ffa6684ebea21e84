"""FROC analysis and the CPM score for lesion detection (LUNA16-style).

A finding is a **hit** of a lesion when its centre lies within ``max(lesion radius, min_radius)``
of the lesion centre (mm); each lesion counts once (its best-scoring hit), further hits of the same
lesion are neither true nor false positives. Findings inside an *ignore* region (e.g. a real,
unlabelled lesion in a simulated scan) are dropped. Everything else is a false positive.

The FROC curve is sensitivity versus mean false positives per scan as the score threshold falls.
Sensitivity at a given FP rate is read as a step function: the best sensitivity among thresholds
whose FP rate does not exceed it. The **CPM** (competition performance metric) is the mean
sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 FP per scan.

Example:
    >>> marks = [ScanMarks(scores=[0.9, 0.4], lesion_ids=[0, -1], n_lesions=1),
    ...          ScanMarks(scores=[0.8], lesion_ids=[-1], n_lesions=1)]
    >>> res = froc(marks)
    >>> res.n_scans, res.n_lesions, res.sensitivity_at(1.0)
    (2, 2, 0.5)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

#: FP-per-scan rates of the FROC operating points and the CPM.
FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

#: Nodule diameter bands (mm, lower bound included) of :func:`sensitivity_by_size`: LIDC-IDRI's smallest nodules
#: (3 mm) up to 4 mm, then the Fleischner 2017 size steps (6 mm, 100 mm3) and 10 mm.
SIZE_BANDS_MM: tuple[tuple[float, float], ...] = ((0.0, 4.0), (4.0, 6.0), (6.0, 10.0), (10.0, float("inf")))

__all__ = ["FP_RATES", "SIZE_BANDS_MM", "FrocResult", "ScanMarks", "cpm_interval", "froc", "lesion_subset",
           "match_findings", "percentile_interval", "scan_resamples", "sensitivity_by_size", "size_band_row",
           "size_bands"]

Scan = TypeVar("Scan")


@dataclass(frozen=True)
class ScanMarks:
    """Scored marks of one scan: ``lesion_ids[i]`` is the lesion mark ``i`` hits, or -1 (FP).

    A lesion hit by several marks should appear once (:func:`match_findings` does this); extra
    hits are dropped by :func:`froc` anyway.
    """

    scores: Sequence[float]
    lesion_ids: Sequence[int]
    n_lesions: int
    finding_index: Sequence[int] = ()  # which input findings these marks are (after ignoring)


@dataclass(frozen=True)
class FrocResult:
    """A FROC curve and its summary.

    Attributes:
        fps_per_scan: mean false positives per scan at each threshold (ascending).
        sensitivity: lesion sensitivity at each threshold.
        thresholds: the score thresholds (descending).
        operating_points: {FP rate: sensitivity} at :data:`FP_RATES`.
        cpm: mean of the operating-point sensitivities.
        n_scans / n_lesions: how many scans and lesions the curve is computed on.
    """

    fps_per_scan: np.ndarray
    sensitivity: np.ndarray
    thresholds: np.ndarray
    operating_points: dict[float, float] = field(default_factory=dict)
    cpm: float = 0.0
    n_scans: int = 0
    n_lesions: int = 0

    def sensitivity_at(self, fp_rate: float) -> float:
        """Best sensitivity with at most ``fp_rate`` false positives per scan."""
        ok = self.fps_per_scan <= fp_rate + 1e-12
        return float(self.sensitivity[ok].max()) if ok.any() else 0.0

    def threshold_at(self, fp_rate: float) -> float:
        """Lowest score threshold with at most ``fp_rate`` false positives per scan (inf if none)."""
        ok = self.fps_per_scan <= fp_rate + 1e-12
        return float(self.thresholds[ok].min()) if ok.any() else float("inf")

    def to_json(self) -> dict[str, object]:
        return {
            "cpm": self.cpm,
            "sensitivity_at_fp_per_scan": {str(k): v for k, v in self.operating_points.items()},
            "n_scans": self.n_scans,
            "n_lesions": self.n_lesions,
        }


def froc(marks: Sequence[ScanMarks], fp_rates: Sequence[float] = FP_RATES) -> FrocResult:
    """FROC curve and CPM over scans (see the module docstring for the conventions).

    Raises:
        ValueError: no scans, or no lesions at all.
    """
    n_scans = len(marks)
    n_lesions = int(sum(m.n_lesions for m in marks))
    if n_scans == 0 or n_lesions == 0:
        raise ValueError("FROC needs at least one scan and one lesion")
    rows: list[tuple[float, int, int]] = []  # (score, is_tp, global lesion key)
    offset = 0
    for m in marks:
        if len(m.scores) != len(m.lesion_ids):
            raise ValueError("scores and lesion_ids must have the same length")
        seen: set[int] = set()
        for s, lid in sorted(zip(m.scores, m.lesion_ids, strict=True), key=lambda t: -t[0]):
            if lid >= 0:
                if lid in seen:
                    continue
                seen.add(lid)
                rows.append((float(s), 1, offset + int(lid)))
            else:
                rows.append((float(s), 0, -1))
        offset += m.n_lesions
    if not rows:
        return FrocResult(np.zeros(1), np.zeros(1), np.array([np.inf]), {f: 0.0 for f in fp_rates}, 0.0, n_scans, n_lesions)
    rows.sort(key=lambda r: -r[0])
    scores = np.array([r[0] for r in rows])
    tp = np.cumsum([r[1] for r in rows])
    fp = np.cumsum([1 - r[1] for r in rows])
    # One point per distinct threshold: the last row with that score.
    last = np.r_[scores[1:] != scores[:-1], True]
    fps = np.r_[0.0, fp[last] / n_scans]
    sens = np.r_[0.0, tp[last] / n_lesions]
    thr = np.r_[np.inf, scores[last]]
    result = FrocResult(fps, sens, thr, n_scans=n_scans, n_lesions=n_lesions)
    points = {float(f): result.sensitivity_at(f) for f in fp_rates}
    return FrocResult(fps, sens, thr, points, float(np.mean(list(points.values()))), n_scans, n_lesions)


def match_findings(
    centres_mm: np.ndarray,
    scores: Sequence[float],
    lesion_centres_mm: np.ndarray,
    lesion_radii_mm: Sequence[float],
    min_radius_mm: float = 5.0,
    ignore: Callable[[np.ndarray], bool] | None = None,
) -> ScanMarks:
    """Match one scan's findings to its lesions by centre distance.

    Args:
        centres_mm: (N, 3) finding centres, LPS mm.
        scores: N finding scores.
        lesion_centres_mm: (M, 3) lesion centres, LPS mm.
        lesion_radii_mm: M lesion radii, mm.
        min_radius_mm: hit radius floor (small nodules on thick slices), mm.
        ignore: predicate on a finding centre; True drops the finding (neither TP nor FP).

    Returns:
        The scan's :class:`ScanMarks` (each finding hits its nearest lesion within reach).
    """
    centres = np.asarray(centres_mm, float).reshape(-1, 3)
    lesions = np.asarray(lesion_centres_mm, float).reshape(-1, 3)
    radii = np.maximum(np.asarray(lesion_radii_mm, float), min_radius_mm)
    kept_scores: list[float] = []
    ids: list[int] = []
    index: list[int] = []
    for i, (c, s) in enumerate(zip(centres, scores, strict=True)):
        lid = -1
        if len(lesions):
            d = np.linalg.norm(lesions - c, axis=1)
            inside = np.flatnonzero(d <= radii)
            if inside.size:
                lid = int(inside[np.argmin(d[inside])])
        if lid < 0 and ignore is not None and ignore(c):
            continue
        kept_scores.append(float(s))
        ids.append(lid)
        index.append(i)
    return ScanMarks(scores=kept_scores, lesion_ids=ids, n_lesions=len(lesions), finding_index=index)


def lesion_subset(marks: Sequence[ScanMarks], keep: Sequence[Sequence[bool]]) -> list[ScanMarks]:
    """The marks scored on a subset of the lesions (e.g. nodules of 6 mm or more): lesion ``j`` of scan
    ``i`` stays when ``keep[i][j]``; a mark on a lesion left out is ignored (neither true nor false
    positive, as LUNA16 treats ``annotations_excluded.csv``); the kept lesions are renumbered.

    Example:
        >>> m = ScanMarks(scores=[0.9, 0.5, 0.3], lesion_ids=[1, 0, -1], n_lesions=2)
        >>> sub = lesion_subset([m], [[False, True]])[0]
        >>> list(sub.scores), list(sub.lesion_ids), sub.n_lesions
        ([0.9, 0.3], [0, -1], 1)
    """
    out = []
    for m, flags in zip(marks, keep, strict=True):
        if len(flags) != m.n_lesions:
            raise ValueError(f"keep has {len(flags)} flags for a scan of {m.n_lesions} lesions")
        new_id = np.cumsum(flags) - 1
        rows = [(s, -1 if lid < 0 else int(new_id[lid]), i)
                for s, lid, i in zip(m.scores, m.lesion_ids, m.finding_index or range(len(m.scores)), strict=True)
                if lid < 0 or flags[lid]]  # fmt: skip
        out.append(ScanMarks([r[0] for r in rows], [r[1] for r in rows], int(np.sum(flags)), [r[2] for r in rows]))
    return out


def size_bands(diameters_mm: Sequence[Sequence[float]], bands: Sequence[tuple[float, float]] = SIZE_BANDS_MM,
               ) -> list[tuple[float, float, list[list[bool]]]]:  # fmt: skip
    """The diameter bands (mm) holding at least one lesion, each with its membership ``keep[i][j]`` (lesion ``j`` of
    scan ``i`` is in the band, ``diameters_mm[i][j]``).

    Example:
        >>> [(lo, hi, keep) for lo, hi, keep in size_bands([[3.5, 12.0], []])]
        [(0.0, 4.0, [[True, False], []]), (10.0, inf, [[False, True], []])]
    """
    out = []
    for lo, hi in bands:
        keep = [[lo <= d < hi for d in scan] for scan in diameters_mm]
        if any(map(any, keep)):
            out.append((lo, hi, keep))
    return out


def size_band_row(lo: float, hi: float, keep: Sequence[Sequence[bool]], found: int, sensitivity: float,
                  fp_rate: float) -> dict[str, float | int]:  # fmt: skip
    """One row of a per-size table (``metrics.json``'s ``sensitivity_by_size``): an open upper bound is None (JSON
    has no infinity); ``n`` counts the band's lesions."""
    return {"band_mm": [lo, hi if np.isfinite(hi) else None], "n": int(sum(map(sum, keep))), "found": int(found),
            "sensitivity": float(sensitivity), "fp_per_scan": fp_rate}


def sensitivity_by_size(marks: Sequence[ScanMarks], diameters_mm: Sequence[Sequence[float]],
                        bands: Sequence[tuple[float, float]] = SIZE_BANDS_MM,
                        fp_rate: float = 1.0) -> list[dict[str, float | int]]:  # fmt: skip
    """Per nodule-diameter band (mm): how many lesions (``n``), how many any mark hits (``found``, at any score),
    and the band's sensitivity at ``fp_rate`` false positives per scan (its :func:`lesion_subset` FROC: every false
    positive of the scans counts, marks on lesions of other bands are ignored). ``diameters_mm[i][j]`` is lesion
    ``j`` of scan ``i``; bands without lesions are left out (:func:`size_bands`, :func:`size_band_row`).

    Example:
        >>> m = ScanMarks(scores=[0.9, 0.5, 0.3], lesion_ids=[1, -1, 0], n_lesions=3)
        >>> [(b["band_mm"], b["n"], b["found"], b["sensitivity"]) for b in sensitivity_by_size([m], [[3.5, 12.0, 3.8]])]
        [([0.0, 4.0], 2, 1, 0.5), ([10.0, None], 1, 1, 1.0)]
    """
    rows = []
    for lo, hi, keep in size_bands(diameters_mm, bands):
        sub = lesion_subset(marks, keep)
        found = sum(len({lid for lid in m.lesion_ids if lid >= 0}) for m in sub)
        rows.append(size_band_row(lo, hi, keep, found, froc(sub).sensitivity_at(fp_rate), fp_rate))
    return rows


def cpm_interval(marks: Sequence[ScanMarks], n_bootstrap: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float, float]:  # fmt: skip
    """Percentile bootstrap interval of the CPM, resampling whole scans with replacement (as the LUNA16
    evaluation does); resamples without a lesion are drawn again. With few scans the interval is wide
    and, when scans share anatomy, still optimistic.

    Example:
        >>> marks = [ScanMarks([0.9], [0], 1), ScanMarks([0.8], [-1], 1), ScanMarks([0.7, 0.2], [0, -1], 1)]
        >>> lo, hi = cpm_interval(marks, n_bootstrap=200)
        >>> 0.0 <= lo <= froc(marks).cpm <= hi <= 1.0
        True
    """
    values = [froc(sample).cpm for sample in scan_resamples(marks, lambda m: m.n_lesions > 0, n_bootstrap, seed)]
    return percentile_interval(values, confidence)


def scan_resamples(scans: Sequence[Scan], has_lesion: Callable[[Scan], bool], n: int,
                   seed: int = 0) -> Iterator[list[Scan]]:  # fmt: skip
    """``n`` resamples of whole scans with replacement (the LUNA16 bootstrap); a resample without
    any lesion has no sensitivity and is drawn again.

    Raises:
        ValueError: no scan holds a lesion (every resample would be redrawn forever).
    """
    if n > 0 and not any(has_lesion(s) for s in scans):
        raise ValueError("scan bootstrap: no scan holds a lesion")
    rng = np.random.default_rng(seed)
    done = 0
    while done < n:
        sample = [scans[i] for i in rng.integers(len(scans), size=len(scans))]
        if any(has_lesion(s) for s in sample):
            done += 1
            yield sample


def percentile_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Central percentile interval of bootstrap values (``confidence`` 0.95: 2.5th-97.5th)."""
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(np.asarray(values, float), [alpha, 1.0 - alpha])
    return float(lo), float(hi)
