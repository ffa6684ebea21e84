"""Volume geometry: index <-> physical round trips (hypothesis), SimpleITK agreement, validation."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from medanomaly.errors import InputError
from medanomaly.types import SAFE_META_KEYS, Finding, Measurements, Prediction, Volume

finite = st.floats(min_value=-500.0, max_value=500.0, allow_nan=False)
spacing_st = st.tuples(*[st.floats(min_value=0.05, max_value=20.0) for _ in range(3)])
origin_st = st.tuples(finite, finite, finite)
matrix_st = st.lists(st.floats(min_value=-1.0, max_value=1.0), min_size=9, max_size=9)
index_st = st.lists(st.tuples(*[st.floats(min_value=-50.0, max_value=600.0) for _ in range(3)]), min_size=1, max_size=8)


def orthonormal(values: list[float]) -> np.ndarray:
    """An orthonormal 3x3 matrix from 9 numbers (QR), with a random handedness kept."""
    m = np.asarray(values).reshape(3, 3) + np.eye(3) * 2.5  # well conditioned
    q, r = np.linalg.qr(m)
    return q * np.sign(np.diag(r))


@settings(max_examples=150, deadline=None)
@given(spacing=spacing_st, origin=origin_st, matrix=matrix_st, indices=index_st)
def test_types_index_physical_round_trip(spacing, origin, matrix, indices):
    direction = orthonormal(matrix)
    vol = Volume(np.zeros((2, 2, 2), np.float32), spacing=spacing, origin=origin, direction=direction)
    idx = np.asarray(indices)
    back = vol.physical_to_index(vol.index_to_physical(idx))
    np.testing.assert_allclose(back, idx, atol=1e-6 * max(1.0, np.abs(idx).max()) / min(spacing) + 1e-7)
    # one point at a time gives the same as the batch
    np.testing.assert_allclose(vol.index_to_physical(idx[0]), vol.index_to_physical(idx)[0])
    # distances scale with spacing along each index axis (orthonormal direction)
    step = vol.index_to_physical((1.0, 0.0, 0.0)) - vol.index_to_physical((0.0, 0.0, 0.0))
    assert np.linalg.norm(step) == pytest.approx(spacing[0], rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(spacing=spacing_st, origin=origin_st, matrix=matrix_st, indices=index_st)
def test_types_geometry_agrees_with_simpleitk(spacing, origin, matrix, indices):
    vol = Volume(np.zeros((3, 4, 5), np.int16), spacing=spacing, origin=origin, direction=orthonormal(matrix))
    image = vol.to_sitk()
    for idx in indices:
        ours = vol.index_to_physical(idx)
        theirs = image.TransformContinuousIndexToPhysicalPoint(tuple(float(i) for i in idx))
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
    np.testing.assert_allclose(vol.affine_lps[:3, 3], origin)


def test_types_sitk_round_trip_and_2d():
    vol = Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4), spacing=(0.5, 0.7, 3.0), origin=(1, 2, 3),
                 meta={"modality": "CT"})  # fmt: skip
    back = Volume.from_sitk(vol.to_sitk(), **vol.meta)
    assert back.same_grid(vol) and back.modality == "CT"
    np.testing.assert_array_equal(back.array, vol.array)
    flat = sitk.GetImageFromArray(np.ones((3, 4), np.uint8))
    flat.SetSpacing((0.2, 0.3))
    two_d = Volume.from_sitk(flat)
    assert two_d.shape == (1, 3, 4) and two_d.is_2d and two_d.spacing == (0.2, 0.3, 1.0)
    rgb = Volume(np.zeros((1, 3, 4, 3), np.uint8))
    assert rgb.n_components == 3 and rgb.to_sitk().GetNumberOfComponentsPerPixel() == 3
    mask = Volume(np.ones((2, 2, 2), bool))
    assert mask.to_sitk().GetPixelID() == sitk.sitkUInt8
    big_endian = Volume(np.arange(8, dtype=">i2").reshape(2, 2, 2))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(big_endian.to_sitk()), big_endian.array)


def test_types_validation():
    with pytest.raises(ValueError, match="spacing"):
        Volume(np.zeros((1, 2, 2)), spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="PHI"):
        Volume(np.zeros((1, 2, 2)), meta={"patient_name": "x"})
    with pytest.raises(ValueError, match="invertible"):
        Volume(np.zeros((1, 2, 2)), direction=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="3 values"):
        Volume(np.zeros((1, 2, 2)), origin=(0.0, 0.0))
    with pytest.raises(ValueError):
        Volume(np.zeros(5))
    assert Volume(np.zeros((4, 5))).shape == (1, 4, 5)
    assert "modality" in SAFE_META_KEYS and "patient_name" not in SAFE_META_KEYS


def test_types_derive_and_units():
    vol = Volume(np.zeros((2, 3, 4), np.int16), spacing=(0.5, 0.5, 2.0), meta={"modality": "CT"})
    assert vol.voxel_volume_mm3 == pytest.approx(0.5)
    assert vol.size_xyz == (4, 3, 2)
    mask = vol.with_array(np.ones((2, 3, 4), np.uint8), label="mask")
    assert mask.same_grid(vol) and mask.meta["label"] == "mask" and mask.modality == "CT"
    with pytest.raises(ValueError, match="does not fit"):
        vol.with_array(np.zeros((2, 3, 5)))
    assert vol.meta == {"modality": "CT"}
    with pytest.raises(TypeError):
        vol.meta["modality"] = "MR"  # read-only


def test_types_finding_and_prediction_json():
    m = Measurements(volume_ml=1.36, max_diameter_mm=14.2, mean=-120.0, n_voxels=837)
    f = Finding(center_mm=(1.0, 2.0, 3.0), bbox_mm=((0.0, 0.0, 0.0), (2.0, 4.0, 6.0)), score=0.9, measurements=m)
    out = f.to_json()
    assert out["volume_ml"] == 1.36 and out["mean_hu"] == -120.0 and out["n_voxels"] == 837
    p = Prediction(scores=(0.2, 0.8), class_names=("normal", "nodule"), label="nodule", findings=(f,))
    js = p.to_json()
    assert js["probabilities"] == {"normal": 0.2, "nodule": 0.8} and len(js["findings"]) == 1


def test_require_scalar_names_the_step_and_the_components_and_passes_a_grey_volume():
    """One check for preprocess and quantify alike (it was written three times)."""
    from medanomaly.errors import InputError
    from medanomaly.types import require_scalar

    grey = Volume(np.zeros((1, 4, 4), np.float32))
    assert require_scalar(grey, "median") is grey
    with pytest.raises(InputError, match=r"^median needs a scalar image .*got 3 components \(a colour image\?\)$"):
        require_scalar(Volume(np.zeros((1, 4, 4, 3), np.uint8)), "median")


@pytest.mark.parametrize(("array", "reason"), [
    (np.zeros((1, 4, 4), np.complex64), "complex numbers"),
    (np.zeros((1, 4, 4), object), "must be numbers, got dtype object"),
    (np.zeros((1, 4, 4), "<U4"), "must be numbers"),
    (np.zeros((1, 4, 4), "datetime64[s]"), "must be numbers"),
])  # fmt: skip
def test_types_voxels_that_are_not_real_numbers_are_refused(array, reason):
    """A library caller's complex, object or text array became a Volume and was predicted on (a complex MR image
    silently lost its imaginary part; text was parsed as numbers). Booleans, integers and floats stay voxels."""
    with pytest.raises(InputError, match=reason):
        Volume(array)
    for dtype in (bool, np.int8, np.uint64, np.float16, np.float64):
        assert Volume(np.zeros((1, 4, 4), dtype)).array.dtype == dtype


@pytest.mark.parametrize(("spacing", "origin", "reason"), [
    ((1e-30, 1e-30, 1.0), (0.0, 0.0, 0.0), r"spacing \(x, y, z\) \(1e-30, 1e-30, 1\) mm is not a voxel size"),
    ((1e30, 1.0, 1.0), (0.0, 0.0, 0.0), "is not a voxel size"),
    ((1.0, 1.0, 1.0), (float("nan"), 0.0, 0.0), "is not a position in a scanner"),
    ((1.0, 1.0, 1.0), (1e30, 0.0, 0.0), "is not a position in a scanner"),
])  # fmt: skip
def test_types_a_spacing_or_origin_no_scanner_gives_is_refused(spacing, origin, reason):
    """A spacing of 1e-30 mm built a disc of 1e31 pixels in the lung mask (a traceback), 1e30 mm overflowed a resampled
    size into "negative image dimension", and a NaN or 1e30 mm origin put every voxel at one position; micro-CT and
    OCT voxels (1-4 um) and a slab of 100 mm stay voxels."""
    with pytest.raises(InputError, match=reason):
        Volume(np.zeros((1, 4, 4)), spacing=spacing, origin=origin)
    for ok in ((0.001, 0.001, 0.0039), (0.5, 0.5, 100.0)):
        assert Volume(np.zeros((1, 4, 4)), spacing=ok, origin=(-5000.0, 250.0, 1e5)).spacing == ok


def test_types_half_floats_go_to_simpleitk_as_float32():
    """SimpleITK has no half-float pixel: a float16 Volume (a library caller's array) failed in every ITK step with
    "dtype: float16 is not supported"; the values are exact in float32."""
    half = Volume(np.linspace(-2, 2, 8, dtype=np.float16).reshape(2, 2, 2))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(half.to_sitk()), half.array.astype(np.float32))
