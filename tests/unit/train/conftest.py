"""Tiny, learnable in-memory image sets for the training tests."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.data.arrays import LabelledImages


def blobs(n: int = 48, size: int = 12, seed: int = 0, imbalance: float = 0.5) -> LabelledImages:
    """Class 1 = a bright square in the image centre; class 0 = noise only."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < imbalance).astype(int)
    labels[:2] = [0, 1]
    images = rng.normal(0.3, 0.1, (n, 1, size, size)).astype(np.float32)
    c = size // 2
    images[labels == 1, :, c - 2:c + 2, c - 2:c + 2] += 0.6
    return LabelledImages(images, labels, np.arange(n).astype(str), ("normal", "abnormal"))


@pytest.fixture(scope="session")
def toy() -> tuple[LabelledImages, LabelledImages]:
    return blobs(64, seed=0), blobs(32, seed=1)
