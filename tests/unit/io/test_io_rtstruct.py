"""RT Structure Sets read as masks on the image's grid (``quantify CT --mask RS.dcm``): read as an image, a structure
set was "no pixel data". The structure sets here are written in the standard's layout from real masks (lung1's
expert nodule) and from squares whose voxels are known; pydicom's own ``rtstruct.dcm`` is a foreign file."""

from __future__ import annotations


import numpy as np
import pytest

from medanomaly.errors import InputError
from medanomaly.io import read_mask
from medanomaly.types import Volume
from tests.unit.io.conftest import write_structure_set

def contours_of(mask: np.ndarray, image: Volume) -> list[np.ndarray]:
    """Each slice's outlines of ``mask`` (half-way between inside and outside voxel centres), in LPS mm."""
    from skimage.measure import find_contours

    out = []
    for k in range(mask.shape[0]):
        for rows_cols in find_contours(np.pad(mask[k] > 0, 1).astype(float), 0.5):
            yx = rows_cols - 1
            out.append(image.index_to_physical(np.column_stack([yx[:, 1], yx[:, 0], np.full(len(yx), k)])))
    return out


def _square(image: Volume, k: float, lo: float, hi: float) -> np.ndarray:
    """A square outline on slice ``k`` from voxel ``lo`` to ``hi`` (rows and columns), half a voxel outside them."""
    a, b = lo - 0.5, hi + 0.5
    return image.index_to_physical(np.array([[a, a, k], [b, a, k], [b, b, k], [a, b, k]]))


@pytest.fixture()
def small() -> Volume:
    return Volume(np.zeros((4, 20, 20), np.int16), spacing=(0.5, 0.5, 2.0), origin=(-10.0, 5.0, 30.0),
                  meta={"modality": "CT"})  # fmt: skip


def test_lung1s_expert_mask_comes_back_voxel_for_voxel_and_measures_the_same(tmp_path):
    from medanomaly.data.sources import real_data
    from medanomaly.io import read
    from medanomaly.quantify.labels import measure_labels

    image, label = read(real_data("pyradiomics/lung1_image.nrrd")), read(real_data("pyradiomics/lung1_label.nrrd"))
    rs = write_structure_set(tmp_path / "rs.dcm", [(7, "GTV-1", contours_of(label.array, image))])
    mask = read_mask(rs, image)
    assert mask.same_grid(image) and mask.meta["modality"] == "RTSTRUCT"
    assert np.array_equal(mask.array == 7, label.array > 0)
    volume = measure_labels(mask, image)[0].finding.measurements.volume_ml
    assert volume == pytest.approx(measure_labels(label, image)[0].finding.measurements.volume_ml)


def test_a_contour_inside_another_is_a_hole(tmp_path, small):
    rs = write_structure_set(tmp_path / "ring.dcm", [(1, "ring", [_square(small, 2, 4, 15), _square(small, 2, 8, 11)])])
    mask = read_mask(rs, small).array
    assert mask[2, 4:16, 4:16].sum() == 144 - 16 and mask[2, 8:12, 8:12].sum() == 0 and mask[[0, 1, 3]].sum() == 0


def test_overlapping_rois_are_refused_together_and_read_one_at_a_time(tmp_path, small):
    rs = write_structure_set(tmp_path / "rs.dcm", [(1, "BODY", [_square(small, 1, 0, 19)]),
                                                   (4, "GTV", [_square(small, 1, 5, 7)])])  # fmt: skip
    with pytest.raises(InputError, match=r"rs\.dcm: ROIs 1 and 4 overlap .* with --label N"):
        read_mask(rs, small)
    gtv = read_mask(rs, small, label=4).array
    assert set(np.unique(gtv)) == {0, 4} and (gtv == 4).sum() == 9
    with pytest.raises(InputError, match=r"no ROI number 2 with contours \(ROI numbers: 1, 4\)"):
        read_mask(rs, small, label=2)


@pytest.mark.parametrize(
    ("contour", "reason"),
    [
        (lambda im: _square(im, 1.5, 2, 5), "a contour is not on one slice of the image"),  # between slices
        (lambda im: _square(im, 6, 2, 5), "a contour lies outside the image"),  # beyond the last slice
        (lambda im: _square(im, 1, 40, 45), "a contour lies outside the image"),  # beside it in plane
    ],
)
def test_contours_off_the_images_grid_are_refused_not_moved_to_the_nearest_slice(tmp_path, small, contour, reason):
    rs = write_structure_set(tmp_path / "rs.dcm", [(3, "x", [contour(small)])])
    with pytest.raises(InputError, match=rf"rs\.dcm: ROI 3: {reason}"):
        read_mask(rs, small)


