"""SEG + SR of the real pyradiomics lung CTs (lung1: 1.36 mL nodule; lung2: 48.4 mL tumour).

The NRRD scans are written as a DICOM CT series with the project's writer and read back; the
findings are the real lesion masks measured with medanomaly.quantify. dciodvfy must report no
error; highdicom must read both back; the SEG must equal the masks voxel for voxel and the SR's
numbers must equal findings.json.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from medanomaly.deploy.dicom_out import dciodvfy, write_dicom_outputs
from medanomaly.deploy.dicom_source import load_source_series
from medanomaly.deploy.dicom_sr import read_sr_lesions


@pytest.fixture(scope="module", params=["lung1", "lung2"])
def case(request, tmp_path_factory):
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read
    from medanomaly.io.dicom_writer import write_dicom_series
    from medanomaly.quantify.measure import measure_lesions

    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    image, mask = pyradiomics_case(name)
    files = write_dicom_series(read(image).with_meta(modality="CT"), tmp / "ct")
    ct = read(tmp / "ct")
    lesion = ct.with_array((np.asarray(read(mask).array) > 0).astype(np.uint8))
    findings = measure_lesions(lesion, ct)
    (tmp / "findings.json").write_text(json.dumps([f.to_json() for f in findings]))
    out = write_dicom_outputs(findings, files, ct, tmp / "out", run_id=f"test-{name}", site="lung")
    return {"name": name, "ct": ct, "files": files, "findings": findings, "out": out, "dir": tmp}


def test_dciodvfy_finds_no_error_in_seg_rtstruct_and_sr(case) -> None:
    for path in (case["out"].seg, case["out"].rtstruct, case["out"].sr):
        result = dciodvfy(path)
        assert result.errors == [], (case["name"], path.name, result.errors)


def test_seg_equals_the_real_lesion_mask_voxel_for_voxel(case) -> None:
    import highdicom as hd

    ct, files = case["ct"], case["files"]
    seg = hd.seg.segread(case["out"].seg)
    source = load_source_series(files, ct)
    pixels = seg.get_pixels_by_source_instance([str(d.SOPInstanceUID) for d in source.datasets])
    got = np.zeros((pixels.shape[-1], *ct.shape), bool)
    got[:, list(source.slice_index)] = np.moveaxis(pixels, -1, 0) > 0
    want = np.stack([np.asarray(f.mask.array) > 0 for f in case["findings"]])
    assert np.array_equal(got, want)
    assert int(got.sum()) == sum(f.measurements.n_voxels for f in case["findings"])


def test_rtstruct_contours_enclose_the_real_lesion_and_its_volume(case) -> None:
    """Each slice's contours run along the pixel edges: filled, they are the mask voxel for voxel; their polygon
    areas times the slice spacing are its volume (lung1 1.36 mL, lung2 48.4 mL), as a planning system computes it."""
    import pydicom

    from medanomaly.io import read_mask

    ct, (finding,) = case["ct"], case["findings"]
    assert np.array_equal(read_mask(case["out"].rtstruct, ct).array == 1, np.asarray(finding.mask.array) > 0)
    area_mm2 = 0.0
    for contour in pydicom.dcmread(case["out"].rtstruct).ROIContourSequence[0].ContourSequence:
        xy = np.asarray(contour.ContourData, float).reshape(-1, 3)[:, :2]
        area_mm2 += 0.5 * float(np.dot(xy[:, 0], np.roll(xy[:, 1], -1)) - np.dot(xy[:, 1], np.roll(xy[:, 0], -1)))
    ml = abs(area_mm2) * ct.spacing[2] / 1000  # points are written to 0.0001 mm
    assert ml == pytest.approx(finding.measurements.volume_ml, rel=1e-4)


def test_sr_volumes_equal_findings_json(case) -> None:
    rows = read_sr_lesions(case["out"].sr)
    expected = json.loads((case["dir"] / "findings.json").read_text())
    assert len(rows) == len(expected) >= 1
    for row, want in zip(rows, expected, strict=True):
        assert row["volume_ml"] == pytest.approx(want["volume_ml"], rel=1e-12)
        assert row["max_diameter_mm"] == pytest.approx(want["max_diameter_mm"], rel=1e-12)
        assert row["mean_hu"] == pytest.approx(want["mean_hu"], rel=1e-12)
    reference = {"lung1": 1.36, "lung2": 48.4}[case["name"]]  # DATA.md (pyradiomics VoxelVolume)
    assert rows[0]["volume_ml"] == pytest.approx(reference, rel=0.01)


def test_sr_names_the_source_series_as_evidence(case) -> None:
    import pydicom

    sr = pydicom.dcmread(case["out"].sr)
    src = pydicom.dcmread(case["files"][0], stop_before_pixels=True)
    assert sr.StudyInstanceUID == src.StudyInstanceUID
    evidence = {s.SeriesInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for s in study.ReferencedSeriesSequence}  # fmt: skip
    assert src.SeriesInstanceUID in evidence
    assert pydicom.dcmread(case["out"].seg).SeriesInstanceUID in evidence
