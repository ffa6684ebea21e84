"""Normalisation output ranges (hypothesis), masks, and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from medanomaly.errors import InputError
from medanomaly.preprocess import normalise
from medanomaly.types import Volume

IMAGES = arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(2, 6)),
                elements=st.floats(-3000, 3000, width=32))  # fmt: skip


@settings(max_examples=80, deadline=None)
@given(IMAGES)
def test_minmax_in_unit_range(arr):
    out = normalise.minmax(Volume(arr)).array
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
    if arr.max() > arr.min():
        assert out.max() == pytest.approx(1.0) and out.min() == pytest.approx(0.0)


@settings(max_examples=80, deadline=None)
@given(IMAGES)
def test_zscore_mean_zero_std_one(arr):
    std = float(np.std(arr.astype(np.float64)))
    if std == 0.0:
        with pytest.raises(InputError, match="constant"):
            normalise.zscore(Volume(arr))
        return
    assume(std > 1e-2)  # float32 rounding dominates below this
    out = normalise.zscore(Volume(arr)).array.astype(np.float64)
    assert abs(out.mean()) < 1e-3 and out.std() == pytest.approx(1.0, abs=1e-3)


@settings(max_examples=80, deadline=None)
@given(IMAGES, st.floats(0, 49), st.floats(51, 100))
def test_percentile_clip_range(arr, lower, upper):
    out = normalise.percentile_clip(Volume(arr), lower, upper).array
    lo, hi = np.percentile(arr, [lower, upper])
    assert out.min() >= lo - 1e-3 and out.max() <= hi + 1e-3


def test_masked_stats_and_hu_clip():
    arr = np.zeros((1, 4, 4), np.float32)
    arr[0, :2] = 100.0
    arr[0, 0, 0] = 50.0
    mask = Volume(np.zeros((1, 4, 4), np.uint8))
    mask.array[0, :2] = 1
    z = normalise.zscore(Volume(arr), mask).array
    inside = z[0, :2]
    assert abs(inside.mean()) < 1e-5 and inside.std() == pytest.approx(1.0, abs=1e-5)
    mm = normalise.minmax(Volume(arr), mask).array
    assert mm[0, 0, 0] == 0.0 and mm[0, 1, 1] == 1.0 and mm[0, 3, 3] == 0.0  # clipped outside
    ct = Volume(np.array([[[-3000.0, 0.0, 5000.0]]], np.float32), meta={"modality": "CT"})
    assert normalise.hu_clip(ct).array.tolist() == [[[-1024.0, 0.0, 3071.0]]]


def test_normalise_errors():
    flat = Volume(np.ones((1, 3, 3), np.float32))
    with pytest.raises(InputError, match="constant"):
        normalise.zscore(flat)
    with pytest.raises(InputError, match="empty"):
        normalise.zscore(flat, Volume(np.zeros((1, 3, 3), np.uint8)))
    with pytest.raises(InputError, match="grid"):
        normalise.minmax(flat, Volume(np.ones((1, 2, 2), np.uint8)))
    nan = np.ones((1, 3, 3), np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        normalise.minmax(Volume(nan))
    with pytest.raises(InputError, match="percentile"):
        normalise.percentile_clip(flat, 60, 40)
    with pytest.raises(InputError, match="modality MR"):
        normalise.hu_clip(Volume(np.zeros((1, 2, 2)), meta={"modality": "MR"}))
