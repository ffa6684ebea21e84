"""Evaluation report: metrics.json, plots and the HTML report; everything learned on validation."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from medanomaly.errors import InputError
from medanomaly.evaluate.calibration import TemperatureScaler, expected_calibration_error, softmax
from medanomaly.evaluate.metrics import choose_threshold
from medanomaly.evaluate.plots import plot_confusion, plot_reliability, plot_risk_coverage, plot_roc
from medanomaly.evaluate.decision import learn_decision
from medanomaly.evaluate.report import evaluate_classification

NAMES3 = ("benign", "uncertain", "malignant")


def _logits(n: int, seed: int, scale: float = 3.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    z = rng.normal(size=(n, 3))
    z[np.arange(n), y] += 1.3
    return y, scale * z  # over-confident by `scale`


def test_multiclass_report_with_temperature_scaling(tmp_path):
    y_val, z_val = _logits(300, 0)
    y, z = _logits(240, 1)
    rule = learn_decision(y_val, softmax(z_val), calibrate=True, abstain_coverage=0.9)
    ev = evaluate_classification(tmp_path, y, softmax(z), NAMES3, rule, n_bootstrap=200, synthetic=True,
                                 run_info={"model": "compact_cnn"})
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["synthetic"] is True and data["split"] == "test"
    # temperature learned on validation only (on log-probabilities = logits up to a constant)
    ts = TemperatureScaler().fit(np.log(softmax(z_val)), y_val)
    assert data["calibration"]["temperature"] == pytest.approx(ts.temperature_, rel=1e-6)
    assert data["calibration"]["ece_temperature_scaled"] == pytest.approx(
        expected_calibration_error(y, ts.transform(np.log(softmax(z)))), abs=1e-6
    )
    assert data["calibration"]["ece_temperature_scaled"] < data["calibration"]["ece_uncalibrated"]
    assert data["threshold"] is None  # multi-class: arg-max
    ab = data["abstention"]
    assert ab["fitted_on"] == "val" and ab["rule"] == "coverage 0.9 on val" and 0.8 < ab["coverage"] <= 1.0
    assert ab["decision"] == "abstain" and ab["n_abstained"] == round((1 - ab["coverage"]) * 240)
    assert ab["selective_accuracy"] >= data["accuracy"]["value"] - 1e-9
    e = data["macro"]["roc_auc"]
    assert e["ci_low"] <= e["value"] <= e["ci_high"]
    assert ev.metrics.synthetic

    html = (tmp_path / "report.html").read_text()
    assert "SYNTHETIC DATA" in html and 'class="banner"' in html
    assert "compact_cnn" in html and "ROC AUC" in html and "coverage 0.9 on val" in html
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 5
    for b64 in images:
        raw = base64.b64decode(b64)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 10_000
    for name in ("roc", "pr", "confusion", "reliability", "risk_coverage"):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 10_000


def _binary(rng, y):
    p1 = np.clip(0.35 * y + rng.uniform(0, 0.65, len(y)), 1e-3, 1 - 1e-3)
    return np.stack([1 - p1, p1], axis=1)


def test_binary_threshold_is_learned_on_validation_and_named_in_the_report(tmp_path):
    rng = np.random.default_rng(2)
    y_val, y = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    p_val, p = _binary(rng, y_val), _binary(rng, y)
    rule = learn_decision(y_val, p_val, calibrate=False, threshold_rule="sensitivity@0.9")
    ev = evaluate_classification(tmp_path, y, p, ("normal", "abnormal"), rule, n_bootstrap=100)
    assert ev.metrics.threshold == choose_threshold(y_val, p_val[:, 1], "sensitivity@0.9")
    assert ev.metrics.threshold != choose_threshold(y, p[:, 1], "sensitivity@0.9")
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["threshold_selection"] == {"rule": "sensitivity@0.9", "fitted_on": "val",
                                           "threshold": ev.metrics.threshold}
    html = (tmp_path / "report.html").read_text()
    assert 'class="banner"' not in html and "SYNTHETIC" not in html
    assert "sensitivity@0.9" in html  # the report names the rule


def test_without_a_rule_nothing_is_learned(tmp_path):
    y, z = _logits(90, 3)
    ev = evaluate_classification(tmp_path, y, softmax(z), NAMES3, n_bootstrap=50)
    assert ev.decision.temperature == 1.0 and ev.decision.abstain_below == 0.0 and ev.metrics.threshold is None
    assert "abstention" in (tmp_path / "report.html").read_text()
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["abstention"]["confidence_threshold"] is None and data["calibration"]["fitted_on"] == "none"


def test_learn_decision_refuses_an_empty_validation_split():
    with pytest.raises(InputError, match="validation split is empty"):
        learn_decision(np.zeros(0, int), np.zeros((0, 2)))


def test_plots_have_titles_axis_labels_and_legends():
    y, z = _logits(120, 4)
    p = softmax(z)
    from medanomaly.evaluate.calibration import reliability_curve, risk_coverage_curve

    figs = [
        plot_roc(y, p, NAMES3, n_bootstrap=20, synthetic=True),
        plot_confusion([[5, 1, 0], [2, 3, 1], [0, 1, 6]], NAMES3, synthetic=True),
        plot_reliability({"uncalibrated": reliability_curve(y, p)}, synthetic=True),
        plot_risk_coverage({"model": risk_coverage_curve(y, p)}, (0.9, 0.2), synthetic=True),
    ]
    for fig in figs:
        ax = fig.axes[0]
        assert "synthetic" in ax.get_title()
        assert any(a.get_xlabel() for a in fig.axes) and ax.get_ylabel()
    assert len(figs[0].axes[0].get_legend().get_texts()) == 4  # chance + 3 classes
    assert figs[0].axes[0].get_legend().get_texts()[1].get_text().startswith("benign: AUC")


def test_finding_overlay_names_its_colours_in_the_picture(tmp_path, monkeypatch):
    """The overlay PNG is also opened alone (runs/demo/<case>/finding_01.png): its label says which contour is which."""
    import numpy as np

    from medanomaly.evaluate import lung_report
    from medanomaly.types import Finding, Volume

    labels = []
    monkeypatch.setattr(lung_report, "finish_figure", lambda fig, path, dpi=110: labels.append(fig.axes[0].get_xlabel()))
    ct = Volume(np.full((5, 40, 40), -800.0, np.float32), spacing=(1.0, 1.0, 5.0))
    mask = np.zeros((5, 40, 40), np.uint8)
    mask[2, 15:25, 15:25] = 1
    finding = Finding(label="nodule", center_mm=(20.0, 20.0, 10.0), bbox_mm=((15, 15, 10), (25, 25, 10)), score=0.9,
                      mask=ct.with_array(mask))  # fmt: skip
    lung_report.plot_finding(ct, finding, tmp_path / "a.png", reference=ct.with_array(mask))
    lung_report.plot_finding(ct, finding, tmp_path / "b.png")
    assert labels == ["mm; green: reference; red: finding", "mm; red: finding"]


@pytest.mark.parametrize(("modality", "grey_range"), [("CT", (-1000.0, 400.0)), ("MR", None)])  # CT: lung input
def test_finding_overlay_shows_an_image_without_hu_in_its_own_grey_range(tmp_path, monkeypatch, modality, grey_range):
    """The service draws every finding's overlay with this function: an MR or a mammogram (values 0..1000) was drawn
    in the lung window, one flat white square around the finding."""
    from medanomaly.evaluate import lung_report
    from medanomaly.types import Finding, Volume

    shown = []
    monkeypatch.setattr(lung_report, "finish_figure", lambda fig, path, dpi=110: shown.append(fig.axes[0].images[0]))
    values = np.linspace(0.0, 1000.0, 40 * 40, dtype=np.float32).reshape(1, 40, 40)
    if modality == "CT":
        values = values - 1024.0
    image = Volume(np.repeat(values, 3, axis=0), spacing=(1.0, 1.0, 5.0), meta={"modality": modality})
    finding = Finding(label="lesion", center_mm=(20.0, 20.0, 5.0), bbox_mm=((15, 15, 5), (25, 25, 5)), score=0.9)
    lung_report.plot_finding(image, finding, tmp_path / "a.png")
    low, high = shown[0].get_clim()
    expected = grey_range or tuple(np.percentile(values[0], [1, 99]))
    assert (low, high) == pytest.approx(expected, rel=1e-4)


def test_running_mean_trails_and_leaves_out_non_finite_steps() -> None:
    from medanomaly.evaluate.lung_report import running_mean

    assert running_mean([]).size == 0
    np.testing.assert_allclose(running_mean([1.0, 3.0, 5.0, 7.0], points=2), [1.0, 2.0, 4.0, 6.0])
    np.testing.assert_allclose(running_mean([1.0, np.nan, 5.0, np.inf], points=2), [1.0, 1.0, 5.0, 5.0])
    assert np.isnan(running_mean([np.nan, np.nan], points=2)).all()


def test_a_learning_curve_validated_once_still_shows_the_training_loss(tmp_path, monkeypatch) -> None:
    """The demo validates once, at the end of its budget: its learning curve was one point. With the training loss
    of every step it shows how the run learned (a right axis; the legend names it)."""
    from medanomaly.evaluate import lung_report

    drawn = []
    monkeypatch.setattr(lung_report, "finish_figure", lambda fig, path, dpi=110: drawn.append(fig))
    curve = [{"step": 884, "cpm": 0.77}]
    lung_report.plot_learning_curve(curve, tmp_path / "a.png", 884, loss=[1.3 - 0.001 * i for i in range(884)])
    lung_report.plot_learning_curve(curve, tmp_path / "b.png", 884)
    with_loss, without = drawn
    assert len(with_loss.axes) == 2 and with_loss.axes[1].get_ylabel() == "training loss"
    assert len(with_loss.axes[1].lines[0].get_xdata()) == 884
    assert "training loss (running mean)" in [t.get_text() for t in with_loss.axes[0].get_legend().get_texts()]
    assert len(without.axes) == 1 and "training loss" not in without.axes[0].get_title()
