"""Class weights and the weighted sampler balance an imbalanced set."""

from __future__ import annotations

import numpy as np

from medanomaly.data.sampling import class_weights, weighted_sampler


def test_data_class_weights_match_sklearn_balanced() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([0] * 90 + [1] * 9 + [2] * 1)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y)
    np.testing.assert_allclose(class_weights(y, 3), expected)
    assert class_weights(np.array([0, 0]), 2).tolist() == [1.0, 0.0]  # absent class gets 0


def test_data_weighted_sampler_draws_classes_equally() -> None:
    y = np.array([0] * 95 + [1] * 5)
    drawn = y[list(weighted_sampler(y, 2, seed=0, num_samples=4000))]
    assert 0.45 < drawn.mean() < 0.55
