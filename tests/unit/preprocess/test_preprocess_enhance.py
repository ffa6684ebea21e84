"""Windows, multi-window channels, CLAHE, equalisation, gamma, unsharp; wrong-modality errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medanomaly.data.sources import pyradiomics_case
from medanomaly.errors import InputError
from medanomaly.io import read
from medanomaly.preprocess import enhance
from medanomaly.types import Volume

HU = st.floats(-1024, 3071, allow_nan=False)


def _ct(values) -> Volume:
    arr = np.asarray([[list(values) + [-1024.0]]], np.float32)  # one air voxel: an HU image
    return Volume(arr, meta={"modality": "CT"})


@settings(max_examples=60, deadline=None)
@given(st.lists(HU, min_size=2, max_size=40), st.sampled_from(sorted(enhance.WINDOWS)))
def test_window_is_monotone_and_in_unit_range(values, preset):
    values = sorted(values)
    out = enhance.window(_ct(values), preset).array[0, 0, :-1]
    assert np.all(np.diff(out) >= 0)
    assert out.min() >= 0.0 and out.max() <= 1.0
    lo, hi = enhance.WINDOWS[preset]
    inside = (np.asarray(values) > lo) & (np.asarray(values) < hi)
    assert np.allclose(out[inside], (np.asarray(values)[inside] - lo) / (hi - lo), atol=1e-5)


def test_window_presets_and_meta():
    ct = _ct([-1350.0, -600.0, 150.0, 40.0])
    out = enhance.window(ct, "lung")
    assert out.array[0, 0, :3].tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert out.meta["window_center"] == -600.0 and out.meta["window_width"] == 1500.0
    assert enhance.window(ct, "brain").array[0, 0, 3] == pytest.approx(0.5)
    assert enhance.window(ct, low=-100, high=100).array[0, 0, 3] == pytest.approx(0.7)


def test_multi_window_stacks_channels():
    ct = _ct([-600.0, 40.0, 300.0])
    mw = enhance.multi_window(ct, ("lung", "mediastinum", "bone"))
    assert mw.array.shape == (1, 1, 4, 3) and mw.meta["channels"] == "lung,mediastinum,bone"
    assert mw.array[0, 0, 1, 1] == pytest.approx((40 + 160) / 400)


def test_lung_window_on_mr_is_refused():
    mr = read(pyradiomics_case("brain1")[0])
    with pytest.raises(InputError, match="modality MR"):
        enhance.window(mr.with_meta(modality="MR"), "lung")
    with pytest.raises(InputError, match="not HU|no air"):
        enhance.window(mr, "lung")  # unlabelled, 0..3057: not HU
    with pytest.raises(InputError, match="unknown window"):
        enhance.window(_ct([0.0]), "heart")
    # an explicit window is allowed on any modality
    assert enhance.window(mr.with_meta(modality="MR"), low=0, high=1000).array.max() == 1.0


def test_clahe_equalize_raise_local_contrast(ct_slice):
    lung = enhance.window(ct_slice, "lung")
    for out in (enhance.clahe(lung), enhance.clahe(lung, per_slice=False, kernel_size=64), enhance.equalize(lung)):
        assert out.same_grid(lung) and 0.0 <= out.array.min() and out.array.max() <= 1.0
        # lung parenchyma (-950..-700 HU) spreads over a wider output range
        sel = (ct_slice.array > -950) & (ct_slice.array < -700)
        assert out.array[sel].std() > lung.array[sel].std()


def test_gamma_and_unsharp(ct_slice):
    lung = enhance.window(ct_slice, "lung")
    dark = enhance.gamma(lung, 2.0)
    assert np.all(dark.array <= lung.array + 1e-6)
    with pytest.raises(InputError, match="0..1"):
        enhance.gamma(ct_slice, 2.0)
    sharp = enhance.unsharp(ct_slice, radius_mm=1.0, amount=1.0)
    grad = lambda a: np.abs(np.diff(a[0], axis=1)).mean()  # noqa: E731
    assert grad(sharp.array) > grad(ct_slice.array)
    assert sharp.array.mean() == pytest.approx(ct_slice.array.mean(), rel=0.02)


def test_clahe_3d_and_slice_wise_on_a_volume(lung1_ct):
    from medanomaly.preprocess.resample import crop_or_pad

    block = enhance.window(crop_or_pad(lung1_ct, (8, 96, 96)), "lung")  # a central 3D block
    slice_wise = enhance.clahe(block, per_slice=True)
    volumetric = enhance.clahe(block, per_slice=False, kernel_size=(4, 32, 32))
    for out in (slice_wise, volumetric):
        assert out.same_grid(block) and out.array.std() > block.array.std()
    assert not np.allclose(slice_wise.array, volumetric.array)


def test_the_not_hu_refusal_prints_huge_values_shortly():
    """Values of 1e38 were printed as a 38-digit integer in the one-line refusal."""
    from medanomaly.preprocess.checks import require_ct
    from medanomaly.types import Volume

    with pytest.raises(InputError, match=r"values range 1e\+38\.\.1e\+38 \(no air"):
        require_ct(Volume(np.full((2, 4, 4), 1e38, np.float32)))
