"""Classification metrics: every statistic against scikit-learn, bootstrap CIs, thresholds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from medanomaly.errors import InputError
from medanomaly.evaluate.metrics import (
    CLASS_METRICS,
    _auc_rows,
    _average_precision_rows,
    bootstrap_indices,
    choose_threshold,
    classification_metrics,
    roc_curve_band,
)


def _multiclass(n: int = 300, k: int = 3, seed: int = 0, ties: bool = True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), y] += 1.2
    if ties:
        z = np.round(z, 1)  # tied scores exercise the tie handling of AUC and AP
    p = np.exp(z)
    return y, p / p.sum(axis=1, keepdims=True)


def _sk_reference(y: np.ndarray, p: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    k = p.shape[1]
    cm = skm.confusion_matrix(y, pred, labels=list(range(k)))
    spec = []
    for c in range(k):
        tn = cm.sum() - cm[c].sum() - cm[:, c].sum() + cm[c, c]
        fp = cm[:, c].sum() - cm[c, c]
        spec.append(tn / (tn + fp))
    return {
        "precision": skm.precision_score(y, pred, average=None, labels=list(range(k)), zero_division=0),
        "recall": skm.recall_score(y, pred, average=None, labels=list(range(k)), zero_division=0),
        "specificity": np.array(spec),
        "f1": skm.f1_score(y, pred, average=None, labels=list(range(k)), zero_division=0),
        "roc_auc": np.array([skm.roc_auc_score(y == c, p[:, c]) for c in range(k)]),
        "pr_auc": np.array([skm.average_precision_score(y == c, p[:, c]) for c in range(k)]),
    }


def test_multiclass_point_estimates_match_sklearn():
    y, p = _multiclass()
    names = ("benign", "uncertain", "malignant")
    res = classification_metrics(y, p, names, n_bootstrap=0)
    pred = p.argmax(axis=1)
    ref = _sk_reference(y, p, pred)
    assert res.accuracy.value == pytest.approx(skm.accuracy_score(y, pred))
    for metric in CLASS_METRICS:
        ours = [res.per_class[c][metric].value for c in names]
        np.testing.assert_allclose(ours, ref[metric], rtol=1e-10, err_msg=metric)
        assert res.macro[metric].value == pytest.approx(ref[metric].mean())
    # scikit-learn's own macro averages agree too
    assert res.macro["roc_auc"].value == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"))
    assert res.macro["f1"].value == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert np.array_equal(np.array(res.confusion), skm.confusion_matrix(y, pred))


def test_binary_with_threshold_matches_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = np.clip(0.3 * y + rng.normal(0.35, 0.2, 200), 0, 1)
    res = classification_metrics(y, s, ("normal", "abnormal"), threshold=0.5, n_bootstrap=0)
    pred = (s >= 0.5).astype(int)
    pos = res.per_class["abnormal"]
    assert pos["recall"].value == pytest.approx(skm.recall_score(y, pred))
    assert pos["precision"].value == pytest.approx(skm.precision_score(y, pred))
    assert pos["f1"].value == pytest.approx(skm.f1_score(y, pred))
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert pos["specificity"].value == pytest.approx(tn / (tn + fp))
    assert pos["roc_auc"].value == pytest.approx(skm.roc_auc_score(y, s))
    assert pos["pr_auc"].value == pytest.approx(skm.average_precision_score(y, s))
    # the negative class mirrors the positive one
    assert res.per_class["normal"]["recall"].value == pytest.approx(tn / (tn + fp))
    assert res.per_class["normal"]["pr_auc"].value == pytest.approx(
        skm.average_precision_score(1 - y, 1 - s)
    )
    # a (n, 2) matrix gives the same as the (n,) positive-class column
    res2 = classification_metrics(y, np.c_[1 - s, s], ("normal", "abnormal"), 0.5, n_bootstrap=0)
    assert res2.to_json() == res.to_json()


def test_vectorised_resample_statistics_match_sklearn_per_resample():
    y, p = _multiclass(n=120, seed=5)
    idx = bootstrap_indices(y, 20, seed=1)
    auc = _auc_rows(p[idx, 2], y[idx] == 2)
    ap = _average_precision_rows(p[idx, 2], y[idx] == 2)
    for b in range(20):
        yy, ss = y[idx[b]] == 2, p[idx[b], 2]
        assert auc[b] == pytest.approx(skm.roc_auc_score(yy, ss))
        assert ap[b] == pytest.approx(skm.average_precision_score(yy, ss))


def test_bootstrap_is_stratified_and_seeded():
    y = np.array([0] * 30 + [1] * 5 + [2] * 12)
    idx = bootstrap_indices(y, 50, seed=7)
    assert idx.shape == (50, y.size)
    assert all(np.array_equal(np.bincount(y[row], minlength=3), [30, 5, 12]) for row in idx)
    assert np.array_equal(idx, bootstrap_indices(y, 50, seed=7))
    assert not np.array_equal(idx, bootstrap_indices(y, 50, seed=8))


def test_bootstrap_ci_covers_point_estimate_and_narrows_with_n():
    y, p = _multiclass(n=150, seed=2)
    small = classification_metrics(y, p, ("a", "b", "c"), n_bootstrap=1000, seed=0)
    yl, pl = _multiclass(n=1000, seed=2)
    large = classification_metrics(yl, pl, ("a", "b", "c"), n_bootstrap=400, seed=0)
    estimates = [small.accuracy, *small.macro.values()]
    estimates += [e for m in small.per_class.values() for e in m.values()]
    for e in estimates:
        assert e.low <= e.value <= e.high
        assert e.high - e.low > 0
    width = lambda r: r.macro["roc_auc"].high - r.macro["roc_auc"].low  # noqa: E731
    assert width(large) < 0.6 * width(small)
    again = classification_metrics(y, p, ("a", "b", "c"), n_bootstrap=1000, seed=0)
    assert again.to_json() == small.to_json()


def test_to_json_is_serialisable_and_complete():
    y, p = _multiclass(n=90)
    res = classification_metrics(y, p, ("benign", "uncertain", "malignant"), n_bootstrap=100, synthetic=True)
    data = json.loads(json.dumps(res.to_json()))
    assert data["synthetic"] is True
    assert set(data["macro"]) == set(CLASS_METRICS)
    assert set(data["per_class"]) == {"benign", "uncertain", "malignant"}
    assert sum(map(sum, data["confusion_matrix"])) == 90
    assert "SYNTHETIC" in res.summary()


def test_bad_inputs_raise_clear_errors():
    y, p = _multiclass(n=30)
    with pytest.raises(InputError, match="shape"):
        classification_metrics(y, p[:, :2], ("a", "b", "c"))
    with pytest.raises(InputError, match="0..2"):
        classification_metrics(np.r_[y[:-1], 5], p, ("a", "b", "c"))
    with pytest.raises(InputError, match="no cases"):
        classification_metrics(np.zeros(30, int), p, ("a", "b", "c"))
    with pytest.raises(InputError, match="binary"):
        classification_metrics(y, p, ("a", "b", "c"), threshold=0.5)
    with pytest.raises(InputError, match="NaN"):
        classification_metrics(np.r_[0, 1], np.array([0.2, np.nan]), ("a", "b"))


def test_threshold_rules_on_validation():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = 1 / (1 + np.exp(-(1.5 * y - 0.75 + rng.normal(size=400))))
    fpr, tpr, thr = skm.roc_curve(y, s)
    t = choose_threshold(y, s, "youden")
    assert tpr[thr == t][0] - fpr[thr == t][0] == pytest.approx(np.max(tpr - fpr))
    t90 = choose_threshold(y, s, "sensitivity@0.9")
    assert skm.recall_score(y, s >= t90) >= 0.9
    assert skm.recall_score(y, s >= np.nextafter(t90, 2.0)) < 0.9  # the highest such threshold
    ts = choose_threshold(y, s, "specificity@0.95")
    assert skm.recall_score(1 - y, s < ts) >= 0.95
    tf = choose_threshold(y, s, "f1")
    best = max(skm.f1_score(y, s >= u) for u in np.unique(s))
    assert skm.f1_score(y, s >= tf) == pytest.approx(best)
    with pytest.raises(InputError, match="unknown"):
        choose_threshold(y, s, "magic")


def test_threshold_chosen_on_validation_is_applied_to_test_unchanged():
    rng = np.random.default_rng(1)
    y_val, y_test = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    s_val = np.clip(0.4 * y_val + rng.normal(0.3, 0.15, 300), 0, 1)
    s_test = np.clip(0.4 * y_test + rng.normal(0.3, 0.15, 300), 0, 1)
    t = choose_threshold(y_val, s_val, "sensitivity@0.9")
    res = classification_metrics(y_test, s_test, ("n", "a"), threshold=t, n_bootstrap=0)
    assert res.threshold == t
    assert res.per_class["a"]["recall"].value == pytest.approx(skm.recall_score(y_test, s_test >= t))
    # a threshold tuned on the test split itself would differ: the API never does that
    assert t != choose_threshold(y_test, s_test, "sensitivity@0.9")


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=2, max_value=4))
def test_property_auc_and_ap_agree_with_sklearn(seed, k):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(k * 2, 40))
    y = np.r_[np.arange(k), rng.integers(0, k, n - k)]
    p = rng.dirichlet(np.ones(k), n).round(2)
    res = classification_metrics(y, p, [str(i) for i in range(k)], n_bootstrap=0)
    for c in range(k):
        if k == 2 and c == 0:
            ref_auc = skm.roc_auc_score(y == 1, p[:, 1])
        else:
            ref_auc = skm.roc_auc_score(y == c, p[:, c])
        assert res.per_class[str(c)]["roc_auc"].value == pytest.approx(ref_auc)
        assert res.per_class[str(c)]["pr_auc"].value == pytest.approx(
            skm.average_precision_score(y == c, p[:, c])
        )


def test_roc_band_contains_curve():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 200)
    s = y * 0.8 + rng.normal(size=200)
    s = np.round(s, 1)  # ties
    band = roc_curve_band(y, s, n_bootstrap=100)
    assert band.auc == pytest.approx(skm.roc_auc_score(y, s))
    assert np.all(band.low <= band.y + 1e-9) and np.all(band.y <= band.high + 1e-9)
    assert band.y[-1] == 1 and np.all(np.diff(band.y) >= 0)
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    reference = [tpr[fpr <= x + 1e-12].max() for x in band.x]  # best TPR reachable at each FPR
    np.testing.assert_allclose(band.y, reference)


@settings(max_examples=15, deadline=None)
@given(st.integers(min_value=0, max_value=10_000))
def test_property_point_estimates_ignore_case_order(seed):
    y, p = _multiclass(n=60, seed=seed)
    perm = np.random.default_rng(seed).permutation(60)
    a = classification_metrics(y, p, ("a", "b", "c"), n_bootstrap=0).to_json()
    b = classification_metrics(y[perm], p[perm], ("a", "b", "c"), n_bootstrap=0).to_json()
    assert a == b
