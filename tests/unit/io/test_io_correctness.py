"""Outside files read right: big-endian palette colour as GDCM, the Modality LUT Sequence,
NIfTI geometry as nibabel (sform before qform), NaN kept, NIfTI-2, DICOMDIR, one-line errors
that never print a series description."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medanomaly.data.sources import real_data
from medanomaly.errors import InputError
from medanomaly.io import read, write
from medanomaly.types import Volume

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def pd(name: str):
    return real_data(f"pydicom/{name}")


# ------------------------------------------------------------------------------ DICOM pixels
@pytest.mark.parametrize("name", ["OBXXXX1A_expb.dcm", "OBXXXX1A_expb_2frame.dcm"])
def test_io_big_endian_palette_matches_gdcm(name):
    """pydicom reads 16-bit palette LUT data in the machine's byte order: a big-endian file came
    back all zeros. Now it equals GDCM (SimpleITK) and the little-endian copy of the image."""
    vol = read(pd(name))
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(pd(name)))).reshape(vol.array.shape)
    assert vol.n_components == 3 and np.ptp(vol.array) > 100
    np.testing.assert_array_equal(vol.array, ref)
    little = read(pd(name.replace("_expb", "")))
    np.testing.assert_array_equal(vol.array, little.array)


def test_io_palette_helper_leaves_the_dataset_alone():
    from medanomaly.io.dicom_pixels import _palette_in_native_order

    ds = pydicom.dcmread(pd("OBXXXX1A_expb.dcm"))
    before = bytes(ds.RedPaletteColorLookupTableData)
    swapped = _palette_in_native_order(ds)
    assert swapped is not ds and bytes(ds.RedPaletteColorLookupTableData) == before
    assert swapped.RedPaletteColorLookupTableData == pydicom.dcmread(pd("OBXXXX1A.dcm")).RedPaletteColorLookupTableData


def test_io_modality_lut_sequence_applied():
    """mlut_18.dcm maps its signed 12-bit stored values through a 4096-entry Modality LUT
    Sequence (no rescale tags); the LUT output is what we return, as pydicom computes it."""
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(pd("mlut_18.dcm"))
    assert "ModalityLUTSequence" in ds and "RescaleSlope" not in ds
    vol = read(pd("mlut_18.dcm"))
    expected = apply_modality_lut(ds.pixel_array, ds)
    np.testing.assert_array_equal(vol.array[0], expected)
    assert not np.array_equal(vol.array[0], ds.pixel_array)  # the LUT does change the values
    assert vol.meta["rescale_applied"] is True


def test_io_modality_lut_sequence_in_a_series(tmp_path):
    """A folder of LUT-mapped slices takes the general path (the fast rescale path would skip
    the LUT): each slice equals the single-file read."""
    ds = pydicom.dcmread(pd("mlut_18.dcm"))
    for k in range(3):
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0, 0, 2.5 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.{k + 1}"
        ds.save_as(tmp_path / f"s{k}.dcm")
    vol = read(tmp_path)
    single = read(pd("mlut_18.dcm"))
    assert vol.shape == (3, 512, 512) and vol.spacing[2] == pytest.approx(2.5)
    np.testing.assert_array_equal(vol.array[1], single.array[0])


# ------------------------------------------------------------------------------ NIfTI
NIFTI_TEMPLATES = [
    *(f"mricron/{n}" for n in (
        "AICHAmc.nii.gz", "HarvardOxford-cort-maxprob-thr0-1mm.nii.gz", "JHU-WhiteMatter-labels-1mm.nii.gz",
        "JHU-WhiteMatter-labels-2mm.nii.gz", "aal.nii.gz", "brodmann.nii.gz", "ch2.nii.gz", "ch2bet.nii.gz",
        "ch2better.nii.gz", "inia19-NeuroMaps.nii.gz", "inia19-t1-brain.nii.gz", "jhu189.nii.gz",
        "natbrainlab.nii.gz",
    )),
    "nilearn/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "nilearn/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
]  # fmt: skip


@pytest.mark.parametrize("key", NIFTI_TEMPLATES)
def test_io_nifti_templates_geometry_equals_nibabel(key):
    """Geometry = nibabel's affine (sform when set, else qform), RAS -> LPS; ITK used the qform
    and was off by up to 126 mm (and flipped x on jhu189). Voxels equal nibabel's."""
    path = real_data(key)
    vol = read(path)
    img = nib.load(str(path))
    np.testing.assert_allclose(vol.affine_lps, LPS @ img.affine, atol=1e-5)
    np.testing.assert_array_equal(vol.array, np.asanyarray(img.dataobj).transpose(2, 1, 0))
    code = int(img.header["sform_code"])
    assert vol.meta["description"].startswith(f"NIfTI-1 geometry from {'sform' if code else 'qform'}")


