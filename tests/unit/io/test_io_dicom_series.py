"""DICOM series folders: sorting, HU, geometry vs SimpleITK, multi-series, corrupt files, gaps."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medanomaly.data.sources import real_data
from medanomaly.errors import InputError
from medanomaly.io import read
from medanomaly.io.dicom_series import SKIP_LOG_LIMIT, list_series
from medanomaly.types import Volume


def sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_io_series_matches_source_and_simpleitk(ct_series, lung_crop):
    vol = read(ct_series)
    assert vol.shape == lung_crop.shape
    np.testing.assert_array_equal(vol.array, lung_crop.array)  # HU back exactly
    assert vol.array.dtype == np.int16
    assert vol.meta["units"] == "HU" and vol.meta["rescale_intercept"] == -1024.0
    ref = sitk_series(ct_series)
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(ref))
    np.testing.assert_allclose(vol.spacing, ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(vol.origin, ref.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(vol.direction.ravel(), ref.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(vol.origin, lung_crop.origin, atol=1e-3)
    assert vol.meta["skipped_files"] == [] and vol.meta["n_series"] == 1


def test_io_series_sorted_by_position_not_name(ct_series, ct_series_shuffled):
    a, b = read(ct_series), read(ct_series_shuffled)
    np.testing.assert_array_equal(a.array, b.array)
    assert a.spacing == b.spacing and a.origin == b.origin


def test_io_series_oblique_and_reversed_geometry(tmp_path, lung_crop, series_writer):
    """An oblique stack whose normal points inferiorly: sorted along the normal, same as SimpleITK."""
    angle = np.radians(20)
    rot = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    direction = rot @ np.diag([1.0, -1.0, -1.0])  # y and z flipped: det +1, normal towards feet
    src = Volume(lung_crop.array, spacing=(0.7, 0.8, 2.5), origin=(10.0, -20.0, 30.0), direction=direction,
                 meta={"modality": "CT"})  # fmt: skip
    series_writer(src, tmp_path, shuffle=True)
    vol = read(tmp_path)
    assert vol.same_grid(src, tol=1e-3)
    np.testing.assert_array_equal(vol.array, src.array)
    ref = sitk_series(tmp_path)
    np.testing.assert_allclose(vol.origin, ref.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(vol.direction.ravel(), ref.GetDirection(), atol=1e-5)


def test_io_series_real_pydicom_folder_vs_simpleitk():
    """A real CT series shipped by pydicom-data (dicomdirtests/98892001/CT5N)."""
    folder = real_data("pydicom/dicomdirtests") / "98892001" / "CT5N"
    vol = read(folder)
    ref = sitk_series(folder)
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(ref))
    np.testing.assert_allclose(vol.spacing, ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(vol.origin, ref.GetOrigin(), atol=1e-3)
    assert vol.modality == "CT"


def test_io_series_multi_series_needs_choice():
    folder = real_data("pydicom/dicomdirtests") / "77654033"
    with pytest.raises(InputError) as err:
        read(folder)
    message = str(err.value)
    assert "4 series" in message and "--series" in message and "CT, 4 files" in message
    assert "\n" not in message
    series = list_series(folder)
    assert [s.n_files for s in series] == [4, 1, 1, 1]
    cr = next(s for s in series if s.modality == "CR")
    vol = read(folder, series_uid=cr.series_uid)
    assert vol.modality == "CR" and vol.meta["n_series"] == 4
    with pytest.raises(InputError, match="not in folder"):
        read(folder, series_uid="1.2.3")


def test_io_series_corrupt_files_skipped_and_reported(tmp_path, lung_crop, series_writer, caplog):
    vol = lung_crop
    paths = series_writer(vol, tmp_path)
    (tmp_path / "garbage.dcm").write_bytes(b"\x00" * 50 + b"not dicom at all" * 10)
    extra = tmp_path / "cut.dcm"  # a truncated copy of a slice
    extra.write_bytes(paths[3].read_bytes()[:2000])
    with caplog.at_level(logging.WARNING, logger="medanomaly.io"):
        out = read(tmp_path)
    assert sorted(out.meta["skipped_files"]) == ["cut.dcm", "garbage.dcm"]
    np.testing.assert_array_equal(out.array, vol.array)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "cut.dcm" in logged and "truncated" in logged and "garbage.dcm" in logged


def test_io_series_many_skipped_files_are_counted_after_the_first_ones(tmp_path, lung_crop, series_writer, caplog):
    from medanomaly.io.dicom_series import SKIP_LOG_LIMIT

    series_writer(lung_crop, tmp_path)
    n_bad = SKIP_LOG_LIMIT + 5
    for i in range(n_bad):
        (tmp_path / f"junk{i:02d}.txt").write_bytes(b"not dicom " * 20)
    with caplog.at_level(logging.WARNING, logger="medanomaly.io"):
        out = read(tmp_path)
    assert len(out.meta["skipped_files"]) == n_bad  # every one is still listed in the volume's record
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == SKIP_LOG_LIMIT + 1
    assert "counted, not listed" in lines[-1] and str(tmp_path.parent) not in lines[-1]
    np.testing.assert_array_equal(out.array, lung_crop.array)


def test_io_series_missing_slice_is_an_error(tmp_path, lung_crop, series_writer):
    paths = series_writer(lung_crop, tmp_path)
    paths[5].unlink()
    with pytest.raises(InputError) as err:
        read(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "inconsistent slice spacing" in message
    assert "10 mm" in message and "expected 5 mm" in message


def test_io_series_gap_from_a_corrupt_slice_names_it(tmp_path, lung_crop, series_writer):
    """A corrupt slice in the middle leaves a gap: the error says which unreadable file caused it."""
    paths = series_writer(lung_crop, tmp_path)
    paths[5].write_bytes(paths[5].read_bytes()[:3000])  # truncated
    with pytest.raises(InputError) as err:
        read(tmp_path)
    message = str(err.value)
    assert "inconsistent slice spacing: gap of 10 mm" in message
    assert message.endswith(f"; 1 unreadable file(s) skipped: {paths[5].name}")


def test_io_series_exported_twice_is_read_once_and_a_cut_copy_never_wins(tmp_path, lung_crop, series_writer):
    """A study exported twice into one folder (the same instances, SOPInstanceUIDs and all) was "two slices at the
    same position", read not at all (an archive batch: the series an error). Copies are now skipped, naming the file
    kept; a truncated copy met first is skipped as unreadable, so the whole one is read."""
    import shutil

    paths = series_writer(lung_crop, tmp_path / "export1")
    shutil.copytree(tmp_path / "export1", tmp_path / "export2")
    (tmp_path / "a_cut.dcm").write_bytes(paths[3].read_bytes()[:2000])  # met before both exports
    vol = read(tmp_path)
    np.testing.assert_array_equal(vol.array, lung_crop.array)
    copies = [f for f in vol.meta["skipped_files"] if f.startswith("export2/")]
    assert len(copies) == len(paths) and "a_cut.dcm" in vol.meta["skipped_files"]
    import pydicom

    shutil.rmtree(tmp_path / "export2")
    (tmp_path / "a_cut.dcm").unlink()
    for path in paths:  # an anonymiser that gave every slice one SOPInstanceUID: distinct slices, all kept
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = "1.2.3"
        ds.save_as(path)
    blanked = read(tmp_path)
    np.testing.assert_array_equal(blanked.array, lung_crop.array)
    assert blanked.meta["skipped_files"] == []


def test_io_series_duplicate_position_is_an_error(tmp_path, lung_crop, series_writer):
    series_writer(lung_crop, tmp_path / "a")
    one = Volume(lung_crop.array[:3], spacing=lung_crop.spacing, origin=lung_crop.origin, meta={"modality": "CT"})
    uid = read(tmp_path / "a").meta["series_uid"]
    series_writer(one, tmp_path / "a" / "dup", series_uid=uid)
    with pytest.raises(InputError, match="same position") as err:
        read(tmp_path / "a")
    # Both files are named by their path inside the folder, so the two copies can be told apart.
    assert "dup/IM0000.dcm" in str(err.value) or "dup/IM0001.dcm" in str(err.value)


def test_io_series_empty_and_non_dicom_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="empty folder"):
        read(empty)
    other = tmp_path / "text"
    other.mkdir()
    (other / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM images"):
        read(other)


def test_io_series_with_no_readable_file_says_so_in_one_line(tmp_path, caplog):
    """Every file unreadable: one error with the commonest reason, not a "skipped" line per file before it."""
    for i in range(SKIP_LOG_LIMIT + 2):
        (tmp_path / f"junk{i:02d}.dcm").write_bytes(b"not dicom " * 20)
    cut = real_data("pydicom/CT_small.dcm").read_bytes()[:300]  # a real header whose pixels were cut off
    (tmp_path / "cut.dcm").write_bytes(cut)
    with caplog.at_level(logging.WARNING, logger="medanomaly.io"), pytest.raises(InputError) as err:
        read(tmp_path)
    n = SKIP_LOG_LIMIT + 3
    assert str(err.value).endswith(f"no DICOM images in folder ({n} file(s), {n} unreadable, {n - 1} of them: "
                                   "not a DICOM file)")  # fmt: skip
    assert not [r for r in caplog.records if "skipped" in r.getMessage()]


def test_io_series_real_folder_with_gap_from_pydicom():
    """dicomdirtests/77654033/CT2 really has a 202 mm jump: refused, naming the two files."""
    folder = real_data("pydicom/dicomdirtests") / "77654033" / "CT2"
    with pytest.raises(InputError, match="gap of 202 mm between 17106 and 17136"):
        read(folder)


def test_io_series_fast_pixel_path_equals_pydicom(ct_series):
    import pydicom

    from medanomaly.io.dicom_pixels import _native_pixels

    for path in sorted(ct_series.iterdir())[:3]:
        ds = pydicom.dcmread(path)
        np.testing.assert_array_equal(_native_pixels(ds), ds.pixel_array)
        ds.PixelData = (np.frombuffer(ds.PixelData, "<u2") | 0xF000).astype("<u2").tobytes()  # junk high bits
        np.testing.assert_array_equal(_native_pixels(ds), ds.pixel_array)


def test_io_series_single_file_folder_and_copy(tmp_path):
    for name in ("CT_small.dcm", "MR_small.dcm", "RG3_UNCR.dcm"):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(real_data(f"pydicom/{name}"), folder / "only")
        vol, single = read(folder), read(real_data(f"pydicom/{name}"))
        assert vol.same_grid(single) and vol.modality == single.modality
        np.testing.assert_array_equal(vol.array, single.array)
        assert vol.meta.get("units") == single.meta.get("units")


def test_io_series_two_series_in_one_folder(tmp_path, lung_crop, series_writer):
    """Both series go through the shared pixel buffer; each comes back exactly by its UID."""
    other = Volume(np.flip(lung_crop.array, axis=2).copy(), spacing=(0.9, 0.9, 2.0), meta={"modality": "CT"})
    series_writer(lung_crop, tmp_path / "a", shuffle=True, series_uid="1.2.826.0.1.3680043.8.498.11")
    series_writer(other, tmp_path / "b", shuffle=True, seed=5, series_uid="1.2.826.0.1.3680043.8.498.12")
    first = read(tmp_path, series_uid="1.2.826.0.1.3680043.8.498.11")
    second = read(tmp_path, series_uid="1.2.826.0.1.3680043.8.498.12")
    np.testing.assert_array_equal(first.array, lung_crop.array)
    np.testing.assert_array_equal(second.array, other.array)
    assert second.spacing == pytest.approx((0.9, 0.9, 2.0)) and first.meta["n_series"] == 2


def test_io_series_per_slice_rescale(tmp_path, lung_crop, series_writer):
    """Slices with different RescaleIntercept (as some scanners write) still give the same HU."""
    import pydicom

    paths = series_writer(lung_crop, tmp_path, shuffle=True)
    for k, path in enumerate(paths[::3]):
        ds = pydicom.dcmread(path)
        stored = np.frombuffer(ds.PixelData, "<u2").astype(np.int32)
        shift = 24 + k
        ds.PixelData = (stored - shift).clip(0).astype("<u2").tobytes()
        ds.RescaleIntercept = str(-1024 + shift)
        ds.save_as(path)
    vol = read(tmp_path)
    expected = lung_crop.array.copy()
    for k in range(len(paths[::3])):  # values below the new intercept were clipped at 0 stored
        z = 3 * k
        expected[z] = np.maximum(expected[z], -1024 + 24 + k)
    np.testing.assert_array_equal(vol.array, expected)
    assert "rescale_intercept" not in vol.meta and vol.meta["rescale_applied"] is True


def test_io_series_gantry_tilt_is_read_as_a_sheared_grid(tmp_path, lung_crop, series_writer):
    """Slice positions stepping sideways (a gantry tilted 15 degrees) were refused with "resample them first", which
    nothing here could do: read as a sheared grid, every voxel at its place in patient space; a shear no gantry
    makes, or a slice off the line of the others, is still refused."""
    import pydicom

    tilt = np.radians(15)
    sheared = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, np.sin(tilt)], [0.0, 0.0, np.cos(tilt)]])
    spacing = (*lung_crop.spacing[:2], lung_crop.spacing[2] / np.cos(tilt))
    vol = Volume(lung_crop.array, spacing=spacing, origin=lung_crop.origin, direction=sheared, meta={"modality": "CT"})
    series_writer(vol, tmp_path / "tilted", shuffle=True)
    back = read(tmp_path / "tilted")
    np.testing.assert_allclose(back.affine_lps, vol.affine_lps, atol=1e-3)
    np.testing.assert_array_equal(back.array, vol.array)
    steep = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, np.sin(1.0)], [0.0, 0.0, np.cos(1.0)]])  # 57 degrees
    series_writer(Volume(lung_crop.array, spacing=lung_crop.spacing, direction=steep, meta={"modality": "CT"}),
                  tmp_path / "steep")  # fmt: skip
    with pytest.raises(InputError, match=r"sheared by 57.3 deg, more than a gantry tilts \(45\)"):
        read(tmp_path / "steep")
    files = sorted((tmp_path / "tilted").glob("*.dcm"))
    ds = pydicom.dcmread(files[len(files) // 2])
    ds.ImagePositionPatient = [float(ds.ImagePositionPatient[0]) + 3.0, *ds.ImagePositionPatient[1:]]
    ds.save_as(files[len(files) // 2])
    with pytest.raises(InputError, match=r"tilted: IM\d{4}\.dcm lies [0-9.]+ mm off the line of a tilted stack"):
        read(tmp_path / "tilted")


def test_io_series_mixed_orientation_or_pixel_spacing_is_an_error(tmp_path, lung_crop, series_writer):
    """One slice with another orientation or another pixel spacing: refused in one line naming both files, never
    stacked onto the first slice's grid (that slice would be silently stretched)."""
    import pydicom

    for change, reason in ((("PixelSpacing", ["0.9", "0.9"]), "different pixel spacings"),
                           (("ImageOrientationPatient", ["0", "1", "0", "1", "0", "0"]), "different orientations")):
        folder = tmp_path / change[0]
        paths = series_writer(lung_crop, folder)
        ds = pydicom.dcmread(paths[3])
        setattr(ds, *change)
        ds.save_as(paths[3])
        with pytest.raises(InputError, match=reason) as err:
            read(folder)
        assert paths[3].name in str(err.value) and "\n" not in str(err.value)


