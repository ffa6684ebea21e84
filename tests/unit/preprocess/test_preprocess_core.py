"""The one spatial and intensity core: window table, window_array, resample (anti-aliasing,
integer rounding), origin-keeping crop, masks onto grids by nearest neighbour."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.errors import InputError
from medanomaly.preprocess.intensity import (
    WINDOWS,
    percentile_unit_array,
    robust_zscore_array,
    window_array,
    window_bounds,
)
from medanomaly.preprocess.resample import crop_zyx, mask_onto_grid, resample_like, resample_to_spacing
from medanomaly.types import Volume

DIRECTION = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def test_two_lung_windows_display_and_model_input():
    assert WINDOWS["lung"] == (-1350.0, 150.0)  # W1500/L-600, radiology's display window
    assert WINDOWS["lung_input"] == (-1000.0, 400.0)  # the detector's and ct_lung's input window
    hu = np.array([-1200.0, -1000.0, -300.0, 150.0, 400.0, 1000.0])
    model = window_array(hu, *WINDOWS["lung_input"])
    np.testing.assert_allclose(model, [0.0, 0.0, 0.5, 1150 / 1400, 1.0, 1.0], atol=1e-7)
    display = window_array(hu, *WINDOWS["lung"])
    assert display[3] == display[4] == 1.0 and model[3] < model[4]  # display saturates at +150 HU
    assert model.dtype == np.float32 and display[0] > 0.0  # the display window spends range below air


def test_window_array_is_the_clip_rescale_and_keeps_nan():
    rng = np.random.default_rng(0)
    hu = rng.integers(-2000, 2000, (4, 5, 6)).astype(np.int16)
    got = window_array(hu, -160, 240)
    want = (np.clip(hu.astype(np.float32), -160, 240) + 160) / 400
    assert got.dtype == np.float32 and np.array_equal(got, want.astype(np.float32))
    assert np.isnan(window_array(np.array([np.nan, 0.0]), 0, 1)[0])
    with pytest.raises(InputError, match="unknown window preset 'lungs'"):
        window_bounds("lungs")
    with pytest.raises(InputError, match="must exceed"):
        window_bounds(low=10, high=10)


def test_percentile_and_robust_zscore_arrays():
    a = np.arange(1000, dtype=np.float32)
    unit = percentile_unit_array(a)
    assert unit.min() == 0.0 and unit.max() == 1.0 and unit.dtype == np.float32
    assert not percentile_unit_array(np.full((3, 3), 7.0)).any()
    z = robust_zscore_array(np.r_[a, 1e6])  # one outlier does not rescale the rest
    assert abs(float(np.median(z[:1000]))) < 0.05 and 1.6 < float(z[999]) < 1.8


def test_linear_resample_of_integers_rounds_instead_of_truncating():
    v = Volume(np.array([[[0, 1, 0, -1, 0]]], np.int16))
    up = resample_to_spacing(v, (0.5, 1.0, 1.0), "linear")  # interpolated 0.25, 0.75, -0.75, ...
    assert up.array.dtype == np.int16
    assert up.array[0, 0].tolist() == [0, 0, 1, 1, 0, 0, -1, -1, 0, 0]
    as_float = resample_to_spacing(v, (0.5, 1.0, 1.0), "linear", dtype=np.float32).array
    np.testing.assert_allclose(as_float[0, 0, 1:4], [0.25, 0.75, 0.75])
    peak = Volume(np.array([[[0, 0, 255, 255, 0, 0, 255, 0]]], np.uint8), meta={"label": "no"})
    spline = resample_to_spacing(peak, (0.3, 1.0, 1.0), "bspline")  # overshoots above 255
    assert spline.array.dtype == np.uint8 and spline.array.max() == 255 and spline.array.min() == 0


def test_antialias_is_the_gaussian_prefilter_of_the_detector_grid():
    import SimpleITK as sitk

    rng = np.random.default_rng(1)
    ct = Volume(rng.normal(-500, 300, (12, 40, 40)).astype(np.float32), spacing=(0.7, 0.7, 2.5),
                origin=(3.0, -2.0, 10.0), direction=DIRECTION)  # fmt: skip
    out = resample_to_spacing(ct, (1.25, 1.25, 2.5), "linear", default=0.0, antialias=True)
    # reference: smooth (sigma = half the new spacing on shrinking axes, 0.001 mm elsewhere), then resample
    smooth = sitk.SmoothingRecursiveGaussian(ct.to_sitk(), [0.625, 0.625, 1e-3])
    ref = resample_like(Volume(sitk.GetArrayFromImage(smooth), spacing=ct.spacing, origin=ct.origin,
                               direction=DIRECTION), out, "linear", default=0.0)  # fmt: skip
    assert np.array_equal(out.array, ref.array)
    plain = resample_to_spacing(ct, (1.25, 1.25, 2.5), "linear", default=0.0)
    assert out.array.std() < plain.array.std()  # the noise is low-passed before decimation
    up = (0.35, 0.35, 2.5)  # no axis shrinks: anti-aliasing changes nothing
    assert np.array_equal(resample_to_spacing(ct, up, "linear", antialias=True).array,
                          resample_to_spacing(ct, up, "linear").array)  # fmt: skip


@pytest.mark.parametrize(("shape", "target"), [((12, 40, 40), (1.25, 1.25, 5.0)), ((2, 40, 40), (1.25, 1.25, 5.0)),
                                               ((12, 40, 40), (0.7, 0.7, 5.0))])
def test_antialias_passes_only_the_shrinking_axes_and_is_the_same_to_the_bit(shape, target):
    """One recursive pass per shrinking axis, in ITK's order, equals SmoothingRecursiveGaussian with 0.001 mm on
    the others (3D), and per slice for an image of under 4 slices (how it was computed before)."""
    import SimpleITK as sitk

    from medanomaly.preprocess.resample import _antialiased

    rng = np.random.default_rng(2)
    image = Volume(rng.normal(-500, 300, shape).astype(np.float32), spacing=(0.7, 0.7, 2.5)).to_sitk()
    sigma = [0.5 * t if t > s * 1.01 else 1e-3 for s, t in zip((0.7, 0.7, 2.5), target, strict=True)]
    if shape[0] < 4:
        planes = [sitk.SmoothingRecursiveGaussian(image[:, :, k], sigma[:2]) for k in range(shape[0])]
        reference = sitk.JoinSeries(planes)
    else:
        reference = sitk.SmoothingRecursiveGaussian(image, sigma)
    out = _antialiased(image, np.array([0.7, 0.7, 2.5]), np.array(target))
    assert np.array_equal(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(reference))


def test_antialias_of_an_image_of_three_rows_resamples():
    """ITK's recursive Gaussian needs 4 samples along an axis: a 3-row image shrinking along its rows raised a
    RuntimeError (a traceback); that axis is now left unsmoothed."""
    thin = Volume(np.random.default_rng(0).normal(size=(10, 3, 40)).astype(np.float32), spacing=(0.7, 0.7, 2.5))
    assert resample_to_spacing(thin, (1.25, 1.25, 2.5), "linear", antialias=True).shape == (10, 2, 22)


def test_crop_zyx_keeps_patient_position_and_pads():
    arr = np.arange(4 * 6 * 8, dtype=np.int16).reshape(4, 6, 8)
    v = Volume(arr, spacing=(0.5, 0.7, 2.0), origin=(10.0, 20.0, 30.0), direction=DIRECTION)
    crop = crop_zyx(v, (-1, 2, 3), (2, 5, 10))
    assert crop.shape == (3, 3, 7) and crop.array.dtype == np.int16
    assert np.array_equal(crop.array[1:, :, :5], arr[0:2, 2:5, 3:8])
    assert (crop.array[0] == arr.min()).all() and (crop.array[1:, :, 5:] == arr.min()).all()
    for zyx in ((0, 2, 3), (1, 4, 7)):  # same voxel, same LPS point
        inside = np.asarray(zyx) - (-1, 2, 3)
        np.testing.assert_allclose(crop.index_to_physical(inside[::-1].astype(float)),
                                   v.index_to_physical(np.asarray(zyx[::-1], float)))  # fmt: skip
    assert (crop_zyx(v, (0, 0, 0), (1, 1, 1), fill=-5).array == arr[0, 0, 0]).all()
    assert (crop_zyx(v, (-2, 0, 0), (-1, 1, 1), fill=-5).array == -5).all()
    with pytest.raises(InputError, match="hi > lo"):
        crop_zyx(v, (0, 0, 0), (0, 2, 2))


def test_mask_onto_grid_is_nearest_and_keeps_labels():
    lab = np.zeros((4, 10, 10), np.uint8)
    lab[1:3, 2:5, 2:5], lab[1:3, 6:9, 6:9] = 1, 2
    mask = Volume(lab, spacing=(1.0, 1.0, 2.0))
    fine = Volume(np.zeros((8, 25, 25), np.float32), spacing=(0.4, 0.4, 1.0), origin=(-0.3, -0.3, -0.5))
    on = mask_onto_grid(mask, fine)
    assert on.same_grid(fine) and on.array.dtype == np.uint8 and set(np.unique(on.array)) == {0, 1, 2}
    ml = [float((on.array == k).sum()) * fine.voxel_volume_mm3 for k in (1, 2)]
    np.testing.assert_allclose(ml, [36.0, 36.0], rtol=0.25)  # 3 x 3 x 2 voxels of 2 mm^3
    boolean = mask.with_array(lab > 0)
    assert mask_onto_grid(boolean, fine).array.dtype == np.uint8
    assert mask_onto_grid(mask, mask) is mask


def test_resize_and_middle_slice_keep_the_physical_box():
    from medanomaly.preprocess.pipeline import Pipeline

    v = Volume(np.arange(5 * 40 * 60, dtype=np.float32).reshape(5, 40, 60), spacing=(0.5, 0.5, 3.0),
               origin=(10.0, 20.0, -30.0), direction=DIRECTION)  # fmt: skip
    result = Pipeline.from_config([{"name": "middle_slice"}, {"name": "resize", "size": [20, 30]}])(v)
    out = result.volume
    assert out.shape == (1, 20, 30) and out.spacing == (1.0, 1.0, 3.0)
    assert [r.applied for r in result.records] == [{"slice": 2}, {"shape_zyx": [1, 20, 30]}]
    # the first output voxel centre is the centre of the first 2 x 2 input block of slice 2
    np.testing.assert_allclose(result.index_to_original((0, 0, 0)), (0.5, 0.5, 2.0), atol=1e-9)
    # a linear ramp (value = flat index) is reproduced at the new voxel centres away from the border
    y, x = 5, 7
    np.testing.assert_allclose(out.array[0, y, x], 2 * 2400 + (2 * y + 0.5) * 60 + (2 * x + 0.5), rtol=1e-6)


def test_values_beyond_float32_are_refused_and_large_ones_within_it_are_not() -> None:
    from medanomaly.preprocess.checks import require_finite, require_float32_range

    huge = np.zeros((2, 4, 4))
    huge[0, 1, 1], huge[1, 2, 2] = -1e39, np.nan  # NaN is require_finite's to count
    with pytest.raises(InputError, match=r"lung_mask: image has 1 voxels beyond float32's range \(up to 1e\+39"):
        require_float32_range(Volume(huge), "lung_mask")
    huge[1, 2, 2] = 3e38  # within float32
    with pytest.raises(InputError, match="beyond float32's range"):
        require_finite(Volume(huge), "lung_mask")
    huge[0, 1, 1] = -3e38
    assert require_finite(Volume(huge)).shape == (2, 4, 4)