def _nifti(tmp_path, name, data, sform=None, sform_code=0, qform=None, qform_code=0, cls=nib.Nifti1Image):
    img = cls(data, None)
    if qform is not None:
        img.set_qform(qform, code=qform_code)
    if sform is not None:
        img.set_sform(sform, code=sform_code)
    else:
        img.header["sform_code"] = 0
    path = tmp_path / name
    nib.save(img, path)
    return path


def test_io_nifti_pair_read_as_the_single_file_and_analyze_refused(tmp_path):
    """SPM writes NIfTI-1 as a .hdr + .img pair: it was "unsupported file type '.hdr'". Read from either file, it is
    the single-file NIfTI's image and grid; ANALYZE 7.5 (no NIfTI magic, no defined orientation) and a lone half of
    a pair are refused in one line."""
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    sform = np.array([[0, 0, 2.0, -10], [1.5, 0, 0, 20], [0, 1.2, 0, 30], [0, 0, 0, 1]])
    single = read(_nifti(tmp_path, "one.nii.gz", data, sform=sform, sform_code=1))
    _nifti(tmp_path, "pair.hdr", data, sform=sform, sform_code=1, cls=nib.Nifti1Pair)
    for name in ("pair.hdr", "pair.img"):
        got = read(tmp_path / name)
        assert np.array_equal(got.array, single.array) and got.same_grid(single)
    nib.save(nib.AnalyzeImage(data, np.eye(4)), tmp_path / "old.hdr")
    with pytest.raises(InputError, match=r"ANALYZE 7.5 image .*convert it to NIfTI"):
        read(tmp_path / "old.hdr")
    (tmp_path / "lone.img").write_bytes((tmp_path / "pair.img").read_bytes())
    with pytest.raises(InputError, match=r"one file of a NIfTI pair: its \.hdr is not beside it"):
        read(tmp_path / "lone.img")
    import gzip  # a pair's header named .nii: nibabel read its header bytes as the voxels (0 .. 16256), no word

    (tmp_path / "header.nii").write_bytes((tmp_path / "pair.hdr").read_bytes())
    (tmp_path / "header.nii.gz").write_bytes(gzip.compress((tmp_path / "pair.hdr").read_bytes()))
    for name in ("header.nii", "header.nii.gz"):
        with pytest.raises(InputError, match=r"the header of a NIfTI pair \(magic ni1 / ni2\) named as a single-file"):
            read(tmp_path / name)


def test_io_nifti_scaling_past_float32_is_read_in_float64(tmp_path, recwarn):
    """int16 voxels with scl_slope 1e38 were scaled in float32: 60 of 64 voxels became inf (and numpy's overflow
    warning reached the terminal). The scaled values are kept finite, in float64; a usual slope stays float32."""
    data = np.arange(64, dtype=np.int16).reshape(4, 4, 4)
    for slope, dtype in ((1e38, np.float64), (0.5, np.float32)):
        image = nib.Nifti1Image(data, np.eye(4))
        image.header.set_slope_inter(slope, 0.0)
        nib.save(image, tmp_path / "scaled.nii")
        got = read(tmp_path / "scaled.nii")
        assert got.array.dtype == dtype and np.isfinite(got.array).all()
        np.testing.assert_allclose(got.array.max(), 63 * slope, rtol=1e-6)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_io_nifti_voxel_offset_inside_the_header_is_refused(tmp_path):
    """A single-file NIfTI whose vox_offset is 0: nibabel read the header's own bytes as the voxels (a 4 x 4 x 4 image
    of 1000..1063 came back as 0..16256, without a word; ITK read it two voxels shifted). Refused in one line."""
    import struct

    data = (np.arange(64, dtype=np.int16) + 1000).reshape(4, 4, 4)
    raw = bytearray(_nifti(tmp_path, "ok.nii", data, sform=np.eye(4), sform_code=1).read_bytes())
    assert read(tmp_path / "ok.nii").array.min() == 1000
    raw[108:112] = struct.pack("<f", 0.0)
    (tmp_path / "zero.nii").write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"zero\.nii: vox_offset 0 points inside the 348-byte header"):
        read(tmp_path / "zero.nii")