def test_a_structure_set_drawn_on_another_series_is_one_line(small):
    """pydicom's rtstruct.dcm (no preamble, contours of another patient's series)."""
    from pydicom.data import get_testdata_file

    with pytest.raises(InputError, match=r"rtstruct\.dcm: ROI \d+: a contour"):
        read_mask(get_testdata_file("rtstruct.dcm"), small)


def test_quantify_names_each_roi_beside_its_number_when_asked(tmp_path, monkeypatch, capsys):
    from medanomaly.data.sources import real_data
    from medanomaly.io import read
    from tests.integration.conftest import run_main

    image_path = real_data("pyradiomics/lung1_image.nrrd")
    image, label = read(image_path), read(real_data("pyradiomics/lung1_label.nrrd"))
    rs = write_structure_set(tmp_path / "rs.dcm", [(7, "GTV-1", contours_of(label.array, image))])
    code, out, err = run_main(monkeypatch, capsys, "quantify", str(image_path), "--mask", str(rs))
    assert code == 0 and out.startswith("label 7: 1.361 mL") and "GTV" not in out, (out, err)  # free text: asked for
    code, out, err = run_main(monkeypatch, capsys, "quantify", str(image_path), "--mask", str(rs), "--roi-names")
    assert code == 0 and out.startswith("label 7 (GTV-1): 1.361 mL"), (out, err)


def test_a_structure_set_read_as_an_image_says_how_to_measure_it(tmp_path, small):
    from medanomaly.io import read

    rs = write_structure_set(tmp_path / "rs.dcm", [(1, "x", [_square(small, 1, 2, 5)])])
    with pytest.raises(InputError, match=r"not an image; measure its ROIs with quantify IMAGE --mask FILE"):
        read(rs)


@pytest.mark.filterwarnings("ignore:The value length:UserWarning")  # pydicom, writing the invalid fixture
@pytest.mark.parametrize(("number", "reason"), [(0, "ROI Number 0 is not from 1"), (2**40, "is not from 1 to")])
def test_roi_numbers_that_cannot_be_labels_are_refused(tmp_path, small, number, reason):
    """ROI Number 0 would be the background; 2^40 overflowed the int32 labels (an OverflowError traceback)."""
    rs = write_structure_set(tmp_path / "rs.dcm", [(number, "x", [_square(small, 1, 2, 5)])])
    with pytest.raises(InputError, match=reason):
        read_mask(rs, small)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS:UserWarning")  # pydicom, writing the invalid fixture
def test_contour_data_that_are_not_finite_triplets_are_refused(tmp_path, small):
    square = _square(small, 1, 2, 5)
    rs = write_structure_set(tmp_path / "rs.dcm", [(2, "x", [square])])
    import pydicom

    ds = pydicom.dcmread(rs)
    ds.ROIContourSequence[0].ContourSequence[0].ContourData = ["1", "2", "nan", "4", "5", "6", "7", "8", "9"]
    ds.save_as(rs)
    with pytest.raises(InputError, match=r"ROI 2: Contour Data are not \(x, y, z\) triplets of finite numbers"):
        read_mask(rs, small)


def test_info_shows_a_structure_sets_rois_by_number_never_by_name(tmp_path, small, monkeypatch, capsys):
    import json

    from tests.integration.conftest import run_main

    rs = write_structure_set(tmp_path / "rs.dcm", [(2, "GTV Dr Smith", [_square(small, 1, 2, 5), _square(small, 2, 2, 5)]),
                                                   (5, "empty", [])])  # fmt: skip
    code, out, err = run_main(monkeypatch, capsys, "info", str(rs), "--json")
    assert code == 0 and json.loads(out)["rois"] == [
        {"number": 2, "contours": 2, "points": 8, "z_mm": [32.0, 34.0]},
        {"number": 5, "contours": 0, "points": 0, "z_mm": None}], out
    code, out, err = run_main(monkeypatch, capsys, "info", str(rs))
    assert code == 0 and "ROI 2" in out and "2 contour(s), 8 point(s), z 32 .. 34 mm" in out and "Smith" not in out


def test_a_mask_file_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path, small, monkeypatch):
    """A structure set has no pixel data, so looking for one parses the whole file: its size is checked first, as
    for any DICOM read whole (a hostile multi-gigabyte contour set was parsed before the limit applied)."""
    huge = tmp_path / "huge.dcm"
    with open(huge, "wb") as handle:
        handle.write(b"\0" * 128 + b"DICM")
        handle.truncate(40 << 20)  # sparse: 40 MiB that take no disk
    monkeypatch.setenv("MEDANOMALY_MAX_VOXEL_BYTES", "1M")
    with pytest.raises(InputError, match=r"huge\.dcm: file of 40 MiB exceeds the limit"):
        read_mask(huge, small)


