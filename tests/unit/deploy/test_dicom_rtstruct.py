"""Our RT Structure Set of the findings' masks (what radiotherapy planning systems import): contours along the
pixels' edges, so their area is the mask's; read back voxel for voxel; valid for dciodvfy."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from medanomaly.deploy.dicom_out import dciodvfy, write_dicom_outputs
from medanomaly.deploy.dicom_rtstruct import pixel_edge_contours
from medanomaly.io import read_mask
from medanomaly.quantify.measure import measure_lesions
from tests.unit.deploy.test_dicom_outputs import _two_lesions


def _shoelace(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


@settings(max_examples=200, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_pixel_edge_contours_fill_back_to_the_mask_and_enclose_its_area(mask):
    """Any mask (holes, pixels that touch at a corner only, one pixel): filled even-odd, the contours give the mask
    back, and their signed areas (holes negative) sum to its pixel count: a planning system measures our volume."""
    from skimage.draw import polygon

    contours = pixel_edge_contours(mask)
    filled = np.zeros(mask.shape, bool)
    for points in contours:
        rows, cols = polygon(points[:, 1], points[:, 0], shape=mask.shape)
        filled[rows, cols] ^= True
    assert np.array_equal(filled, mask)
    assert sum(_shoelace(c) for c in contours) == pytest.approx(mask.sum())


def test_the_structure_set_reads_back_as_the_findings_and_is_valid(ct_series, tmp_path):
    ct, files = ct_series
    findings = _two_lesions(ct)
    ring = np.zeros(ct.shape, np.uint8)
    ring[2, 10:19, 2:11], ring[2, 13:16, 5:8] = 1, 0  # a hole
    ring[4, 2, 2] = ring[4, 3, 3] = 1  # two pixels that touch at a corner only
    findings += measure_lesions(ct.with_array(ring), ct, label="mass")[:1]
    out = write_dicom_outputs(findings, files, ct, tmp_path / "out", run_id="r1")
    assert out.rtstruct is not None and out.rtstruct in out.paths()
    result = dciodvfy(out.rtstruct)
    assert result.errors == [], result.errors
    labels = read_mask(out.rtstruct, ct).array
    for number, finding in enumerate(findings, start=1):
        assert np.array_equal(labels == number, np.asarray(finding.mask.array) > 0), number
    ds = pydicom.dcmread(out.rtstruct)
    seg = pydicom.dcmread(out.seg)
    assert ds.PatientID == seg.PatientID and ds.StudyInstanceUID == seg.StudyInstanceUID == str(ct_study(files))
    assert [roi.ROIName for roi in ds.StructureSetROISequence][:2] == ["Lesion 1 (nodule)", "Lesion 2 (nodule)"]
    slice_uids = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    for item in ds.ROIContourSequence:
        for contour in item.ContourSequence:  # each contour names the source image of its slice
            assert contour.ContourImageSequence[0].ReferencedSOPInstanceUID in slice_uids
    again = write_dicom_outputs(findings, files, ct, tmp_path / "again", run_id="r1")
    assert pydicom.dcmread(again.rtstruct).SOPInstanceUID == ds.SOPInstanceUID  # a rerun replaces, never duplicates


def ct_study(files) -> str:
    return pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID


def test_masks_outlined_by_too_many_edges_get_no_structure_set_but_their_seg(ct_series, tmp_path, monkeypatch, caplog):
    """Counted before any contour is traced (a noise-like anomaly mask holds ~1 contour point per pixel): over the
    reader's limit, the series keeps its SEG and SR and the log says why there is no structure set."""
    from medanomaly.deploy import dicom_rtstruct

    ct, files = ct_series
    monkeypatch.setattr(dicom_rtstruct, "MAX_CONTOUR_POINTS", 50)  # the two lesions: 2 x 18 + 3 x 24 = 108 edges
    out = write_dicom_outputs(_two_lesions(ct), files, ct, tmp_path / "out", run_id="r1")
    assert out.rtstruct is None and out.seg is not None and out.sr is not None
    assert "pixel edges, more than 50 contour points: no RT Structure Set" in caplog.text


@pytest.mark.parametrize("direction", [
    np.array([[1.0, 0.0, 0.0], [0.0, 1.0, np.sin(np.radians(15))], [0.0, 0.0, np.cos(np.radians(15))]]),  # tilted
    np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),  # sagittal slices
])  # fmt: skip
def test_contours_of_a_tilted_or_sagittal_series_lie_on_its_slices_and_read_back(make_ct, tmp_path, direction):
    """Contours are traced on the image's own slices and mapped through its geometry: on a gantry-tilted (sheared)
    grid and on sagittal slices they lie in the slice planes, pass dciodvfy and fill back to the findings."""
    from medanomaly.io import read
    from medanomaly.io.dicom_writer import write_dicom_series
    from medanomaly.types import Volume

    base = make_ct()
    files = write_dicom_series(Volume(base.array, spacing=(0.8, 0.7, 2.5), origin=base.origin, direction=direction,
                                      meta={"modality": "CT"}), tmp_path / "ct")  # fmt: skip
    ct = read(tmp_path / "ct")
    findings = _two_lesions(ct)
    out = write_dicom_outputs(findings, files, ct, tmp_path / "out", run_id="r1")
    assert dciodvfy(out.rtstruct).errors == []
    labels = read_mask(out.rtstruct, ct).array
    for number, finding in enumerate(findings, start=1):
        assert np.array_equal(labels == number, np.asarray(finding.mask.array) > 0)