def test_io_nifti_sform_else_qform_else_pixdim(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    qform = np.diag([2.0, 2.0, 3.0, 1.0])
    qform[:3, 3] = (-10, 20, 30)
    sform = np.array([[-1.5, 0, 0, 90], [0, 1.5, 0, -100], [0, 0, 2.0, -50], [0, 0, 0, 1]])
    both = _nifti(tmp_path, "both.nii.gz", data, sform=sform, sform_code=4, qform=qform, qform_code=1)
    vol = read(both)
    np.testing.assert_allclose(vol.affine_lps, LPS @ sform, atol=1e-6)
    assert vol.meta["description"] == "NIfTI-1 geometry from sform (code 4: MNI)"
    only_q = _nifti(tmp_path, "q.nii.gz", data, qform=qform, qform_code=1)
    vol = read(only_q)
    np.testing.assert_allclose(vol.affine_lps, LPS @ qform, atol=1e-6)
    assert vol.meta["description"] == "NIfTI-1 geometry from qform (code 1: scanner)"
    neither = _nifti(tmp_path, "none.nii.gz", data, qform=qform, qform_code=0)
    vol = read(neither)
    np.testing.assert_allclose(vol.affine_lps, LPS @ nib.load(neither).affine, atol=1e-6)
    assert "pixel sizes" in vol.meta["description"]
    np.testing.assert_array_equal(vol.array, data.transpose(2, 1, 0))


def test_io_nifti_sheared_sform_kept_exactly(tmp_path):
    sform = np.array([[1.0, 0.3, 0, 5], [0, 1.0, 0, 6], [0.1, 0, 2.0, 7], [0, 0, 0, 1]])
    path = _nifti(tmp_path, "shear.nii", np.ones((3, 4, 5), np.float32), sform=sform, sform_code=2)
    np.testing.assert_allclose(read(path).affine_lps, LPS @ sform, atol=1e-6)


@pytest.mark.parametrize(("unit", "mm_per_unit"), [("meter", 1000.0), ("micron", 0.001), ("mm", 1.0), ("unknown", 1.0)])
def test_io_nifti_spatial_unit_is_converted_to_mm_as_itk_does(tmp_path, unit, mm_per_unit):
    """nibabel leaves the affine in the header's unit (``xyzt_units``): a 10 mm cube in a file stored in metres read
    as 10 micrometres (``quantify``: 0.000 mL), one in microns a million times too long. ITK converts; so do we."""
    affine = np.array([[0.8, 0, 0, -50.0], [0, 0.9, 0, 20.0], [0, 0, 2.0, 100.0], [0, 0, 0, 1]])
    affine[:3] /= mm_per_unit  # the same grid, written in the header's unit
    image = nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), affine)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units(xyz=unit)
    nib.save(image, tmp_path / "unit.nii.gz")
    got, itk = read(tmp_path / "unit.nii.gz"), sitk.ReadImage(str(tmp_path / "unit.nii.gz"))
    np.testing.assert_allclose(got.spacing, (0.8, 0.9, 2.0), rtol=1e-5)
    np.testing.assert_allclose(got.origin, (50.0, -20.0, 100.0), rtol=1e-5)
    np.testing.assert_allclose(got.spacing, itk.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(got.origin, itk.GetOrigin(), rtol=1e-5, atol=1e-6)
    assert got.meta["description"].endswith({"meter": ", metres to mm", "micron": ", microns to mm"}.get(unit, ")"))


def test_io_sheared_volume_written_as_nifti_keeps_its_grid(tmp_path, capfd):
    """ITK's NIfTI writer coerced a sheared direction to an orthogonal one ("Non-orthogonal direction matrix coerced
    to orthogonal" on stderr): a sheared NIfTI read and written again (preprocess, segment, a predicted map) came back
    on another grid. Now written by nibabel with the sform; NRRD kept it already. Multi-component too."""
    sform = np.array([[1.0, 0.5, 0, 5], [0, 1.0, 0, 6], [0.1, 0, 2.0, 7], [0, 0, 0, 1]])
    sheared = read(_nifti(tmp_path, "shear.nii", np.arange(60, dtype=np.int16).reshape(3, 4, 5), sform=sform,
                          sform_code=2))  # fmt: skip
    for name in ("again.nii.gz", "again.nii", "again.nrrd"):
        back = read(write(sheared, tmp_path / name))
        np.testing.assert_allclose(back.affine_lps, LPS @ sform, atol=1e-5)
        assert back.array.dtype == np.int16 and np.array_equal(back.array, sheared.array)
    channels = sheared.with_array(np.stack([sheared.array, -sheared.array], axis=-1))
    back = read(write(channels, tmp_path / "channels.nii.gz"))
    assert np.array_equal(back.array, channels.array) and np.allclose(back.affine_lps, LPS @ sform, atol=1e-5)
    assert "coerced" not in capfd.readouterr().err


def test_io_nifti_nan_inf_kept_and_scaling(tmp_path):
    data = np.linspace(0, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    data[0, 0, 0], data[1, 1, 1], data[1, 2, 3] = np.nan, np.inf, -np.inf
    vol = read(_nifti(tmp_path, "nan.nii.gz", data, sform=np.eye(4), sform_code=1))
    assert np.isnan(vol.array).sum() == 1 and np.isposinf(vol.array).sum() == 1 and np.isneginf(vol.array).sum() == 1
    np.testing.assert_array_equal(vol.array, data.transpose(2, 1, 0))
    header = nib.Nifti1Header()  # written by hand: nib.save would recompute the scaling
    header.set_data_dtype(np.int16)
    header.set_data_shape((2, 3, 4))
    header.set_slope_inter(0.5, -3.0)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    stored = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    (tmp_path / "scaled.nii").write_bytes(header.binaryblock + bytes(4) + stored.tobytes(order="F"))
    vol = read(tmp_path / "scaled.nii")
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, (stored * 0.5 - 3.0).transpose(2, 1, 0))
    np.testing.assert_allclose(vol.array, np.asanyarray(nib.load(tmp_path / "scaled.nii").dataobj).transpose(2, 1, 0))


def test_io_nifti2_read_and_cifti_refused(tmp_path):
    data = np.random.default_rng(0).normal(size=(6, 7, 8)).astype(np.float32)
    affine = np.diag([1.2, 1.3, 2.5, 1.0])
    affine[:3, 3] = (-5, 4, 3)
    path = _nifti(tmp_path, "two.nii.gz", data, sform=affine, sform_code=1, cls=nib.Nifti2Image)
    vol = read(path)
    np.testing.assert_array_equal(vol.array, data.transpose(2, 1, 0))
    np.testing.assert_allclose(vol.affine_lps, LPS @ affine, atol=1e-6)
    assert vol.meta["description"].startswith("NIfTI-2 geometry from sform")
    nibabel_tests = Path(nib.__file__).parent / "tests" / "data"
    with pytest.raises(InputError, match=r"example_nifti2.nii.gz: 4D image \(2 volumes, 0..1\): info, predict") as err:
        read(nibabel_tests / "example_nifti2.nii.gz")
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="row_major.dconn.nii: CIFTI-2 file"):
        read(nibabel_tests / "row_major.dconn.nii")


