"""Pins of behaviour the engine refactor (issue 11) moves: each test fails on a planted one-line bug.

The five bugs the suite missed before these tests: FROC false positives divided by lesions instead
of scans; a bootstrap interval at the wrong percentiles; RECIST axes with x/y spacings swapped; the
explanation peak with its index axes reversed; class weights of the loss inverted.
"""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.types import Volume


# --------------------------------------------------------------------------- FROC
def test_pin_froc_false_positives_are_per_scan_not_per_lesion() -> None:
    from medanomaly.evaluate.froc import ScanMarks, froc

    # One scan, 3 marks: a false positive, the hit of lesion 0, another false positive; 2 lesions.
    res = froc([ScanMarks(scores=[0.9, 0.8, 0.7], lesion_ids=[-1, 0, -1], n_lesions=2)])
    assert (res.n_scans, res.n_lesions) == (1, 2)
    assert res.fps_per_scan[-1] == pytest.approx(2.0)  # 2 FPs over 1 scan
    assert res.fps_per_scan.tolist() == pytest.approx([0.0, 1.0, 1.0, 2.0])
    assert res.sensitivity[-1] == pytest.approx(0.5)  # 1 of 2 lesions
    assert res.sensitivity_at(1.0) == pytest.approx(0.5)
    assert res.sensitivity_at(0.5) == 0.0  # the first mark is already 1 FP per scan
    assert res.operating_points[2.0] == pytest.approx(0.5)
    assert res.operating_points[0.125] == 0.0


# --------------------------------------------------------------------------- bootstrap CI
def test_pin_bootstrap_ci_is_the_percentile_interval_of_the_same_resamples() -> None:
    from sklearn.metrics import roc_auc_score

    from medanomaly.evaluate.metrics import bootstrap_indices, classification_metrics

    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(30, int), np.ones(20, int)]
    p1 = np.clip(0.35 * y + rng.random(50) * 0.65, 0, 1)
    probs = np.stack([1 - p1, p1], axis=1)
    n_boot, seed = 300, 7
    res = classification_metrics(y, probs, ("normal", "abnormal"), n_bootstrap=n_boot, seed=seed)
    idx = bootstrap_indices(y, n_boot, seed)
    pred = probs.argmax(axis=1)
    acc = (pred[idx] == y[idx]).mean(axis=1)
    auc = np.array([roc_auc_score(y[i], p1[i]) for i in idx])
    acc_lo, acc_hi = np.percentile(acc, [2.5, 97.5])
    auc_lo, auc_hi = np.percentile(auc, [2.5, 97.5])
    assert res.accuracy.low == pytest.approx(acc_lo, abs=1e-12)
    assert res.accuracy.high == pytest.approx(acc_hi, abs=1e-12)
    auc_est = res.per_class["abnormal"]["roc_auc"]
    assert auc_est.low == pytest.approx(auc_lo, abs=1e-9)
    assert auc_est.high == pytest.approx(auc_hi, abs=1e-9)
    # A 90 % interval is strictly narrower on this data: the check above can tell them apart.
    assert np.percentile(auc, 5) > auc_lo and np.percentile(auc, 95) < auc_hi


# --------------------------------------------------------------------------- RECIST axes
def test_pin_recist_axes_use_x_and_y_spacing_on_non_square_pixels() -> None:
    from medanomaly.quantify.measure import axial_axes_mm

    spacing = (0.5, 2.0, 5.0)  # x 0.5 mm, y 2 mm, z 5 mm
    along_x = np.zeros((1, 5, 30), np.uint8)
    along_x[0, 2, 5:25] = 1  # 20 pixels in x (10 mm), 1 in y (2 mm)
    long_axis, short_axis = axial_axes_mm(Volume(along_x, spacing=spacing))
    assert long_axis == pytest.approx(10.0, abs=1e-6)
    assert short_axis == pytest.approx(2.0, abs=1e-6)
    along_y = np.zeros((1, 12, 5), np.uint8)
    along_y[0, 3:9, 2] = 1  # 6 pixels in y (12 mm), 1 in x (0.5 mm)
    long_axis, short_axis = axial_axes_mm(Volume(along_y, spacing=spacing))
    assert long_axis == pytest.approx(12.0, abs=1e-6)
    assert short_axis == pytest.approx(0.5, abs=1e-6)


# --------------------------------------------------------------------------- explanation peak
def test_pin_peak_mm_maps_zyx_index_to_xyz_millimetres() -> None:
    from medanomaly.explain.maps import peak_mm

    arr = np.zeros((4, 5, 6), np.float32)  # (z, y, x)
    arr[1, 2, 3] = 1.0
    vol = Volume(arr, spacing=(0.5, 2.0, 3.0), origin=(10.0, 20.0, 30.0))
    # x = 10 + 3 * 0.5, y = 20 + 2 * 2, z = 30 + 1 * 3
    assert peak_mm(vol) == pytest.approx((11.5, 24.0, 33.0))
    flipped = Volume(arr, spacing=(0.5, 2.0, 3.0), origin=(10.0, 20.0, 30.0),
                     direction=np.diag([-1.0, 1.0, 1.0]))
    assert peak_mm(flipped) == pytest.approx((8.5, 24.0, 33.0))


# --------------------------------------------------------------------------- class weights
def test_pin_fit_hands_balanced_weights_to_the_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from medanomaly.data.arrays import LabelledImages
    from medanomaly.registry import MODELS
    from medanomaly.train import losses
    from medanomaly.train.loop import TrainSettings, fit

    seen: list[np.ndarray | None] = []
    real = losses.make_loss

    def spy(name, num_classes, class_weights=None, **kw):
        seen.append(None if class_weights is None else np.asarray(class_weights, float))
        return real(name, num_classes, class_weights, **kw)

    monkeypatch.setattr(losses, "make_loss", spy)
    torch.set_num_threads(1)
    labels = np.array([0] * 9 + [1] * 3)  # 9 normal, 3 abnormal
    rng = np.random.default_rng(0)
    data = LabelledImages(rng.random((12, 1, 8, 8)).astype(np.float32), labels, np.arange(12), ("a", "b"))
    net = MODELS.create("compact_cnn", num_classes=2, widths=(2, 2), hidden=0)
    fit(net, data, None, TrainSettings(epochs=1, batch_size=12, class_weights="balanced", progress=False))
    assert len(seen) == 1 and seen[0] is not None
    weights = seen[0]
    assert weights[1] > weights[0]  # the rarer class weighs more
    # scikit-learn "balanced": n / (k * count) = 12 / (2 * 9), 12 / (2 * 3)
    assert weights.tolist() == pytest.approx([12 / 18, 12 / 6])
