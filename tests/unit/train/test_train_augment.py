"""Augmentation: sampled records replay exactly, the geometry is right, batches match singles."""

from __future__ import annotations

import json

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medanomaly.train.augment import Augmenter, AugmentSpec

FULL = AugmentSpec(rotate_deg=20, scale=0.2, crop=0.2, flip=True, intensity=0.1, noise_std=0.05,
                   elastic=True, prob=1.0)


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([2, 3]))
def test_train_augment_record_replays_exactly(seed: int, dims: int) -> None:
    aug = Augmenter(FULL, dims)
    size = (8,) * dims
    x = torch.rand(1, *size)
    out, record = aug(x, np.random.default_rng(seed))
    json.dumps(record)  # JSON-able
    assert torch.equal(out, aug.apply(x, record))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_train_augment_geometry() -> None:
    aug = Augmenter(AugmentSpec(flip=True), 2)
    x = torch.zeros(1, 8, 8)
    x[0, 2, 5] = 1.0
    assert torch.equal(aug.apply(x, {"flip_axes": [1]}), torch.flip(x, dims=[2]))
    assert torch.equal(aug.apply(x, {"flip_axes": [0]}), torch.flip(x, dims=[1]))
    rot = aug.apply(x, {"rotate_deg": [90.0]})
    assert torch.allclose(rot, torch.rot90(x, 1, dims=(1, 2)), atol=1e-5) or torch.allclose(
        rot, torch.rot90(x, -1, dims=(1, 2)), atol=1e-5)
    crop = aug.apply(x, {"crop": [[2, 4], [6, 8]]})  # 4x4 box holding the dot at (0, 1) -> 2x zoom
    assert crop[0, :2, 2:4].sum() > 0.9 and crop[0, 4:].abs().sum() < 1e-6
    assert torch.allclose(aug.apply(x, {"intensity": [2.0, 0.5]}), x * 2 + 0.5)


def test_train_augment_batch_equals_singles_and_off_is_identity() -> None:
    aug = Augmenter(FULL, 2)
    x = torch.rand(4, 1, 12, 12)
    out, records = aug.batch(x, np.random.default_rng(0))
    for i in range(4):
        assert torch.allclose(out[i], aug.apply(x[i], records[i]), atol=1e-6)
    assert not AugmentSpec().active