def test_io_nifti_damaged_one_line(tmp_path):
    good = real_data("mricron/ch2.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.nii").write_bytes(b"not a nifti header" * 40)
    for name in ("cut.nii.gz", "junk.nii"):
        with pytest.raises(InputError) as err:
            read(tmp_path / name)
        text = str(err.value)
        assert text.startswith(str(tmp_path / name)) and "\n" not in text and len(text) < 400
    small = _nifti(tmp_path, "small.nii", np.arange(64, dtype=np.int16).reshape(4, 4, 4), sform=np.eye(4), sform_code=1)
    corrupt = bytearray(gzip.compress(small.read_bytes()))
    corrupt[20:40] = b"\xff" * 20  # a damaged deflate stream: zlib.error, which is no OSError
    (tmp_path / "corrupt.nii.gz").write_bytes(bytes(corrupt))
    with pytest.raises(InputError, match=r"corrupt\.nii\.gz: not a readable nifti image \("):
        read(tmp_path / "corrupt.nii.gz")
    (tmp_path / "plain.nii.gz").write_bytes(b"x")  # nibabel: "File <path> is not a gzip file"
    with pytest.raises(InputError, match=r"not a readable nifti image \(the file is not a gzip file\)$"):
        read(tmp_path / "plain.nii.gz")  # it read "(File the file is not a gzip file)"