def test_io_series_compressed_rle_and_jpegls(tmp_path, lung_crop, series_writer):
    """A series re-encoded with pydicom (RLE, JPEG-LS lossless) decodes in the thread pool to the same HU."""
    import pydicom
    from pydicom.uid import JPEGLSLossless, RLELossless

    paths = series_writer(lung_crop, tmp_path, shuffle=True)
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless if k % 2 else JPEGLSLossless)
        ds.save_as(path)
    vol = read(tmp_path)
    np.testing.assert_array_equal(vol.array, lung_crop.array)
    assert vol.meta["units"] == "HU"


def test_io_series_other_series_pixels_released(tmp_path, lung_crop, series_writer):
    """Parsing keeps pixels of the wanted series only (a whole study never sits in memory)."""
    from medanomaly.io.dicom_series import list_files, _parse_all, _PixelSink

    series_writer(lung_crop, tmp_path / "a", series_uid="1.2.826.0.1.3680043.8.498.21")
    series_writer(lung_crop, tmp_path / "b", series_uid="1.2.826.0.1.3680043.8.498.22")
    files = list_files(tmp_path)
    sink = _PixelSink(len(files), tmp_path)
    slices, skipped = _parse_all(files, tmp_path, sink, "1.2.826.0.1.3680043.8.498.22")
    assert len(slices) == 24 and skipped == [] and sink.count == 12
    for s in slices:
        wanted = s.ds.SeriesInstanceUID == "1.2.826.0.1.3680043.8.498.22"
        assert (s.slot is not None) == wanted and "PixelData" not in s.ds


def test_a_folder_with_more_files_than_a_study_holds_is_one_line_and_the_walk_stops(tmp_path, monkeypatch):
    """``explain RUN IMAGE --mask /`` walked the whole file system as a DICOM folder, reading every header and
    listing thousands of skipped files; a folder read now stops at MAX_FOLDER_FILES files with one line."""
    from medanomaly.io import dicom_series
    from medanomaly.io import read

    monkeypatch.setattr(dicom_series, "MAX_FOLDER_FILES", 5)
    for i in range(3):
        (tmp_path / f"d{i}").mkdir()
        for j in range(3):
            (tmp_path / f"d{i}" / f"f{j}.dcm").write_bytes(b"x")
    with pytest.raises(InputError, match=r"folder holds more than 5 files: not one DICOM study") as err:
        read(tmp_path)
    assert err.value.path == tmp_path
    walked = []
    real_walk = dicom_series.os.walk

    def counting(folder):
        for item in real_walk(folder):
            walked.append(item[0])
            yield item

    monkeypatch.setattr(dicom_series.os, "walk", counting)
    with pytest.raises(InputError):
        dicom_series.list_files(tmp_path)
    assert len(walked) < 4  # stopped before the last folder
