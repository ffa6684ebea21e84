"""Single DICOM files from pydicom-data: every shipped compressed syntax, multi-frame, colour, geometry."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medanomaly.data.sources import real_data
from medanomaly.errors import InputError
from medanomaly.io import read
from medanomaly.types import SAFE_META_KEYS


def pd(name: str):
    return real_data(f"pydicom/{name}")


def syntax(name: str) -> str:
    return str(pydicom.dcmread(pd(name), stop_before_pixels=True).file_meta.TransferSyntaxUID)


# (compressed file, uncompressed reference, transfer syntax UID, max abs difference allowed)
LOSSLESS_PAIRS = [
    ("MR_small_jp2klossless.dcm", "MR_small.dcm", "1.2.840.10008.1.2.4.90", 0),  # JPEG 2000 lossless
    ("RG1_J2KR.dcm", "RG1_UNCR.dcm", "1.2.840.10008.1.2.4.90", 0),
    ("US1_J2KR.dcm", "US1_UNCR.dcm", "1.2.840.10008.1.2.4.90", 0),  # YBR_RCT -> RGB
    ("JPEG2000.dcm", "JPEG2000_UNC.dcm", "1.2.840.10008.1.2.4.91", 0),  # JPEG 2000
    ("US1_J2KI.dcm", "US1_UNCI.dcm", "1.2.840.10008.1.2.4.91", 0),  # YBR_ICT -> RGB
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm", "1.2.840.10008.1.2.4.80", 0),  # JPEG-LS lossless
    ("SC_rgb_jls_lossy_line.dcm", "SC_rgb.dcm", "1.2.840.10008.1.2.4.81", 2),  # JPEG-LS near-lossless
    ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb.dcm", "1.2.840.10008.1.2.4.70", 0),  # JPEG lossless SV1
    ("SC_rgb_jpeg_dcmtk.dcm", "SC_rgb.dcm", "1.2.840.10008.1.2.4.50", 8),  # JPEG baseline, YBR
    ("MR_small_RLE.dcm", "MR_small.dcm", "1.2.840.10008.1.2.5", 0),  # RLE
    ("SC_rgb_rle.dcm", "SC_rgb.dcm", "1.2.840.10008.1.2.5", 0),
    ("emri_small_RLE.dcm", "emri_small.dcm", "1.2.840.10008.1.2.5", 0),  # RLE, multi-frame
    ("MR_small_bigendian.dcm", "MR_small.dcm", "1.2.840.10008.1.2.2", 0),  # big endian
    ("SC_ybr_full_uncompressed.dcm", "SC_rgb.dcm", "1.2.840.10008.1.2.1", 8),  # native YBR_FULL
]


@pytest.mark.parametrize(("name", "reference", "tsuid", "tol"), LOSSLESS_PAIRS, ids=[p[0] for p in LOSSLESS_PAIRS])
def test_io_dicom_compressed_matches_uncompressed(name, reference, tsuid, tol):
    assert syntax(name) == tsuid
    vol, ref = read(pd(name)), read(pd(reference))
    assert vol.shape == ref.shape and vol.n_components == ref.n_components
    assert vol.array.dtype.isnative
    diff = np.abs(vol.array.astype(np.int64) - ref.array.astype(np.int64))
    assert diff.max() <= tol
    assert vol.same_grid(ref)


def test_io_dicom_jpeg_extended_12bit():
    """JPEG extended (process 2/4): decodes to the NM image (lossy, so close to the uncompressed one)."""
    assert syntax("JPGExtended.dcm") == "1.2.840.10008.1.2.4.51"
    vol, ref = read(pd("JPGExtended.dcm")), read(pd("JPEG2000_UNC.dcm"))
    assert vol.shape == ref.shape == (1, 1024, 256)
    assert np.corrcoef(vol.array.ravel(), ref.array.ravel())[0, 1] > 0.9
    assert vol.spacing[:2] == (2.26, 2.26)


def test_io_dicom_deflated():
    assert syntax("image_dfl.dcm") == "1.2.840.10008.1.2.1.99"
    vol = read(pd("image_dfl.dcm"))
    assert vol.shape == (1, 512, 512) and np.ptp(vol.array) > 100


def test_io_dicom_echo_multiframe_jpeg_baseline():
    vol = read(pd("color3d_jpeg_baseline.dcm"))
    assert vol.shape == (120, 480, 640) and vol.n_components == 3
    assert vol.array.dtype == np.uint8 and vol.meta["n_frames"] == 120
    assert vol.meta["photometric"] == "RGB" and vol.modality == "US"
    first, middle = vol.array[0].astype(np.int16), vol.array[60].astype(np.int16)
    assert np.abs(first - middle).mean() > 0.1  # frames differ: a moving heart


def test_io_dicom_palette_colour_matches_gdcm():
    vol = read(pd("OBXXXX1A.dcm"))
    assert vol.n_components == 3 and vol.array.dtype == np.uint8
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(pd("OBXXXX1A.dcm"))))
    np.testing.assert_array_equal(vol.array, ref.reshape(vol.array.shape))
    np.testing.assert_array_equal(read(pd("OBXXXX1A_rle_2frame.dcm")).array[0], vol.array[0])


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR2_UNCR.dcm", "rtdose.dcm"])
def test_io_dicom_geometry_vs_simpleitk(name):
    vol = read(pd(name))
    ref = sitk.ReadImage(str(pd(name)))
    np.testing.assert_allclose(vol.spacing[:2], ref.GetSpacing()[:2], rtol=1e-5)
    np.testing.assert_allclose(vol.origin, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(vol.direction.ravel(), ref.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(vol.array, sitk.GetArrayFromImage(ref).reshape(vol.shape), rtol=1e-6)


def test_io_dicom_ct_hu_and_safe_meta():
    vol = read(pd("CT_small.dcm"))
    ds = pydicom.dcmread(pd("CT_small.dcm"))
    np.testing.assert_array_equal(vol.array[0], ds.pixel_array.astype(np.int32) * 1 - 1024)
    assert vol.meta["units"] == "HU" and vol.meta["rescale_applied"] is True
    assert set(vol.meta) <= SAFE_META_KEYS
    text = repr(dict(vol.meta))
    assert str(ds.PatientName) not in text and str(ds.PatientID) not in text


def test_io_dicom_enhanced_ct_multiframe_geometry():
    """eCT_Supplemental: 2 frames with per-frame positions; physical voxel positions match SimpleITK."""
    vol = read(pd("eCT_Supplemental.dcm"))
    ref = sitk.ReadImage(str(pd("eCT_Supplemental.dcm")))
    ref_arr = sitk.GetArrayFromImage(ref)
    assert vol.shape == (2, 512, 512) and vol.meta["units"] == "HU"
    assert vol.spacing == pytest.approx(ref.GetSpacing(), abs=1e-4)
    for k in range(2):  # each of our slices equals the SimpleITK slice at the same physical place
        point = vol.index_to_physical((3, 5, k))
        idx = np.round(ref.TransformPhysicalPointToContinuousIndex(tuple(point))).astype(int)
        assert (idx[0], idx[1]) == (3, 5)
        np.testing.assert_array_equal(vol.array[k], ref_arr[idx[2]])


def test_io_dicom_monochrome1_inverted_like_gdcm():
    vol = read(pd("RG3_UNCR.dcm"))
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(pd("RG3_UNCR.dcm"))))
    np.testing.assert_array_equal(vol.array[0], ref[0])
    assert vol.meta["photometric"] == "MONOCHROME2" and vol.modality == "CR"
    # The file's window (centre 550, width 1024 on the 10-bit MONOCHROME1 values) selects the
    # same pixels on the inverted array: its centre becomes 1023 - 550.
    assert vol.meta["window_center"] == 473.0 and vol.meta["window_width"] == 1024.0
    ds = pydicom.dcmread(pd("RG3_UNCR.dcm"))
    raw = ds.pixel_array
    c, w = 550.0, 1024.0
    inside_raw = np.abs(raw - c) < w / 4
    inside_ours = np.abs(vol.array[0].astype(np.float64) - vol.meta["window_center"]) < w / 4
    np.testing.assert_array_equal(inside_raw, inside_ours)


def test_io_dicom_preamble_less_file_is_read():
    vol = read(pd("OT-PAL-8-face.dcm"))
    assert vol.shape == (1, 480, 640) and vol.n_components == 3


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("MR_truncated.dcm", "truncated DICOM"),
        ("rtplan.dcm", "not an image"),
        ("no_meta.dcm", "not a DICOM file"),
    ],
)
def test_io_dicom_bad_files(name, reason):
    with pytest.raises(InputError) as err:
        read(pd(name))
    assert reason in str(err.value) and name in str(err.value)


def test_io_dicom_series_uid_checked_for_files():
    with pytest.raises(InputError, match="belongs to series"):
        read(pd("CT_small.dcm"), series_uid="1.2.3")


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm", "examples_ybr_color.dcm"])
def test_io_dicom_pillow_jpeg_path_equals_pydicom(name):
    from medanomaly.io.dicom_pixels import _pillow_jpeg_frames

    ds = pydicom.dcmread(pd(name))
    fast = _pillow_jpeg_frames(ds)
    assert fast is not None
    assert np.abs(fast.astype(int) - ds.pixel_array.astype(int)).max() <= 5


@pytest.mark.parametrize(
    ("name", "shape", "components"),
    [("GREYSCALE_IMAGE.dcm", (1, 768, 1024), 1), ("RGB_IMAGE.dcm", (1, 768, 1024), 3)],
)  # fmt: skip
def test_io_dicom_deid_ultrasounds_vs_simpleitk(name, shape, components):
    path = real_data("deid/ultrasounds") / name
    vol = read(path)
    assert vol.shape == shape and vol.n_components == components and vol.modality == "US"
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    np.testing.assert_array_equal(vol.array, ref.reshape(vol.array.shape))


def test_io_dicom_deid_multiframe_ultrasound():
    from pydicom.pixels import pixel_array

    path = real_data("deid/ultrasounds") / "ultrasound-multiframe.dcm"
    vol = read(path)
    assert vol.shape == (30, 600, 800) and vol.n_components == 3 and vol.meta["n_frames"] == 30
    np.testing.assert_array_equal(vol.array[29], pixel_array(path, index=29))


def test_io_dicom_enhanced_per_frame_rescale_and_order(tmp_path):
    """Frames stored out of order with their own rescale: sorted along the normal, each rescaled."""
    import copy

    ds = pydicom.dcmread(pd("eCT_Supplemental.dcm"))
    ref = read(pd("eCT_Supplemental.dcm"))
    ds.PerFrameFunctionalGroupsSequence = ds.PerFrameFunctionalGroupsSequence[::-1]  # swap frames...
    frames = ds.pixel_array[::-1].copy()
    item = copy.deepcopy(ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence)
    ds.PerFrameFunctionalGroupsSequence[0].PixelValueTransformationSequence = item
    ds.PerFrameFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleIntercept = "-1000"
    frames[0] = np.clip(frames[0].astype(np.int32) - 24, 0, None)  # ...and re-encode frame 0 by +24 HU
    ds.PixelData = frames.astype(np.uint16).tobytes()
    ds.save_as(tmp_path / "ect.dcm")
    vol = read(tmp_path / "ect.dcm")
    assert vol.same_grid(ref)
    np.testing.assert_array_equal(vol.array[1:], ref.array[1:])  # (frames are sorted along the normal)
    expected = np.maximum(ref.array[0], -1000)
    np.testing.assert_array_equal(vol.array[0], expected)


def test_io_dicom_ultrasound_region_calibration():
    """US without PixelSpacing: mm from the tissue region's PhysicalDelta (cm); agrees with
    PixelSpacing where a file has both (deid RGB_IMAGE)."""
    echo = read(pd("color3d_jpeg_baseline.dcm"))
    assert echo.spacing[:2] == pytest.approx((0.5105, 0.5105), abs=1e-4)
    both = real_data("deid/ultrasounds") / "RGB_IMAGE.dcm"
    ds = pydicom.dcmread(both, stop_before_pixels=True)
    del ds.PixelSpacing
    from medanomaly.io.dicom_geometry import in_plane_spacing

    assert in_plane_spacing(ds) == pytest.approx(read(both).spacing[:2], rel=1e-5)


def test_io_dicom_enhanced_frames_stepping_sideways_are_a_tilted_stack(tmp_path):
    """An enhanced multi-frame CT whose frames step sideways (a gantry tilt) was stacked straight, along the normal:
    the second frame drawn 2.68 mm from where its header puts it, without a word. It is now a sheared grid, as a
    tilted series is; a shear no gantry makes is refused naming the file."""
    ds = pydicom.dcmread(pd("eCT_Supplemental.dcm"))
    second = ds.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0]
    first = [float(v) for v in ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient]
    second.ImagePositionPatient = [first[0], first[1] + 2.68, first[2] + 10.0]  # 15 degrees for 10 mm slices
    ds.save_as(tmp_path / "tilted.dcm")
    vol = read(tmp_path / "tilted.dcm")
    places = sorted(tuple(np.round(vol.index_to_physical((0.0, 0.0, k)), 3)) for k in (0.0, 1.0))  # either order
    assert places == sorted([tuple(first), (first[0], first[1] + 2.68, first[2] + 10.0)])
    assert vol.spacing[2] == pytest.approx(float(np.hypot(2.68, 10.0)), abs=1e-3)
    second.ImagePositionPatient = [first[0], first[1] + 20.0, first[2] + 10.0]  # 63 degrees
    ds.save_as(tmp_path / "steep.dcm")
    with pytest.raises(InputError, match=r"steep.dcm: slices are sheared by 63.4 deg, more than a gantry tilts"):
        read(tmp_path / "steep.dcm")


@pytest.mark.parametrize(("factor", "expected"), [(1.25, 0.08), (None, 0.1), (0.0, 0.1), (50.0, 0.1)])
def test_io_dicom_imager_spacing_corrected_by_the_magnification_factor(tmp_path, factor, expected):
    """A projection radiograph without PixelSpacing: its ImagerPixelSpacing is at the detector, and the object
    plane's is that over the EstimatedRadiographicMagnificationFactor (as Cornerstone calibrates it): a mammography
    magnification view at 1.8 had measured every lesion 1.8 times too long. A factor outside 1..10 is ignored."""
    ds = pydicom.dcmread(pd("CT_small.dcm"))
    del ds.PixelSpacing
    ds.Modality, ds.ImagerPixelSpacing = "DX", [0.1, 0.1]
    if factor is not None:
        ds.EstimatedRadiographicMagnificationFactor = factor
    ds.save_as(tmp_path / "dx.dcm")
    assert read(tmp_path / "dx.dcm").spacing[:2] == pytest.approx((expected, expected), rel=1e-9)


def test_io_dicom_cine_frames_are_time_and_are_not_measured_as_a_volume(tmp_path):
    """An ultrasound cine (FrameIncrementPointer: FrameTime) is stacked on z with spacing 1: z is time. quantify
    summed its frames into "mL" and a 3D model took it as slices; both now refuse it in one line."""
    from medanomaly.quantify.labels import measure_labels

    echo = read(pd("color3d_jpeg_baseline.dcm"))
    assert echo.meta["frame_axis"] == "time" and echo.shape[0] == 120
    assert read(pd("emri_small.dcm")).meta.get("frame_axis") is None  # enhanced MR: frames are slices
    from medanomaly.types import Volume

    grey = Volume(echo.array[:4, :, :, 0], spacing=echo.spacing, meta={"frame_axis": "time", "modality": "US"})
    mask = grey.with_array((grey.array > 100).astype(np.uint8))
    with pytest.raises(InputError, match=r"measuring a lesion needs slices in space, got a cine loop of 4 frames"):
        measure_labels(mask, grey)


def test_io_dicom_rescale_that_overflows_float32_or_blanks_the_image(tmp_path):
    """RescaleSlope 1e38 made every pixel inf (float32, with numpy's overflow warning on the terminal): the values are
    kept finite in float64. RescaleSlope 0 made every pixel the intercept, a blank image read without a word:
    refused in one line naming the file."""
    ds = pydicom.dcmread(pd("CT_small.dcm"))
    stored = ds.pixel_array.astype(np.float64)
    for slope, intercept in (("1e38", "0"), ("0", "-1024")):
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.save_as(tmp_path / f"slope{slope}.dcm")
    big = read(tmp_path / "slope1e38.dcm")
    assert big.array.dtype == np.float64 and np.isfinite(big.array).all()
    np.testing.assert_allclose(big.array[0], stored * 1e38, rtol=1e-12)
    with pytest.raises(InputError, match=r"slope0\.dcm: RescaleSlope 0: every pixel would be the intercept"):
        read(tmp_path / "slope0.dcm")


def test_io_dicom_negative_pixel_spacing_is_read_by_its_magnitude(tmp_path):
    """PixelSpacing -0.5 \\ -0.5 (a writer's sign error) fell back to 1 mm without a word, doubling every length;
    GDCM (SimpleITK) reads its magnitude, and so does this reader."""
    ds = pydicom.dcmread(pd("CT_small.dcm"))
    ds.PixelSpacing = ["-0.5", "-0.5"]
    ds.save_as(tmp_path / "minus.dcm")
    assert read(tmp_path / "minus.dcm").spacing[:2] == pytest.approx((0.5, 0.5))
    assert sitk.ReadImage(str(tmp_path / "minus.dcm")).GetSpacing()[:2] == pytest.approx((0.5, 0.5))


def test_io_dicom_without_any_pixel_spacing_says_so():
    """No PixelSpacing, ImagerPixelSpacing or ultrasound calibration: 1 mm is taken and meta["spacing_assumed"] says
    so (lengths are pixels); a file that states its spacing is not flagged."""
    ds = pydicom.dcmread(pd("CT_small.dcm"))
    from medanomaly.io.dicom import safe_meta

    assert "spacing_assumed" not in safe_meta(ds)
    del ds.PixelSpacing
    assert safe_meta(ds)["spacing_assumed"] is True


def test_io_dicom_frames_without_a_slice_spacing_name_the_axis(tmp_path):
    """pydicom's emri_small (10 frames, no PixelSpacing, SpacingBetweenSlices 1.2): x and y are taken as 1 mm, z
    is stated. Without its slice spacing either, z is taken too, and with a PixelSpacing only z (the note names it
    instead of calling every length pixels)."""
    from medanomaly.io.assumed_spacing import assumed_axes, spacing_note

    assert assumed_axes(read(pd("emri_small.dcm"))) == ("x", "y")
    ds = pydicom.dcmread(pd("emri_small.dcm"))
    del ds.SpacingBetweenSlices
    ds.save_as(tmp_path / "no_z.dcm")
    assert assumed_axes(read(tmp_path / "no_z.dcm")) == ("x", "y", "z")
    ds.PixelSpacing = ["0.9", "0.9"]
    ds.save_as(tmp_path / "only_z.dcm")
    only_z = read(tmp_path / "only_z.dcm")
    assert assumed_axes(only_z) == ("z",) and only_z.spacing == pytest.approx((0.9, 0.9, 1.0))
    assert "no spacing along z" in spacing_note(only_z)
    folder = tmp_path / "stack"  # a folder of slices with no positions and no thickness: stacked 1 mm apart
    folder.mkdir()
    for i in range(3):
        ds = pydicom.dcmread(pd("MR_small.dcm"))
        del ds.ImagePositionPatient, ds.SliceThickness
        ds.InstanceNumber, ds.SOPInstanceUID = i + 1, f"{ds.SOPInstanceUID}.{i + 1}"
        ds.save_as(folder / f"{i}.dcm")
    assert assumed_axes(read(folder)) == ("z",)


def test_io_dicom_damaged_rle_is_one_line_without_the_decoders_panic(tmp_path):
    """Damaged RLE segments make pylibjpeg-rle (Rust) panic: the panic became our one-line error, but its message
    and (RUST_BACKTRACE=1) a 220-line backtrace reached the terminal above it. The decoder's output is held back
    when the decode fails; a good RLE file reads as before."""
    import os
    import subprocess
    import sys

    data = bytearray(open(pd("MR_small_RLE.dcm"), "rb").read())
    for k in range(len(data) - 2000, len(data) - 1000, 37):
        data[k] ^= 0x55
    (tmp_path / "damaged.dcm").write_bytes(bytes(data))
    done = subprocess.run([sys.executable, "-m", "medanomaly.cli.app", "info", "damaged.dcm"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120, env={**os.environ, "RUST_BACKTRACE": "1"})  # fmt: skip
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr.strip().splitlines() == ["error: damaged.dcm: cannot decode pixel data (index out of bounds: the "
                                                "len is 8192 but the index is 8192)"], done.stderr[:400]  # fmt: skip
    assert read(pd("MR_small_RLE.dcm")).array.shape == (1, 64, 64)


def test_an_orientation_that_gives_no_plane_is_read_as_axial_and_said(tmp_path, ct_series):
    """ImageOrientationPatient with parallel or zero rows was read as the identity without a word (the stop-54
    left-alone item); ``meta["orientation_assumed"]`` says so, and ``info`` shows it."""
    import shutil

    source = real_data("pydicom/CT_small.dcm")
    for name, iop in (("parallel.dcm", [1, 0, 0, 1, 0, 0]), ("zero.dcm", [0, 0, 0, 0, 1, 0])):
        ds = pydicom.dcmread(source)
        ds.ImageOrientationPatient = iop
        ds.save_as(tmp_path / name)
        volume = read(tmp_path / name)
        assert volume.meta["orientation_assumed"] is True and np.array_equal(volume.direction, np.eye(3))
    assert "orientation_assumed" not in read(source).meta
    series = tmp_path / "series"
    shutil.copytree(ct_series, series)
    for path in series.iterdir():
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = [0, 0, 0, 0, 0, 0]
        ds.save_as(path)
    assert read(series).meta.get("orientation_assumed") is True


@pytest.mark.parametrize("damage", ["descriptor", "missing colour"])
def test_a_palette_lookup_table_that_does_not_fit_is_one_line(tmp_path, damage):
    """A Red Palette Color LUT Descriptor of 5 entries over 16-bit data (pydicom: "data type 'uint819' not
    understood") or a missing Green LUT was a traceback from ``read``; it is one InputError naming the lookup table."""
    ds = pydicom.dcmread(real_data("pydicom/OBXXXX1A.dcm"))
    if damage == "descriptor":
        ds.RedPaletteColorLookupTableDescriptor = [5, 0, 16]
    else:
        del ds.GreenPaletteColorLookupTableData
    ds.save_as(tmp_path / "bad.dcm")
    with pytest.raises(InputError, match="palette colour lookup table not usable") as caught:
        read(tmp_path / "bad.dcm")
    assert "\n" not in str(caught.value)
