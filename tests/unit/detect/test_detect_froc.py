"""FROC / CPM and Bland-Altman agreement (evaluate.froc, evaluate.agreement) used by the lung task."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medanomaly.evaluate.agreement import bland_altman
from medanomaly.evaluate.froc import (
    FP_RATES,
    ScanMarks,
    cpm_interval,
    froc,
    lesion_subset,
    match_findings,
    scan_resamples,
    sensitivity_by_size,
)


def test_froc_perfect_detector_has_cpm_one() -> None:
    marks = [ScanMarks([0.9, 0.8], [0, 1], 2), ScanMarks([0.7], [0], 1)]
    res = froc(marks)
    assert res.cpm == 1.0 and res.n_scans == 2 and res.n_lesions == 3
    assert all(v == 1.0 for v in res.operating_points.values())


def test_froc_counts_false_positives_per_scan() -> None:
    # Scan 1: a FP above the only TP; scan 2: one missed lesion and one FP.
    marks = [ScanMarks([0.9, 0.5], [-1, 0], 1), ScanMarks([0.6], [-1], 1)]
    res = froc(marks)
    assert res.sensitivity_at(0.125) == 0.0
    assert res.sensitivity_at(0.5) == 0.0  # at 0.5 FP/scan the TP (score 0.5) is below 2 FPs
    assert res.sensitivity_at(1.0) == 0.5
    assert res.cpm == pytest.approx((0 + 0 + 0 + 0.5 + 0.5 + 0.5 + 0.5) / 7)
    assert res.threshold_at(1.0) == 0.5


def test_froc_duplicate_hits_count_once() -> None:
    res = froc([ScanMarks([0.9, 0.8, 0.1], [0, 0, -1], 1)])
    assert res.fps_per_scan[-1] == 1.0 and res.sensitivity[-1] == 1.0


def test_froc_needs_lesions() -> None:
    with pytest.raises(ValueError):
        froc([ScanMarks([0.5], [-1], 0)])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.integers(-1, 2)), min_size=0, max_size=30))
def test_froc_curve_is_monotone(rows) -> None:
    res = froc([ScanMarks([r[0] for r in rows], [r[1] for r in rows], 3)])
    assert np.all(np.diff(res.fps_per_scan) >= 0) and np.all(np.diff(res.sensitivity) >= 0)
    assert 0.0 <= res.cpm <= 1.0
    assert list(res.operating_points) == list(FP_RATES)


def test_froc_match_findings_by_radius_and_ignore() -> None:
    lesions = np.array([[0.0, 0.0, 0.0], [50.0, 0.0, 0.0]])
    centres = np.array([[3.0, 0.0, 0.0], [50.0, 9.0, 0.0], [100.0, 0.0, 0.0], [200.0, 0, 0]])
    m = match_findings(centres, [0.9, 0.8, 0.7, 0.6], lesions, [2.0, 10.0], min_radius_mm=5.0,
                       ignore=lambda c: c[0] > 150)  # fmt: skip
    assert m.lesion_ids == [0, 1, -1] and m.n_lesions == 2 and m.scores == [0.9, 0.8, 0.7]
    assert list(m.finding_index) == [0, 1, 2]
    # A hit inside the ignore region still counts as a hit.
    hit = match_findings(lesions[:1], [0.5], lesions, [2.0], ignore=lambda c: True)
    assert hit.lesion_ids == [0] and list(hit.finding_index) == [0]


def test_agreement_bias_and_limits() -> None:
    ba = bland_altman([2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0])
    assert ba.bias == 1.0 and ba.sd == 0.0 and ba.loa_low == ba.loa_high == 1.0 and ba.n == 4
    rel = bland_altman([1.1, 2.2], [1.0, 2.0], relative=True)
    assert rel.bias == pytest.approx(100 * 0.1 / 1.05, rel=1e-6)
    noisy = bland_altman(np.arange(10.0) + np.r_[1, -1] .repeat(5), np.arange(10.0))
    assert noisy.loa_low < noisy.bias < noisy.loa_high
    with pytest.raises(ValueError):
        bland_altman([1.0], [1.0])


def test_lesion_subset_ignores_marks_on_lesions_left_out() -> None:
    # Scan 1: lesions 0 (small, left out) and 1; marks: a hit on 0 above everything, an FP, a hit on 1.
    # Scan 2: one kept lesion, missed; one FP.
    marks = [ScanMarks([0.9, 0.6, 0.5], [0, -1, 1], 2), ScanMarks([0.7], [-1], 1)]
    sub = lesion_subset(marks, [[False, True], [True]])
    assert [list(m.lesion_ids) for m in sub] == [[-1, 0], [-1]] and [m.n_lesions for m in sub] == [1, 1]
    assert list(sub[0].finding_index) == [1, 2]  # which input findings remain
    res = froc(sub)
    # Without the left-out hit: 2 FPs (0.7, 0.6) before the only found kept lesion (0.5): 1 FP/scan, 1 of 2.
    assert res.n_lesions == 2 and res.sensitivity_at(0.5) == 0.0 and res.sensitivity_at(1.0) == 0.5
    # The same marks with the small lesion kept: it is found first, at 0 FP.
    assert froc(marks).sensitivity_at(0.125) == pytest.approx(1 / 3)


def test_sensitivity_by_size_counts_each_band_against_every_false_positive() -> None:
    # Scan 1: a 3 mm nodule hit at 0.3, a 12 mm one hit at 0.9, a 5 mm one missed; FPs at 0.8 and 0.6.
    # Scan 2: a 3.5 mm nodule hit at 0.7, no FP.
    marks = [ScanMarks([0.9, 0.8, 0.6, 0.3], [1, -1, -1, 0], 3), ScanMarks([0.7], [0], 1)]
    rows = sensitivity_by_size(marks, [[3.0, 12.0, 5.0], [3.5]])
    by_band = {tuple(r["band_mm"]): r for r in rows}
    assert set(by_band) == {(0.0, 4.0), (4.0, 6.0), (10.0, None)}  # no nodule of 6-10 mm: no row
    small = by_band[(0.0, 4.0)]
    # At 0.7 (0.5 FP/scan: the 0.8 FP) one of the two small ones; at 0.3 both, with 2 FPs in 2 scans = 1 FP/scan.
    assert (small["n"], small["found"], small["sensitivity"]) == (2, 2, 1.0)
    assert sensitivity_by_size(marks, [[3.0, 12.0, 5.0], [3.5]], fp_rate=0.5)[0]["sensitivity"] == 0.5
    assert (by_band[(4.0, 6.0)]["found"], by_band[(4.0, 6.0)]["sensitivity"]) == (0, 0.0)
    assert by_band[(10.0, None)]["sensitivity"] == 1.0


def test_lesion_subset_needs_one_flag_per_lesion() -> None:
    with pytest.raises(ValueError, match="2 flags for a scan of 1 lesions"):
        lesion_subset([ScanMarks([0.5], [0], 1)], [[True, False]])


def test_cpm_interval_is_a_point_for_a_perfect_detector_and_wide_for_a_mixed_one() -> None:
    perfect = [ScanMarks([0.9], [0], 1) for _ in range(4)]
    assert cpm_interval(perfect, n_bootstrap=100) == (1.0, 1.0)
    mixed = [ScanMarks([0.9], [0], 1), ScanMarks([0.8], [-1], 1), ScanMarks([0.7], [0], 1), ScanMarks([], [], 1)]
    lo, hi = cpm_interval(mixed, n_bootstrap=400, seed=1)
    assert lo < froc(mixed).cpm < hi and hi - lo > 0.3  # four scans: the interval says how little they tell
    assert cpm_interval(mixed, n_bootstrap=400, seed=1) == (lo, hi)  # seeded


def test_scan_resamples_redraws_lesion_free_samples_and_refuses_when_none_can_exist() -> None:
    scans = [ScanMarks([0.9], [0], 1)] + [ScanMarks([0.5], [-1], 0) for _ in range(3)]
    samples = list(scan_resamples(scans, lambda m: m.n_lesions > 0, 200, seed=3))
    assert len(samples) == 200 and all(len(s) == 4 for s in samples)
    assert all(any(m.n_lesions for m in s) for s in samples)  # 4 scans, one with a lesion: 32 % would lack one
    with pytest.raises(ValueError, match="no scan holds a lesion"):
        next(scan_resamples(scans[1:], lambda m: m.n_lesions > 0, 10))
