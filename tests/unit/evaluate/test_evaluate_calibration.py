"""Calibration (reliability, ECE, temperature scaling) and abstention (risk-coverage)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve
from sklearn.metrics import log_loss

from medanomaly.errors import InputError
from medanomaly.evaluate.calibration import (
    UNCERTAIN,
    TemperatureScaler,
    expected_calibration_error,
    reliability_curve,
    risk_coverage_curve,
    selective_accuracy,
    selective_accuracy_at_coverage,
    softmax,
    threshold_for_coverage,
    with_abstention,
)


def _calibrated_logits(n: int, k: int = 3, seed: int = 0):
    """Labels drawn FROM softmax(logits): a perfectly calibrated model by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=(n, k))
    p = softmax(z)
    y = np.array([rng.choice(k, p=row) for row in p])
    return z, y


def test_reliability_matches_sklearn_calibration_curve():
    z, y = _calibrated_logits(1500)
    p = softmax(3 * z)
    curve = reliability_curve(y, p, n_bins=10)
    correct = p.argmax(axis=1) == y
    prob_true, prob_pred = calibration_curve(correct, p.max(axis=1), n_bins=10)
    filled = curve.count > 0
    np.testing.assert_allclose(curve.accuracy[filled], prob_true)
    np.testing.assert_allclose(curve.confidence[filled], prob_pred)
    manual = np.sum(curve.count[filled] * np.abs(prob_true - prob_pred)) / y.size
    assert curve.ece == pytest.approx(manual)
    assert curve.count.sum() == y.size


def test_ece_small_for_calibrated_large_for_overconfident():
    z, y = _calibrated_logits(4000, seed=1)
    assert expected_calibration_error(y, softmax(z)) < 0.03
    assert expected_calibration_error(y, softmax(4 * z)) > 0.15


def test_temperature_scaling_lowers_ece_on_overconfident_model():
    z_val, y_val = _calibrated_logits(3000, seed=2)
    z_test, y_test = _calibrated_logits(3000, seed=3)
    over = 4.0  # the model's logits are 4x too large: over-confident
    ts = TemperatureScaler().fit(over * z_val, y_val)
    assert ts.temperature_ == pytest.approx(over, rel=0.15)
    assert ts.nll_after_ < ts.nll_before_
    before = expected_calibration_error(y_test, softmax(over * z_test))
    after = expected_calibration_error(y_test, ts.transform(over * z_test))
    assert after < 0.5 * before
    assert log_loss(y_test, ts.transform(over * z_test)) < log_loss(y_test, softmax(over * z_test))
    # accuracy is unchanged: temperature never changes the arg-max
    assert np.array_equal(ts.transform(over * z_test).argmax(1), (over * z_test).argmax(1))


def test_temperature_scaling_binary_logits_and_errors():
    rng = np.random.default_rng(4)
    z = rng.normal(scale=2.0, size=2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-z))).astype(int)
    ts = TemperatureScaler().fit(3 * z, y)
    assert ts.temperature_ == pytest.approx(3.0, rel=0.2)
    assert ts.transform(3 * z).shape == (2000, 2)
    with pytest.raises(RuntimeError, match="not fitted"):
        TemperatureScaler().transform(z)
    with pytest.raises(InputError):
        TemperatureScaler().fit(np.full((3, 2), np.nan), [0, 1, 0])


def test_abstention_labels():
    p = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8]])
    names = ("benign", "uncertain_margin", "malignant")
    assert with_abstention(p, names, 0.5) == ("benign", UNCERTAIN, "malignant")
    assert with_abstention(p, names, 0.0) == ("benign", "benign", "malignant")
    acc, cov = selective_accuracy([0, 1, 2], p, 0.5)
    assert (acc, cov) == (1.0, pytest.approx(2 / 3))


def test_risk_coverage_oracle_beats_random_and_is_consistent():
    rng = np.random.default_rng(5)
    n, k = 600, 3
    y = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.7, y, (y + 1) % k)
    conf_oracle = np.where(pred == y, rng.uniform(0.7, 1.0, n), rng.uniform(0.34, 0.6, n))
    conf_random = rng.uniform(0.34, 1.0, n)

    def probs(conf):
        p = np.full((n, k), 0.0)
        p[np.arange(n), pred] = conf
        other = (pred + 1) % k
        p[np.arange(n), other] = 1 - conf
        return p

    oracle = risk_coverage_curve(y, probs(conf_oracle))
    rand = risk_coverage_curve(y, probs(conf_random))
    error = np.mean(pred != y)
    assert oracle.coverage[-1] == 1.0 and oracle.risk[-1] == pytest.approx(error)
    assert np.all(np.diff(oracle.coverage) > 0)
    assert np.all(np.diff(oracle.risk) >= -1e-12)  # confidence ranks every error last
    assert oracle.aurc < 0.5 * rand.aurc
    assert rand.aurc == pytest.approx(error, abs=0.06)
    # threshold learned for a coverage on one split answers about that fraction
    t = threshold_for_coverage(probs(conf_oracle), 0.7)
    acc, cov = selective_accuracy(y, probs(conf_oracle), t)
    assert cov == pytest.approx(0.7, abs=0.01)
    assert acc > 1 - error


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.05, 1.0))
def test_property_coverage_monotone_in_threshold(seed, target):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    p = rng.dirichlet(np.ones(3), n).round(2)
    y = rng.integers(0, 3, n)
    t = threshold_for_coverage(p, target)
    _, cov = selective_accuracy(y, p, t)
    assert cov >= target - 1e-12  # at least the requested coverage
    covs = [selective_accuracy(y, p, th)[1] for th in np.linspace(0, 1, 11)]
    assert all(a >= b for a, b in zip(covs, covs[1:], strict=False))  # higher threshold, fewer answers
    curve = risk_coverage_curve(y, p)
    assert np.all(np.diff(curve.coverage) > 0) and np.all(np.diff(curve.thresholds) < 0)
    assert 0.0 <= curve.aurc <= 1.0


def test_selective_accuracy_at_coverage_reads_the_curve():
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    y = np.array([0, 1, 1, 0])  # most confident first: right, wrong, right, wrong
    assert selective_accuracy_at_coverage(y, p, 0.25) == 1.0
    assert selective_accuracy_at_coverage(y, p, 0.5) == 0.5
    assert selective_accuracy_at_coverage(y, p, 0.75) == pytest.approx(2 / 3)
    assert selective_accuracy_at_coverage(y, p, 1.0) == 0.5
    with pytest.raises(InputError):
        selective_accuracy_at_coverage(y, p, 0.0)
