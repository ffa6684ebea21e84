"""Evaluation of a trained detector: held-out simulated scans (FROC, agreement) and real lesions.

* **Held-out simulated scans** (synthetic): nodules are inserted into the lung that training never
  used (see :mod:`medanomaly.detect.simulate`) with a seed stream separate from training; the
  detector searches only that lung. Hits follow :func:`medanomaly.evaluate.froc.match_findings`
  (centre within ``max(radius, hit_min_radius_mm)``); findings in the exclusion zone around a real
  lesion are ignored. For every hit, the detector's mask is measured and compared with the
  simulation truth (volume: the finding's partial-volume volume, :func:`lesion_volume_ml`, against the
  continuous simulated volume, and the mask's voxel volume beside it; diameter: maximum 3D diameter of the
  truth mask) by Bland-Altman.
* **Real lesions**: the detector searches both lungs of each source CT that has a real lesion
  mask; the report gives the rank of the first finding that hits the lesion (its mask overlaps the
  lesion **and** its centre lies inside the lesion's bounding box grown by ``HIT_MARGIN_MM``, so a
  huge blob that merely touches the lesion is not a hit), its score, and how many other findings
  score at least as high (false positives in that scan at that threshold).

Example:
    >>> rank_on_lesion([], None)
    (None, None, 0)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.detect.detector import NoduleDetector
from medanomaly.detect.simulate import ScanSimulator, SimScan, SourceScan, truth_radius_mm
from medanomaly.evaluate.agreement import bland_altman
from medanomaly.evaluate.froc import ScanMarks, froc, lesion_subset, match_findings, sensitivity_by_size
from medanomaly.evaluate.recurrence import recurring_false_positives
from medanomaly.types import Finding, Volume

__all__ = ["CaseResult", "evaluate_heldout", "score_scans", "evaluate_real", "rank_on_lesion", "finding_json", "hits_lesion",
           "lesion_volume_ml"]


#: Nodules of this diameter (mm) or more are the issue's "sensitivity at 1 FP/scan for nodules >= 6 mm" subset.
LARGE_NODULE_MM = 6.0

#: A finding's centre may lie this far (mm) outside the reference lesion's bounding box and still hit it.
HIT_MARGIN_MM = 5.0


def lesion_volume_ml(finding: Finding) -> float:
    """A measured finding's volume (mL): its partial-volume volume when computed (the lung detector's,
    :mod:`medanomaly.quantify.partial_volume`), else its mask's voxel volume."""
    m = finding.measurements
    assert m is not None
    return m.partial_volume_ml if np.isfinite(m.partial_volume_ml) else m.volume_ml


def hits_lesion(finding: Finding, lesion: Volume) -> bool:
    """True when the finding's mask overlaps ``lesion`` and its centre lies in the lesion's LPS
    bounding box grown by :data:`HIT_MARGIN_MM` (overlap alone would credit a lung-sized blob)."""
    les = np.asarray(lesion.array) > 0
    if finding.mask is None or not np.any(np.asarray(finding.mask.array)[les]):
        return False
    zyx = np.argwhere(les)
    corners_xyz = np.array([[x, y, z] for z in (zyx[:, 0].min(), zyx[:, 0].max())
                            for y in (zyx[:, 1].min(), zyx[:, 1].max()) for x in (zyx[:, 2].min(), zyx[:, 2].max())])
    corners_mm = lesion.index_to_physical(corners_xyz)
    low, high = corners_mm.min(axis=0) - HIT_MARGIN_MM, corners_mm.max(axis=0) + HIT_MARGIN_MM
    centre = np.asarray(finding.center_mm, dtype=float)
    return bool(np.all(centre >= low) and np.all(centre <= high))


def rank_on_lesion(findings: list[Finding], lesion: Volume | None) -> tuple[int | None, float | None, int]:
    """(1-based rank of the first finding hitting ``lesion``, its score, other findings scoring >= it).

    Returns ``(None, None, len(findings))`` when no finding hits (see :func:`hits_lesion`).
    """
    if lesion is None:
        return None, None, len(findings)
    hits = [hits_lesion(f, lesion) for f in findings]
    for i, f in enumerate(findings):
        if hits[i]:
            fps = sum(1 for g, hit in zip(findings, hits, strict=True) if g.score >= f.score and not hit)
            return i + 1, float(f.score), fps
    return None, None, len(findings)


