"""Augmentation: sampled records replay exactly, the geometry is right, batches match singles; the MRI / CT artefacts
(gamma, bias field, blur, anisotropy) do what they say and leave earlier configs' records as they were."""

from __future__ import annotations

import json

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medanomaly.train.augment import Augmenter, AugmentSpec

FULL = AugmentSpec(rotate_deg=20, scale=0.2, crop=0.2, flip=True, intensity=0.1, noise_std=0.05,
                   elastic=True, gamma=0.4, bias_field=0.3, blur=1.5, anisotropy=3.0, prob=1.0)


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


def test_train_augment_artefacts_do_what_they_say() -> None:
    """Gamma is the power curve; the bias field is a smooth multiplicative field whose log is the recorded polynomial
    (no constant: the image's level is kept at its centre); blur keeps the mean and lowers the spread; anisotropy
    removes the detail along its axis alone (a stripe pattern across z is lost, one along x kept)."""
    for dims, size in ((2, (16, 16)), (3, (8, 12, 12))):
        aug = Augmenter(AugmentSpec(), dims)
        x = torch.rand(1, *size)
        assert torch.allclose(aug.apply(x, {"gamma": 2.0}), x**2, atol=1e-6)
        ones = torch.ones(1, *size)
        n_coefficients = 5 if dims == 2 else 9
        biased = aug.apply(ones, {"bias_field": [0.3 / n_coefficients] * n_coefficients})  # |log| <= 0.3
        assert np.exp(-0.3) - 1e-6 <= float(biased.min()) < 1.0 < float(biased.max()) <= np.exp(0.3) + 1e-6
        centre = tuple(n // 2 for n in size)
        assert abs(float(biased[(0, *centre)]) - 1.0) < 0.2  # the field's log is ~0 at the middle
        blurred = aug.apply(x, {"blur": 1.5})
        assert abs(float(blurred.mean() - x.mean())) < 0.05 and float(blurred.std()) < 0.7 * float(x.std())
    aug = Augmenter(AugmentSpec(), 3)
    stripes = torch.zeros(1, 12, 12, 12)
    stripes[:, ::2] = 1.0  # alternating slices (z)
    assert float(aug.apply(stripes, {"anisotropy": [0, 2.0]}).std()) < 0.05  # thick slices: the stripes average out
    across = stripes.transpose(1, 3).contiguous()  # the same stripes along x
    assert torch.equal(aug.apply(across, {"anisotropy": [0, 2.0]}), across)


def test_train_augment_artefacts_are_sampled_within_their_limits_and_keep_older_records() -> None:
    spec = AugmentSpec(gamma=0.3, bias_field=0.5, blur=2.0, anisotropy=4.0, prob=1.0)
    records = [Augmenter(spec, 3).sample(np.random.default_rng(seed), (8, 8, 8)) for seed in range(50)]
    assert all(np.exp(-0.3) <= r["gamma"] <= np.exp(0.3) for r in records)
    assert all(len(r["bias_field"]) == 9 and sum(map(abs, r["bias_field"])) <= 0.5 + 1e-12 for r in records)
    ones = torch.ones(1, 8, 8, 8)
    fields = [Augmenter(spec, 3).apply(ones, {"bias_field": r["bias_field"]}) for r in records]
    assert max(float(f.log().abs().max()) for f in fields) <= 0.5 + 1e-5  # never more than x1.65 or /1.65
    assert all(0 <= r["blur"] <= 2.0 and r["anisotropy"][0] == 0 and 1 <= r["anisotropy"][1] <= 4 for r in records)
    assert AugmentSpec(anisotropy=2.0).active and not AugmentSpec(anisotropy=1.0).active
    earlier = AugmentSpec(rotate_deg=10, flip=True, intensity=0.1, noise_std=0.05, prob=0.7)  # a spec before these
    record = Augmenter(earlier, 2).sample(np.random.default_rng(3), (16, 16))
    assert record == {"rotate_deg": [-5.263789868078006], "flip_axes": [1], "intensity": record["intensity"],
                      "noise": record["noise"]} and not {"gamma", "bias_field", "blur", "anisotropy"} & set(record)
