"""AUPRO (per-region overlap up to 30 % FPR, normalised) against a case worked out by hand, a perfect,
an inverted and a random map, and ROC AUC (one region, FPR limit 1)."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.errors import InputError
from medanomaly.evaluate.aupro import aupro, aupro_report, pro_curve


def _hand_case() -> tuple[np.ndarray, np.ndarray]:
    """2x5 image: region R1 = row 0 cols 0-1 (2 px), region R2 = row 1 col 4 (1 px), 7 normal px."""
    truth = np.zeros((2, 5), bool)
    truth[0, :2] = True
    truth[1, 4] = True
    scores = np.array([[0.9, 0.5, 0.8, 0.6, 0.4], [0.3, 0.2, 0.1, 0.0, 0.7]])
    return scores, truth


def test_hand_worked_case():
    # thresholds 0.9: FPR 0, PRO (1/2 + 0)/2 = 0.25; 0.8: FPR 1/7; 0.7: PRO (1/2 + 1)/2 = 0.75;
    # 0.6: FPR 2/7; 0.5: PRO 1. Area to 0.3 = 0.25/7 + 0.75/7 + 1.0 (0.3 - 2/7) = 0.3 - 1/7.
    scores, truth = _hand_case()
    fpr, pro = pro_curve([scores], [truth])
    np.testing.assert_allclose(fpr[:6], [0, 0, 1 / 7, 1 / 7, 2 / 7, 2 / 7])
    np.testing.assert_allclose(pro[:6], [0, 0.25, 0.25, 0.75, 0.75, 1.0])
    assert aupro([scores], [truth]) == pytest.approx((0.3 - 1 / 7) / 0.3)
    assert aupro([scores], [truth], max_fpr=2 / 7) == pytest.approx(0.5)
    # a valid region that drops R2 and one normal pixel (0.8): R1 alone, 6 normal px
    valid = np.ones_like(truth)
    valid[1, 4] = valid[0, 2] = False
    fpr, pro = pro_curve([scores], [truth], [valid])
    np.testing.assert_allclose(pro[:4], [0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(fpr[:4], [0, 0, 1 / 6, 1 / 6])


def test_regions_weigh_equally_whatever_their_size():
    truth = np.zeros((1, 40), bool)
    truth[0, :30] = True  # a large region, found
    truth[0, 35] = True  # a one-pixel region, missed
    scores = np.where(truth, 1.0, 0.5)
    scores[0, 35] = 0.0
    assert aupro([scores], [truth]) == pytest.approx(0.5)  # half the regions at every FPR <= 0.3


def test_perfect_inverted_and_random_maps():
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(6):
        m = np.zeros((64, 64), bool)
        for _ in range(2):
            y, x = rng.integers(5, 59, 2)
            m[y - 3 : y + 3, x - 4 : x + 4] = True
        masks.append(m)
    perfect = [m + 0.1 * rng.random(m.shape) for m in masks]
    assert aupro(perfect, masks) == pytest.approx(1.0)
    assert aupro([-p for p in perfect], masks) == pytest.approx(0.0)
    random = [rng.random(m.shape) for m in masks]
    assert aupro(random, masks) == pytest.approx(0.15, abs=0.03)


def test_one_region_up_to_fpr_one_is_the_roc_auc():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    truth = np.zeros((3, 20, 20), bool)
    truth[1:3, 5:9, 5:9] = True  # one 3D region (26-connected)
    scores = rng.normal(size=truth.shape) + 1.2 * truth
    assert aupro([scores], [truth], max_fpr=1.0) == pytest.approx(roc_auc_score(truth.ravel(), scores.ravel()))


def test_undefined_cases():
    with pytest.raises(InputError, match="regions"):
        aupro([np.zeros((4, 4))], [np.zeros((4, 4), bool)])
    with pytest.raises(InputError, match="shape"):
        aupro([np.zeros((4, 4))], [np.zeros((4, 5), bool)])
    report = aupro_report([np.zeros((4, 4))], [np.zeros((4, 4), bool)])
    assert report["value"] is None and report["n_regions"] == 0


def test_docstring_example():
    import doctest

    import medanomaly.evaluate.aupro as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