def finding_json(f: Finding, lesion: Volume | None = None) -> dict[str, Any]:
    """A finding's JSON (``Finding.to_json``) plus whether it hits the reference lesion."""
    out = f.to_json()
    if lesion is not None and f.mask is not None:
        out["overlaps_reference"] = hits_lesion(f, lesion)
    return out


def evaluate_heldout(
    detector: NoduleDetector,
    sources: list[SourceScan],
    heldout_side: int,
    scans_per_source: int,
    nodules_per_scan: int,
    diameter_range_mm: tuple[float, float],
    seed: int,
    hit_min_radius_mm: float = 5.0,
    progress: bool = True,
    simulator: ScanSimulator | None = None,
) -> dict[str, Any]:
    """FROC + agreement on held-out simulated scans (synthetic). Returns results and raw pairs.

    ``simulator`` makes the scans (default: procedural shapes); seed stream ``[seed, 1, source, k]``.
    """
    sim = simulator if simulator is not None else ScanSimulator("procedural", "test", diameter_range_mm)
    jobs = [(si, k) for si in range(len(sources)) for k in range(scans_per_source)]
    scans = (sim.scan(sources[si], heldout_side, nodules_per_scan, np.random.default_rng([seed, 1, si, k]),
                      f"{sources[si].name}-heldout-{k}") for si, k in jobs)  # fmt: skip
    return score_scans(detector, scans, hit_min_radius_mm, progress, total=len(jobs))


def score_scans(detector: NoduleDetector, scans: Iterable[SimScan], hit_min_radius_mm: float = 5.0,
                progress: bool = False, total: int | None = None) -> dict[str, Any]:
    """Detect in each simulated scan's nodule lung and score: FROC (``froc``), the FROC of the nodules of
    :data:`LARGE_NODULE_MM` or more (``froc_large``, marks on smaller ones ignored; None without such nodules),
    Bland-Altman of measured (:func:`lesion_volume_ml`) vs true volume (mL, relative) and maximum 3D diameter (mm)
    of the best hit of each nodule, of the volume of the nodules of :data:`LARGE_NODULE_MM` or more
    (``volume_large``: below it a nodule on 5 mm slices is a few voxels, and the Fleischner 2017 follow-up
    categories start at 6 mm, 100 mm3), and of the mask's voxel volume (``volume_mask``: what partial-volume
    analysis corrects), the sensitivity at 1 FP/scan per nodule-diameter band (``by_size``:
    :func:`~medanomaly.evaluate.froc.sensitivity_by_size`), and how many false positives recur at one position
    across the scans of a source (``recurring_fp``: :mod:`medanomaly.evaluate.recurrence`; the scans of a source
    share its anatomy)."""
    from medanomaly.quantify.measure import max_diameter_mm

    marks: list[ScanMarks] = []
    large: list[list[bool]] = []
    diameters: list[list[float]] = []
    vol_pairs: list[tuple[float, float]] = []
    vol_pairs_large: list[tuple[float, float]] = []
    mask_pairs: list[tuple[float, float]] = []
    diam_pairs: list[tuple[float, float]] = []
    fp_sites: list[tuple[str, list[np.ndarray]]] = []
    iterator: Any = scans
    if progress:
        from rich.progress import track

        iterator = track(scans, description="detect on held-out simulated scans", total=total)
    for sim in iterator:
        source = sim.source
        findings = detector.detect(sim.ct, source.lung, side=sim.side)
        exclude = None if source.exclude is None else np.asarray(source.exclude.array) > 0

        def ignore(c: np.ndarray, ct: Volume = sim.ct, ex: np.ndarray | None = exclude) -> bool:
            if ex is None:
                return False
            idx = np.round(ct.physical_to_index(c)).astype(int)[::-1]
            inside = all(0 <= i < n for i, n in zip(idx, ct.shape, strict=True))
            return bool(inside and ex[tuple(idx)])

        centres = np.array([f.center_mm for f in findings]).reshape(-1, 3)
        truths = sim.truths
        m = match_findings(
            centres, [f.score for f in findings], np.array([t.center_mm for t in truths]).reshape(-1, 3),
            [truth_radius_mm(t) for t in truths], hit_min_radius_mm, ignore,
        )  # fmt: skip
        marks.append(m)
        fp_sites.append((source.name, [centres[i] for i, lid in zip(m.finding_index, m.lesion_ids, strict=True)
                                       if lid < 0]))  # fmt: skip
        diameters.append([2.0 * truth_radius_mm(t) for t in truths])
        large.append([d >= LARGE_NODULE_MM for d in diameters[-1]])
        # Agreement: the best-scoring hit of each lesion.
        kept = [findings[i] for i in m.finding_index]
        seen: set[int] = set()
        for f, lid in zip(kept, m.lesion_ids, strict=True):
            if lid < 0 or lid in seen or f.measurements is None:
                continue
            seen.add(lid)
            truth_mask = sim.labels.with_array((np.asarray(sim.labels.array) == lid + 1).astype(np.uint8))
            vol_pairs.append((lesion_volume_ml(f), truths[lid].volume_ml))
            mask_pairs.append((f.measurements.volume_ml, truths[lid].volume_ml))
            if large[-1][lid]:
                vol_pairs_large.append(vol_pairs[-1])
            diam_pairs.append((f.measurements.max_diameter_mm, max_diameter_mm(truth_mask)))
    result = froc(marks)
    large_froc = froc(lesion_subset(marks, large)) if any(map(any, large)) else None
    return {"froc": result, "froc_large": large_froc, "volume": _agreement(vol_pairs, relative=True),
            "volume_large": _agreement(vol_pairs_large, relative=True),
            "volume_mask": _agreement(mask_pairs, relative=True), "diameter": _agreement(diam_pairs), "marks": marks,
            "by_size": sensitivity_by_size(marks, diameters), "recurring_fp": recurring_false_positives(fp_sites)}


