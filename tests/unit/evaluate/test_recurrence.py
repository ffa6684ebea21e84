"""recurring_false_positives: false positives at one position across the scans of a source that share its anatomy."""

from __future__ import annotations

import pytest

from medanomaly.evaluate.recurrence import recurring_false_positives


def test_positions_are_grouped_per_source_within_the_radius_and_recur_from_the_share_of_its_scans() -> None:
    sites = [("a", [(0, 0, 0), (50, 0, 0)]), ("a", [(2.5, 0, 0)]), ("a", [(0, 1, 0), (90, 0, 0)]), ("a", []),
             ("b", [(0, 0, 0)]), ("b", [(10, 0, 0)])]  # fmt: skip
    record = recurring_false_positives(sites, radius_mm=3.0, min_fraction=0.5)
    assert record.false_positives == 7
    # a: (0,0,0) in 3 of 4 scans recurs (>= 2 of 4); 50 and 90 once each do not; b: its two centres are 10 mm apart
    assert record.recurring == 3
    assert record.positions == [{"source": "a", "center_mm": [0.0, 0.0, 0.0], "scans": 3, "of_scans": 4}]
    # the same place in another source is another anatomy: never merged across sources
    assert recurring_false_positives([("a", [(0, 0, 0)]), ("b", [(0, 0, 0)])]).recurring == 0


def test_a_position_must_reach_the_share_of_scans_and_two_scans_at_least() -> None:
    twice_of_five = [("a", [(0, 0, 0)]), ("a", [(0, 0, 0)]), ("a", []), ("a", []), ("a", [])]
    assert recurring_false_positives(twice_of_five, min_fraction=0.5).recurring == 0  # 2 < ceil(2.5)
    assert recurring_false_positives(twice_of_five, min_fraction=0.4).recurring == 2
    assert recurring_false_positives([("a", [(0, 0, 0), (0, 0, 0)])], min_fraction=0.5).recurring == 0  # one scan
    assert recurring_false_positives([]).to_json()["n_positions"] == 0


@pytest.mark.parametrize(("radius", "fraction"), [(0.0, 0.5), (3.0, 0.0), (3.0, 1.5), (float("nan"), 0.5)])
def test_a_bad_rule_is_refused(radius: float, fraction: float) -> None:
    with pytest.raises(ValueError, match="radius_mm"):
        recurring_false_positives([], radius, fraction)