def test_a_structure_set_cut_short_says_so(tmp_path, small):
    rs = write_structure_set(tmp_path / "rs.dcm", [(1, "x", [_square(small, 1, 2, 5)])])
    data = rs.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: data.index(b"\x06\x30\x22\x00")])  # just before the first ROI Number (3006,0022)
    with pytest.raises(InputError, match=r"cut\.dcm: an ROI without its ROI Number \(an incomplete or cut structure"):
        read_mask(cut, small)  # it said "an ROI Number that is not an integer"


def test_an_roi_drawn_in_another_frame_of_reference_is_refused_though_it_lands_on_the_slice(tmp_path):
    """pydicom's CT_small with a square on its one slice: drawn in the CT's Frame of Reference it is read; the same
    points in another frame (another patient or session: millimetres of another coordinate system) fitted the grid
    and measured the wrong tissue without a word."""
    from medanomaly.data.sources import real_data
    from medanomaly.io import read

    ct_path = real_data("pydicom/CT_small.dcm")
    image = read(ct_path)
    square = _square(image, 0, 40, 59)
    frame = image.meta["frame_of_reference_uid"]
    same = write_structure_set(tmp_path / "same.dcm", [(2, "x", [square])], frame=frame)
    assert int((read_mask(same, image).array == 2).sum()) == 400
    other = write_structure_set(tmp_path / "other.dcm", [(2, "x", [square])])
    with pytest.raises(InputError, match=r"other\.dcm: ROI 2 is drawn in another frame of reference than the image"):
        read_mask(other, image)
    nifti = Volume(image.array, spacing=image.spacing, origin=image.origin, direction=image.direction)
    assert int((read_mask(other, nifti).array == 2).sum()) == 400  # an image without a frame: the grid checks alone


def test_a_dicom_mask_series_keeps_its_images_frame_and_one_of_another_frame_is_refused(tmp_path):
    """A mask written as a DICOM series from an image read from DICOM lies in the image's Frame of Reference (it was
    given a new one, as if drawn on another patient); a DICOM mask (series or SEG) in another frame is one line."""
    from medanomaly.data.sources import real_data
    from medanomaly.io import read, write

    image = read(real_data("pydicom/CT_small.dcm"))
    labels = np.zeros(image.shape, np.int16)
    labels[0, 40:60, 40:60] = 1
    mask = Volume(labels, spacing=image.spacing, origin=image.origin, direction=image.direction, meta=image.meta)
    write(mask, tmp_path / "same/")
    assert int(read_mask(tmp_path / "same", image).array.sum()) == 400
    stranger = Volume(labels, spacing=image.spacing, origin=image.origin, direction=image.direction,
                      meta={**image.meta, "frame_of_reference_uid": "1.2.3.4"})  # fmt: skip
    write(stranger, tmp_path / "other/")
    with pytest.raises(InputError, match=r"other: the mask is in another frame of reference than the image"):
        read_mask(tmp_path / "other", image)
    odd = Volume(labels, meta={"frame_of_reference_uid": "1.02.x" + "9" * 80})  # not a UID: a new one is written
    write(odd, tmp_path / "odd/")
    import pydicom

    written = pydicom.dcmread(next((tmp_path / "odd").glob("*.dcm"))).FrameOfReferenceUID
    assert written.is_valid and "x" not in written


def test_closed_planar_xor_contours_are_combined_not_left_out(tmp_path, small):
    """CLOSEDPLANAR_XOR (PS3.3 C.8.8.6.3, written by newer planning systems) was skipped as if it were a point or an
    open curve: the ROI lost that area without a word. Two overlapping XOR squares leave their overlap out."""
    import pydicom

    rs = write_structure_set(tmp_path / "xor.dcm", [(1, "x", [_square(small, 1, 2, 9), _square(small, 1, 6, 13)])])
    ds = pydicom.dcmread(rs)
    for contour in ds.ROIContourSequence[0].ContourSequence:
        contour.ContourGeometricType = "CLOSEDPLANAR_XOR"
    ds.save_as(rs, enforce_file_format=True)
    mask = read_mask(rs, small).array[1] > 0
    assert mask.sum() == 2 * 64 - 2 * 16 and not mask[6:10, 6:10].any()