def _agreement(pairs: list[tuple[float, float]], relative: bool = False) -> Any:
    """Bland-Altman of (measured, reference) pairs; None for fewer than two."""
    if len(pairs) < 2:
        return None
    return bland_altman([p[0] for p in pairs], [p[1] for p in pairs], relative=relative)


@dataclass(frozen=True, eq=False)
class CaseResult:
    """Detection on one real CT: findings (best first) and the rank/score/FPs on its lesion."""

    name: str
    findings: list[Finding]
    rank: int | None
    score: float | None
    fp_at_threshold: int


def evaluate_real(detector: NoduleDetector, source: SourceScan) -> CaseResult:
    """Detect in both lungs of a real CT and locate its real lesion among the findings."""
    findings = detector.detect(source.ct, source.lung)
    rank, score, fps = rank_on_lesion(findings, source.lesion)
    return CaseResult(source.name, findings, rank, score, fps)


def write_case(case: CaseResult, source: SourceScan, out_dir: Path, overlays: bool = True) -> dict[str, Any]:
    """Write ``<out_dir>/<case>/findings.json`` (+ overlay PNGs); return the report's case entry."""
    from medanomaly.evaluate.lung_report import plot_finding
    from medanomaly.io.findings import write_findings

    case_dir = out_dir / case.name
    case_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, f in enumerate(case.findings, start=1):
        row = finding_json(f, source.lesion)
        if overlays:
            png = plot_finding(source.ct, f, case_dir / f"finding_{i:02d}.png", source.lesion,
                               title=f"{case.name} #{i} score {f.score:.2f}")  # fmt: skip
            row["overlay"] = f"{case.name}/{png.name}"
        rows.append(row)
    extra = [{k: v for k, v in r.items() if k not in f.to_json() and k != "overlay"} for r, f in zip(rows, case.findings, strict=True)]
    write_findings(case_dir / "findings.json", case.findings, image=case.name, extra=extra, synthetic_training=True)
    reference_ml = None
    if source.lesion is not None:
        reference_ml = float(np.count_nonzero(source.lesion.array)) * source.ct.voxel_volume_mm3 / 1000.0
    measured_ml = measured_mask_ml = None
    if case.rank is not None and case.findings[case.rank - 1].measurements is not None:
        hit = case.findings[case.rank - 1]
        measured_ml, measured_mask_ml = lesion_volume_ml(hit), hit.measurements.volume_ml  # type: ignore[union-attr]
    return {
        "name": case.name,
        "rank": case.rank,
        "score": case.score,
        "fp_at_threshold": case.fp_at_threshold,
        "n_findings": len(case.findings),
        "reference_ml": reference_ml,
        "measured_ml": measured_ml,
        "measured_mask_ml": measured_mask_ml,
        "findings": [
            {**r, "hit": bool(r.get("overlaps_reference", False)), "overlay": r.get("overlay", "")} for r in rows
        ],
    }
