"""The lung report embeds a Grad-CAM overlay of each case's top findings (``infer.explain_top``)."""

from __future__ import annotations

import pytest

from medanomaly.detect.config import LungNoduleConfig
from medanomaly.detect.detector import NoduleDetector
from medanomaly.detect.evaluation import evaluate_real, write_case
from medanomaly.detect.task import explain_case
from medanomaly.evaluate.lung_report import write_lung_report

pytestmark = pytest.mark.xdist_group("lung_tiny_detector")


def test_detect_report_embeds_gradcam_of_top_findings(tiny_detector, toy_source, tmp_path) -> None:
    assert LungNoduleConfig().infer.explain_top == 3
    _, run = tiny_detector
    det = NoduleDetector.load(run)
    det.candidate_threshold = 0.0  # an untrained-ish net: take whatever it finds
    case = evaluate_real(det, toy_source)
    assert len(case.findings) >= 1
    entry = write_case(case, toy_source, tmp_path)
    explain_case(det, toy_source.ct, case.findings[:2], entry, tmp_path)
    cams = sorted((tmp_path / "toy" / "explain").glob("finding_*.png"))
    assert 1 <= len(cams) <= 2
    html = write_lung_report(tmp_path / "report.html", {"title": "t", "intro": "", "split": "", "froc": None,
                                                        "agreement": [], "cases": [entry]}).read_text()  # fmt: skip
    for png in cams:
        assert f'src="toy/explain/{png.name}"' in html
    assert "Grad-CAM" in html
    explained = [f for f in entry["findings"] if f.get("explain")]
    assert len(explained) == len(cams) and all(f is entry["findings"][i] for i, f in enumerate(explained))
