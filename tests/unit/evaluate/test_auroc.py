"""The fast exact AUROC equals sklearn's, ties and all, and says NaN when a class is missing."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medanomaly.evaluate.auroc import binary_auroc


@pytest.mark.parametrize("seed", range(5))
def test_equals_sklearn_with_ties_and_few_positives(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 20_000
    scores = np.round(rng.normal(size=n), 1).astype(np.float32)  # heavy ties
    positive = rng.random(n) < [0.001, 0.01, 0.2, 0.5, 0.9][seed]
    scores[positive] += 0.3
    assert binary_auroc(scores, positive) == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)


def test_extremes_missing_classes_and_bad_input() -> None:
    y = np.array([0, 0, 1, 1], bool)
    assert binary_auroc(np.array([0.0, 0.1, 0.2, 0.3]), y) == 1.0
    assert binary_auroc(np.array([0.3, 0.2, 0.1, 0.0]), y) == 0.0
    assert binary_auroc(np.ones(4), y) == 0.5
    assert np.isnan(binary_auroc(np.arange(4.0), np.zeros(4, bool)))
    assert np.isnan(binary_auroc(np.arange(4.0), np.ones(4, bool)))
    with pytest.raises(ValueError, match="NaN"):
        binary_auroc(np.array([0.0, np.nan, 1.0, 2.0]), y)
    with pytest.raises(ValueError, match="differ in size"):
        binary_auroc(np.arange(3.0), y)
