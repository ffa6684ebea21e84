"""score_scans: FROC and volume agreement of simulated scans, all nodules and those of 6 mm or more."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from medanomaly.detect.evaluation import LARGE_NODULE_MM, score_scans
from medanomaly.detect.simulate import SimScan
from medanomaly.types import Finding, Measurements, Volume


class _Measurer:
    """A stand-in detector: one finding at each truth's centre, its volume a fixed fraction of the truth's
    (``small`` under 6 mm, ``large`` from 6 mm), plus one false positive."""

    def __init__(self, truths: list[SimpleNamespace], small: float, large: float, partial: float | None = None) -> None:
        self.truths, self.small, self.large, self.partial = truths, small, large, partial

    def _measure(self, t: SimpleNamespace) -> Measurements:
        """The mask's volume by size; ``partial`` x the truth as the partial-volume volume (None: not computed)."""
        fraction = self.large if 2 * t.radius_mm >= LARGE_NODULE_MM else self.small
        partial = float("nan") if self.partial is None else self.partial * t.volume_ml
        return Measurements(t.volume_ml * fraction, 2 * t.radius_mm, partial_volume_ml=partial)

    def detect(self, ct: Volume, lung: Volume, side: int | None = None) -> list[Finding]:
        out = [Finding(t.center_mm, (t.center_mm, t.center_mm), 0.9 - 0.01 * i, measurements=self._measure(t))
               for i, t in enumerate(self.truths)]
        return [*out, Finding((200.0, 200.0, 200.0), ((200.0,) * 3, (200.0,) * 3), 0.5)]


def _truth(x: float, diameter_mm: float) -> SimpleNamespace:
    return SimpleNamespace(center_mm=(x, 10.0, 10.0), radius_mm=diameter_mm / 2,
                           volume_ml=np.pi / 6 * diameter_mm**3 / 1000.0)  # fmt: skip


def test_volume_agreement_is_given_for_all_nodules_and_for_those_of_6_mm_or_more() -> None:
    truths = [_truth(5.0, 4.0), _truth(20.0, 5.0), _truth(35.0, 8.0), _truth(50.0, 12.0)]
    ct = Volume(np.full((20, 20, 60), -800, np.int16), spacing=(1.0, 1.0, 1.0), meta={"modality": "CT"})
    labels = ct.with_array(np.zeros(ct.shape, np.uint8))
    source = SimpleNamespace(name="phantom", lung=labels, exclude=None)
    scan = SimScan("phantom-0", source, 1, ct, labels, truths)  # type: ignore[arg-type]
    out = score_scans(_Measurer(truths, small=0.5, large=1.1), [scan])  # type: ignore[arg-type]
    assert out["froc"].cpm == 1.0 and out["volume"].n == 4 and out["volume_large"].n == 2
    rel_large = 100 * 0.1 / 1.05  # (m - t) / mean(m, t) for m = 1.1 t
    assert out["volume_large"].bias == pytest.approx(rel_large)
    assert out["volume"].bias == pytest.approx((2 * rel_large + 2 * 100 * -0.5 / 0.75) / 4)
    assert [(r["band_mm"], r["n"], r["found"]) for r in out["by_size"]] == [
        ([4.0, 6.0], 2, 2), ([6.0, 10.0], 1, 1), ([10.0, None], 1, 1)]
    only_small = score_scans(_Measurer(truths[:2], 0.5, 1.1), [SimScan("s", source, 1, ct, labels, truths[:2])])  # type: ignore[arg-type]
    assert only_small["volume_large"] is None and only_small["froc_large"] is None


def test_volume_agreement_takes_the_partial_volume_when_measured_and_keeps_the_mask_beside_it() -> None:
    truths = [_truth(5.0, 4.0), _truth(35.0, 8.0), _truth(50.0, 12.0)]
    ct = Volume(np.full((20, 20, 60), -800, np.int16), spacing=(1.0, 1.0, 1.0), meta={"modality": "CT"})
    labels = ct.with_array(np.zeros(ct.shape, np.uint8))
    scan = SimScan("phantom-0", SimpleNamespace(name="phantom", lung=labels, exclude=None), 1, ct, labels, truths)  # type: ignore[arg-type]
    out = score_scans(_Measurer(truths, small=0.5, large=0.5, partial=1.1), [scan])  # type: ignore[arg-type]
    assert out["volume"].bias == pytest.approx(100 * 0.1 / 1.05)  # the partial volume, 1.1 x the truth
    assert out["volume_mask"].bias == pytest.approx(100 * -0.5 / 0.75)  # the mask, 0.5 x the truth


def test_a_false_positive_at_the_same_place_in_every_scan_of_a_source_is_counted_as_recurring() -> None:
    truths = [_truth(5.0, 8.0)]
    ct = Volume(np.full((20, 20, 60), -800, np.int16), spacing=(1.0, 1.0, 1.0), meta={"modality": "CT"})
    labels = ct.with_array(np.zeros(ct.shape, np.uint8))
    source = SimpleNamespace(name="phantom", lung=labels, exclude=None)
    scans = [SimScan(f"phantom-{k}", source, 1, ct, labels, truths) for k in range(3)]  # type: ignore[arg-type]
    record = score_scans(_Measurer(truths, 1.0, 1.0), scans)["recurring_fp"]  # type: ignore[arg-type]
    assert (record.false_positives, record.recurring) == (3, 3)
    assert record.positions == [{"source": "phantom", "center_mm": [200.0, 200.0, 200.0], "scans": 3, "of_scans": 3}]


@pytest.mark.parametrize("recurring", [237, 0])
def test_the_report_says_how_many_false_positives_recur(tmp_path, recurring: int) -> None:
    from medanomaly.evaluate.lung_report import write_lung_report

    record = {"false_positives": 311, "recurring": recurring, "n_positions": 27 if recurring else 0, "min_fraction": 0.5}
    froc = {"cpm": 0.8, "cpm_ci": (0.7, 0.9), "n_scans": 20, "n_lesions": 80, "plot": "froc.png", "points": {"1": 0.8},
            "large": None, "recurring": record}  # fmt: skip
    html = write_lung_report(tmp_path / "report.html", {"title": "t", "intro": "", "split": "", "froc": froc,
                                                        "agreement": [], "cases": [], "training": None}).read_text()  # fmt: skip
    text = " ".join(html.split())
    assert f"Of the 311 false positives, <b>{recurring}</b> lie at" in text
    assert ("fewer independent mistakes" in text) == bool(recurring)


def test_the_report_gives_the_sensitivity_per_nodule_size(tmp_path) -> None:
    from medanomaly.evaluate.lung_report import write_lung_report

    by_size = [{"band_mm": [0.0, 4.0], "n": 11, "found": 4, "sensitivity": 0.364, "fp_per_scan": 1.0},
               {"band_mm": [10.0, None], "n": 30, "found": 30, "sensitivity": 1.0, "fp_per_scan": 1.0}]  # fmt: skip
    froc = {"cpm": 0.8, "cpm_ci": (0.7, 0.9), "n_scans": 20, "n_lesions": 41, "plot": "froc.png", "points": {"1": 0.8},
            "large": None, "recurring": None, "by_size": by_size}  # fmt: skip
    html = write_lung_report(tmp_path / "report.html", {"title": "t", "intro": "", "split": "", "froc": froc,
                                                        "agreement": [], "cases": [], "training": None}).read_text()  # fmt: skip
    text = " ".join(html.split())
    assert "<td>under 4</td><td>11</td> <td>4</td><td>0.364</td>" in text
    assert "<td>10 or more</td><td>30</td> <td>30</td><td>1.000</td>" in text
