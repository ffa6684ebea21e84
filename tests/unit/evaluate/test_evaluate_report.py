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
    ev = evaluate_classification(
        tmp_path, y, None, NAMES3, logits=z, y_val=y_val, logits_val=z_val,
        n_bootstrap=200, synthetic=True, run_info={"model": "compact_cnn"},
    )
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["synthetic"] is True and data["split"] == "test"
    # temperature learned on validation only
    ts = TemperatureScaler().fit(z_val, y_val)
    assert data["calibration"]["temperature"] == pytest.approx(ts.temperature_)
    assert data["calibration"]["ece_temperature_scaled"] == pytest.approx(
        expected_calibration_error(y, ts.transform(z)), abs=1e-6
    )
    assert data["calibration"]["ece_temperature_scaled"] < data["calibration"]["ece_uncalibrated"]
    assert data["threshold"] is None  # multi-class: arg-max
    ab = data["abstention"]
    assert ab["learned_on"] == "val" and 0.8 < ab["coverage"] <= 1.0
    assert ab["selective_accuracy"] >= data["accuracy"]["value"] - 1e-9
    e = data["macro"]["roc_auc"]
    assert e["ci_low"] <= e["value"] <= e["ci_high"]
    assert ev.metrics.synthetic

    html = (tmp_path / "report.html").read_text()
    assert "SYNTHETIC DATA" in html and 'class="banner"' in html
    assert "compact_cnn" in html and "ROC AUC" in html
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 5
    for b64 in images:
        raw = base64.b64decode(b64)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 10_000
    for name in ("roc", "pr", "confusion", "reliability", "risk_coverage"):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 10_000


def test_binary_threshold_is_learned_on_validation_and_no_banner_for_real(tmp_path):
    rng = np.random.default_rng(2)
    y_val, y = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    p_val = np.clip(0.35 * y_val + rng.uniform(0, 0.65, 200), 0, 1)
    p = np.clip(0.35 * y + rng.uniform(0, 0.65, 200), 0, 1)
    ev = evaluate_classification(
        tmp_path, y, p, ("normal", "abnormal"), y_val=y_val, p_val=p_val,
        threshold_rule="sensitivity@0.9", n_bootstrap=100,
    )
    assert ev.metrics.threshold == choose_threshold(y_val, p_val, "sensitivity@0.9")
    assert ev.metrics.threshold != choose_threshold(y, p, "sensitivity@0.9")
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["threshold_selection"] == {
        "rule": "sensitivity@0.9", "learned_on": "val", "threshold": ev.metrics.threshold,
    }
    html = (tmp_path / "report.html").read_text()
    assert 'class="banner"' not in html and "SYNTHETIC" not in html


def test_without_validation_nothing_is_learned(tmp_path):
    y, z = _logits(90, 3)
    ev = evaluate_classification(tmp_path, y, softmax(z), NAMES3, n_bootstrap=50)
    assert ev.temperature is None and ev.abstention_threshold is None and ev.metrics.threshold is None
    assert "not learned" in (tmp_path / "report.html").read_text()
    with pytest.raises(InputError):
        evaluate_classification(tmp_path, y, None, NAMES3)


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


def test_task_hook_writes_report_from_task_metrics(tmp_path):
    """The call the classification task makes: write_classification_report(run_dir=..., metrics=...)."""
    from medanomaly.evaluate.calibration import risk_coverage_curve, selective_accuracy
    from medanomaly.evaluate.metrics import classification_metrics
    from medanomaly.evaluate.report import write_classification_report

    (tmp_path / "config.yaml").write_text(
        "task: classification\nname: breast_3class\nseed: 0\n"
        "data: {dataset: {name: mammo_phantom, params: {csv: /secret/path.csv}}, image_size: [64, 64]}\n"
        "model: {name: compact_cnn}\ntrain: {epochs: 3}\n"
    )
    y, z = _logits(150, 5)
    raw, probs = softmax(z), softmax(z, 2.5)
    result = classification_metrics(y, probs, NAMES3, n_bootstrap=100, synthetic=True)
    sel, cov = selective_accuracy(y, probs, 0.5)
    metrics = {
        **result.to_json(), "split": "test",
        "calibration": {"temperature": 2.5, "fitted_on": "val", "ece_before": 0.2, "ece_after": 0.05},
        "abstention": {"confidence_threshold": 0.5, "coverage": cov, "selective_accuracy": sel,
                       "n_uncertain": int(round((1 - cov) * 150)),
                       "risk_coverage": risk_coverage_curve(y, probs).to_json()},
        "ensemble": {"members": 1, "method": "average", "tta": False},
    }
    path = write_classification_report(run_dir=tmp_path, metrics=metrics, result=result, y_true=y,
                                       probs=probs, class_names=NAMES3, raw_probs=raw)
    html = path.read_text()
    assert path == tmp_path / "report.html"
    assert 'class="banner"' in html and "compact_cnn" in html and "mammo_phantom" in html
    assert "/secret/path.csv" not in html  # dataset parameters (paths) are not shown
    assert "temperature-scaled" in html and "uncalibrated" in html
    assert html.count("data:image/png;base64,") == 5
    assert (tmp_path / "plots" / "reliability.png").is_file()