def test_io_itk_error_names_file_once_without_cut_off(tmp_path):
    bad = tmp_path / "broken.mha"
    bad.write_text("ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\nElementDataFile = LOCAL\n")
    with pytest.raises(InputError) as err:
        read(bad)
    text = str(err.value)
    assert text.startswith(f"{bad}: not a readable metaimage image") and text.count(str(bad)) == 1 and "..." not in text


def test_io_metaimage_with_its_data_cut_short_or_not_decompressing_is_one_line(tmp_path, capfd):
    """An .mha whose voxels end early: MetaIO printed "MetaImage: M_ReadElementsData: data not read completely" and
    "   ideal = 102 : actual = 62" on the terminal while ITK read the data, and the reason was "No such file or
    directory". The remark is the reason now, and nothing else reaches the terminal."""
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((10, 64, 64), np.int16)), str(tmp_path / "whole.mha"), True)
    (tmp_path / "cut.mha").write_bytes((tmp_path / "whole.mha").read_bytes()[:-40])
    with pytest.raises(InputError, match=r"cut\.mha: not a readable metaimage image \(truncated: data not read completely\)$"):
        read(tmp_path / "cut.mha")
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    lie = b"ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\nCompressedData = True\n"
    (tmp_path / "lie.mha").write_bytes(lie + b"ElementDataFile = LOCAL\n" + bytes(range(48)))  # not zlib data
    with pytest.raises(InputError, match=r"lie\.mha: not a readable metaimage image \(data marked CompressedData = "
                                         r"True do not decompress\)$"):  # fmt: skip
        read(tmp_path / "lie.mha")  # ITK printed "Uncompress failed" and returned uninitialised memory as the image
    assert capfd.readouterr() == ("", "")


# ------------------------------------------------------------------------------ DICOMDIR, series
def test_io_dicomdir_lists_series_by_uid_and_reads_the_chosen_one():
    dicomdir = pd("DICOMDIR")
    with pytest.raises(InputError) as err:
        read(dicomdir)
    text = str(err.value)
    assert text.startswith(f"{dicomdir}: DICOMDIR indexes 13 series, choose one") and "\n" not in text
    assert "Routine Brain" not in text and "ANGIO" not in text  # series descriptions never printed
    uid = "1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.6"  # the 5-slice CT
    vol = read(dicomdir, series_uid=uid)
    folder = read(dicomdir.parent / "98892001", series_uid=uid)
    assert vol.meta["series_uid"] == uid and vol.meta["n_series"] == 13
    assert vol.same_grid(folder)
    np.testing.assert_array_equal(vol.array, folder.array)
    with pytest.raises(InputError, match="series 1.2.3 not in DICOMDIR"):
        read(dicomdir, series_uid="1.2.3")


def test_io_dicomdir_broken_references(tmp_path):
    import shutil

    shutil.copytree(pd("DICOMDIR").parent, tmp_path / "media")
    shutil.rmtree(tmp_path / "media" / "98892003")
    shutil.rmtree(tmp_path / "media" / "77654033")
    shutil.rmtree(tmp_path / "media" / "98892001")
    with pytest.raises(InputError, match=r"DICOMDIR: DICOMDIR references 31 file\(s\), none found \(e.g. "):
        read(tmp_path / "media" / "DICOMDIR")
    with pytest.raises(InputError, match="DICOMDIR that references no image files"):
        read(pd("DICOMDIR-empty.dcm"))
    with pytest.raises(InputError, match="DICOMDIR whose records cannot be followed"):
        read(pd("DICOMDIR-nopatient"))


def test_io_multi_series_error_names_series_by_uid_only(tmp_path, lung_crop, series_writer):
    """SeriesDescription is free text and can hold a name: the error lists UIDs, never it."""
    for k, desc in enumerate(["DOE^JOHN chest", "Smith, Anna 1944"]):
        series_writer(lung_crop, tmp_path / f"s{k}", series_uid=f"1.2.826.0.1.3680043.8.498.{k + 70}", description=desc)
    with pytest.raises(InputError) as err:
        read(tmp_path)
    text = str(err.value)
    assert "1.2.826.0.1.3680043.8.498.70 (CT, 12 files)" in text and "\n" not in text
    assert "DOE" not in text and "Smith" not in text
    from medanomaly.io.dicom_series import list_series

    assert not hasattr(list_series(tmp_path)[0], "description")


