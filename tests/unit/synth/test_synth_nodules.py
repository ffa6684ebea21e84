"""Nodule simulation: geometry, partial volume, HU, noise matching, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medanomaly.synth.nodules import (
    KINDS,
    SHAPES,
    NoduleSpec,
    insert_nodule,
    insert_nodules,
    nodule_reach_mm,
    render_nodule,
    sample_nodule_spec,
)
from medanomaly.types import Volume


def _parenchyma(seed: int = 0, shape=(16, 96, 96), spacing=(0.7, 0.7, 2.5), noise=25.0) -> Volume:
    """A flat -850 HU 'lung' with white noise of known standard deviation."""
    rng = np.random.default_rng(seed)
    arr = (-850 + rng.normal(0, noise, shape)).round().astype(np.int16)
    return Volume(arr, spacing=spacing, origin=(-10.0, 5.0, 40.0), meta={"modality": "CT"})


def _centre(ct: Volume) -> tuple[float, float, float]:
    z, y, x = (np.array(ct.shape) - 1) / 2
    return tuple(float(c) for c in ct.index_to_physical((x, y, z)))


def test_synth_sphere_volume_centre_and_mask_match_analytic() -> None:
    ct = _parenchyma()
    spec = NoduleSpec(center_mm=_centre(ct), diameter_mm=12.0, kind="solid", hu=40.0)
    out, mask, truth = insert_nodule(ct, spec)
    analytic_ml = 4 / 3 * np.pi * 6.0**3 / 1000
    assert truth.volume_ml == pytest.approx(analytic_ml, rel=0.03)
    assert truth.mask_volume_ml == pytest.approx(analytic_ml, rel=0.12)
    assert np.linalg.norm(np.subtract(truth.center_mm, spec.center_mm)) < 0.5
    assert truth.n_voxels == int(mask.array.sum())
    assert out.same_grid(ct) and out.array.dtype == ct.array.dtype and out.meta["synthetic"] is True


def test_synth_partial_volume_on_thick_slices() -> None:
    ct = _parenchyma(spacing=(0.7, 0.7, 5.0))
    spec = NoduleSpec(center_mm=_centre(ct), diameter_mm=8.0, kind="solid", hu=50.0)
    box, occ, _ = render_nodule(ct, spec)
    frac = occ[(occ > 0.02) & (occ < 0.98)]
    assert frac.size > 0.2 * (occ > 0.02).sum()  # 5 mm slices: many partially filled voxels
    assert 0.0 <= occ.min() and occ.max() <= 1.0


@pytest.mark.parametrize("kind, lo, hi", [("solid", -160, 160), ("ground_glass", -800, -250)])
def test_synth_hu_ranges(kind: str, lo: float, hi: float) -> None:
    ct = _parenchyma()
    rng = np.random.default_rng(3)
    spec = sample_nodule_spec(rng, _centre(ct), (14.0, 16.0), kinds=(kind,), shapes=("sphere",), kind_p=None)
    out, mask, _ = insert_nodule(ct, spec)
    inside = np.asarray(out.array)[np.asarray(mask.array) > 0]
    assert lo < np.median(inside) < hi
    assert np.median(inside) == pytest.approx(spec.hu, abs=30)


def test_synth_part_solid_has_denser_core() -> None:
    ct = _parenchyma()
    spec = NoduleSpec(center_mm=_centre(ct), diameter_mm=20.0, kind="part_solid", hu=-550.0, core_hu=20.0,
                      core_fraction=0.5)  # fmt: skip
    out, mask, _ = insert_nodule(ct, spec)
    arr = np.asarray(out.array)
    z, y, x = (np.array(ct.shape) - 1) // 2
    assert arr[z, y, x] > -150  # core
    assert -700 < arr[z, y, x + int(8.0 / 0.7)] < -350  # ground-glass rim at 8 mm


def test_synth_noise_matches_background() -> None:
    ct = _parenchyma(noise=30.0)
    spec = NoduleSpec(center_mm=_centre(ct), diameter_mm=25.0, kind="ground_glass", hu=-500.0, texture_hu=0.0)
    out, mask, _ = insert_nodule(ct, spec, psf_mm=0.0)
    inside = np.asarray(out.array, float)[np.asarray(mask.array) > 0]
    background = np.asarray(ct.array, float)
    # Deep inside (occupancy 1) the lesion noise equals the background's, not zero and not doubled.
    assert 0.7 < inside.std() / background.std() < 1.5


def test_synth_is_reproducible_from_seed_and_spec() -> None:
    ct = _parenchyma()
    a = sample_nodule_spec(np.random.default_rng(11), _centre(ct))
    b = sample_nodule_spec(np.random.default_rng(11), _centre(ct))
    assert a == b
    out_a, mask_a, _ = insert_nodule(ct, a)
    out_b, mask_b, _ = insert_nodule(ct, b)
    assert np.array_equal(out_a.array, out_b.array) and np.array_equal(mask_a.array, mask_b.array)


def test_synth_insert_nodules_labels_each_lesion() -> None:
    ct = _parenchyma()
    c = np.array(_centre(ct))
    specs = [NoduleSpec(center_mm=tuple(c + d), diameter_mm=6.0) for d in ([-15, 0, 0], [15, 0, 0])]
    _, labels, truths = insert_nodules(ct, specs)
    assert len(truths) == 2
    assert set(np.unique(labels.array).tolist()) == {0, 1, 2}
    assert truths[0].to_json()["synthetic"] is True


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 100_000), kind=st.sampled_from(KINDS), shape=st.sampled_from(SHAPES))
def test_synth_random_nodules_stay_within_reach(seed: int, kind: str, shape: str) -> None:
    ct = _parenchyma(shape=(12, 80, 80), spacing=(0.8, 0.8, 2.5))
    spec = sample_nodule_spec(np.random.default_rng(seed), _centre(ct), (4.0, 12.0), kinds=(kind,),
                              shapes=(shape,), kind_p=None)  # fmt: skip
    _, mask, truth = insert_nodule(ct, spec)
    assert truth.spec.kind == kind and truth.spec.shape == shape
    idx = np.argwhere(np.asarray(mask.array) > 0)[:, ::-1]
    if len(idx):
        dist = np.linalg.norm(ct.index_to_physical(idx) - np.asarray(spec.center_mm), axis=1)
        assert dist.max() <= nodule_reach_mm(spec) + 1e-6
    assert 3.0 <= spec.diameter_mm <= 30.0 or (4.0 <= spec.diameter_mm <= 12.0)