def test_io_nifti_writer_and_reader_agree(tmp_path):
    """Our own NIfTI writer (SimpleITK) and reader (nibabel) agree on geometry."""
    direction = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    src = Volume(np.arange(60, dtype=np.int16).reshape(3, 4, 5), spacing=(0.5, 0.8, 2.0), origin=(1, 2, 3),
                 direction=direction)  # fmt: skip
    from medanomaly.io import write

    back = read(write(src, tmp_path / "v.nii.gz"))
    assert back.same_grid(src, tol=1e-5)
    np.testing.assert_array_equal(back.array, src.array)


def test_io_nifti_writer_and_reader_agree_on_a_multi_channel_image(tmp_path):
    """Our writer (SimpleITK) stores channels as a vector image (5D, intent 1007); our reader refused its own output
    ("5D image (3 volumes)"): `preprocess` with `multi_window` wrote a file `info`, `predict` and the service could
    not read (a fusion run's two-channel upload). A 5D image that is not a vector, or of too many components, is
    still refused."""
    from medanomaly.io import write
    from medanomaly.io.nifti import MAX_COMPONENTS

    data = np.random.default_rng(0).normal(size=(3, 4, 5, 3)).astype(np.float32)
    src = Volume(data, spacing=(0.5, 0.8, 2.0), origin=(1, 2, 3))
    back = read(write(src, tmp_path / "v.nii.gz"))
    assert back.same_grid(src, tol=1e-5) and back.n_components == 3 and back.meta["channels"] == 3
    np.testing.assert_array_equal(back.array, data)
    assert nib.load(tmp_path / "v.nii.gz").header["intent_code"] == 1007
    for intent, shape, words in ((0, (5, 4, 3, 1, 2), "5D image (2 volumes)"),
                                 (1007, (5, 4, 3, 2, 2), "5D image (4 volumes)"),
                                 (1007, (5, 4, 3, 1, MAX_COMPONENTS + 1), "vector image of 65 components")):  # fmt: skip
        image = nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4))
        image.header["intent_code"] = intent
        nib.save(image, tmp_path / "odd.nii.gz")
        with pytest.raises(InputError, match=rf"odd.nii.gz: {re.escape(words)}"):
            read(tmp_path / "odd.nii.gz")


def test_io_info_range_ignores_nan_and_counts_them(tmp_path, capsys):
    """`medanomaly info` shows the range of the finite voxels and how many NaN/Inf there are."""
    from medanomaly.cli.info import describe, print_human

    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    data[0, 0, 0], data[1, 1, 1] = np.nan, np.inf
    path = _nifti(tmp_path, "nan.nii.gz", data, sform=np.eye(4), sform_code=1)
    info = describe(path)
    assert (info["min"], info["max"], info["nonfinite_voxels"]) == (1.0, 23.0, 2)
    print_human(info)
    out = " ".join(capsys.readouterr().out.split())  # rich may wrap the row
    assert "1.0 .. 23.0 (finite voxels; 2 NaN/Inf voxel(s) not counted)" in out, out
    assert describe(real_data("pydicom/CT_small.dcm"))["nonfinite_voxels"] == 0


def test_io_nifti_rgb_and_2d(tmp_path):
    rgb = np.zeros((4, 5, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = np.arange(120).reshape(4, 5, 6)
    rgb["B"] = 7
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "rgb.nii.gz")
    vol = read(tmp_path / "rgb.nii.gz")
    assert vol.shape == (6, 5, 4) and vol.n_components == 3 and vol.meta["photometric"] == "RGB"
    np.testing.assert_array_equal(vol.array[..., 0], rgb["R"].transpose(2, 1, 0))
    assert np.all(vol.array[..., 2] == 7) and np.all(vol.array[..., 1] == 0)
    flat = np.arange(12, dtype=np.float32).reshape(3, 4)
    nib.save(nib.Nifti1Image(flat, np.diag([0.5, 0.7, 1.0, 1.0])), tmp_path / "slice.nii")
    vol = read(tmp_path / "slice.nii")
    assert vol.shape == (1, 4, 3) and vol.spacing[:2] == pytest.approx((0.5, 0.7))
    np.testing.assert_array_equal(vol.array[0], flat.T)
