"""DICOM SEG, SR (TID 1500) and Parametric Map of findings: structure, read-back, errors."""

from __future__ import annotations

import random
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medanomaly.deploy.dicom_out import dciodvfy, write_dicom_outputs
from medanomaly.deploy.dicom_source import load_source_series
from medanomaly.deploy.dicom_sr import read_sr_lesions
from medanomaly.errors import InputError
from medanomaly.quantify.measure import measure_lesions
from medanomaly.types import Finding, Volume


def _two_lesions(ct: Volume) -> list[Finding]:
    mask = np.zeros(ct.shape, np.uint8)
    mask[1:3, 4:9, 3:7] = 1  # lesion A (40 voxels)
    mask[3:6, 14:20, 10:16] = 1  # lesion B (108 voxels), disjoint from A
    findings = measure_lesions(ct.with_array(mask), ct, label="nodule")
    partial = (replace(findings[0].measurements, partial_volume_ml=0.1234), findings[1].measurements)  # lung findings have it
    return [Finding(f.center_mm, f.bbox_mm, s, f.label, f.mask, m) for f, s, m in zip(findings, (0.9, 0.4), partial)]


def _seg_masks(seg_path: Path, files: list[Path], ct: Volume) -> np.ndarray:
    """(segments, z, y, x) masks of a SEG, in volume slice order."""
    import highdicom as hd

    source = load_source_series(files, ct)
    seg = hd.seg.segread(seg_path)
    uids = [str(ds.SOPInstanceUID) for ds in source.datasets]
    pixels = seg.get_pixels_by_source_instance(uids, ignore_spatial_locations=False)  # (files, y, x, segments)
    out = np.zeros((pixels.shape[-1], *ct.shape), np.uint8)
    out[:, list(source.slice_index)] = np.moveaxis(pixels, -1, 0)
    return out


def test_seg_masks_equal_the_findings_voxel_for_voxel_with_files_shuffled(ct_series, tmp_path: Path) -> None:
    ct, files = ct_series
    findings = _two_lesions(ct)
    shuffled = list(files)
    random.Random(3).shuffle(shuffled)  # frame <-> file matching must not depend on file order
    out = write_dicom_outputs(findings, shuffled, ct, tmp_path / "out", run_id="r1")
    got = _seg_masks(out.seg, files, ct)
    want = np.stack([np.asarray(f.mask.array) > 0 for f in findings])
    assert got.shape == want.shape
    assert np.array_equal(got > 0, want)


def test_sr_groups_carry_the_findings_measurements_and_reference_their_segments(ct_series, tmp_path: Path) -> None:
    import highdicom as hd

    ct, files = ct_series
    findings = _two_lesions(ct)
    out = write_dicom_outputs(findings, files, ct, tmp_path / "out", run_id="r1")
    seg = hd.seg.segread(out.seg)
    rows = read_sr_lesions(out.sr)
    assert [r["tracking_id"] for r in rows] == ["Lesion 1", "Lesion 2"]
    for k, (row, f) in enumerate(zip(rows, findings, strict=True)):
        want = f.to_json()
        for key in ("volume_ml", "max_diameter_mm", "long_axis_mm", "short_axis_mm", "mean_hu", "score"):
            assert row[key] == pytest.approx(want[key], rel=1e-9), key
        assert row.get("partial_volume_ml") == want.get("partial_volume_ml")  # 0.1234 for the first, absent for the second
        assert row["finding_type"] == "Nodule" and row["finding_site"] == "Lung"
        assert row["seg_sop_instance_uid"] == seg.SOPInstanceUID
        assert row["segment_number"] == k + 1
        desc = seg.get_segment_description(k + 1)
        assert desc.tracking_uid == row["tracking_uid"] and desc.tracking_id == row["tracking_id"]
    assert dciodvfy(out.sr).errors == []  # two Volume measurements told apart by their method, one a private code
    assert [i.CodingSchemeDesignator for i in pydicom.dcmread(out.sr).CodingSchemeIdentificationSequence] == ["99MEDANOMALY"]


def test_outputs_are_deterministic_per_run_and_series_and_differ_between_runs(ct_series, tmp_path: Path) -> None:
    import pydicom

    ct, files = ct_series
    findings = _two_lesions(ct)
    a = write_dicom_outputs(findings, files, ct, tmp_path / "a", run_id="r1")
    b = write_dicom_outputs(findings, files, ct, tmp_path / "b", run_id="r1")
    c = write_dicom_outputs(findings, files, ct, tmp_path / "c", run_id="r2")
    uid = [pydicom.dcmread(o.seg).SOPInstanceUID for o in (a, b, c)]
    assert uid[0] == uid[1] != uid[2]
    src = pydicom.dcmread(files[0])
    seg = pydicom.dcmread(a.seg)
    assert seg.StudyInstanceUID == src.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID


def test_overlapping_masks_are_stacked_segments(ct_series, tmp_path: Path) -> None:
    ct, files = ct_series
    a = np.zeros(ct.shape, np.uint8)
    a[1:4, 5:12, 5:12] = 1
    b = np.zeros(ct.shape, np.uint8)
    b[2:5, 8:15, 8:15] = 1  # overlaps a
    findings = [measure_lesions(ct.with_array(m), ct)[0] for m in (a, b)]
    out = write_dicom_outputs(findings, files, ct, tmp_path / "o", run_id="r")
    got = _seg_masks(out.seg, files, ct)
    assert np.array_equal(got[0] > 0, a > 0) and np.array_equal(got[1] > 0, b > 0)


def test_finding_without_mask_goes_to_the_sr_only(ct_series, tmp_path: Path) -> None:
    ct, files = ct_series
    f = Finding(center_mm=(0.0, 10.0, 35.0), bbox_mm=((-2, 8, 33), (2, 12, 37)), score=0.7, label="mass")
    out = write_dicom_outputs([f], files, ct, tmp_path / "o", run_id="r", site="breast")
    assert out.seg is None and out.sr is not None
    (row,) = read_sr_lesions(out.sr)
    assert row["segment_number"] is None and row["score"] == pytest.approx(0.7)
    assert row["finding_type"] == "Mass" and row["finding_site"] == "Breast"
    assert dciodvfy(out.sr).errors == []
    assert "CodingSchemeIdentificationSequence" not in pydicom.dcmread(out.sr)  # no private code used, none declared


def test_parametric_map_holds_the_float_scores_on_the_source_frames(ct_series, tmp_path: Path) -> None:
    import highdicom as hd
    import pydicom

    ct, files = ct_series
    rng = np.random.default_rng(1)
    scores = rng.random(ct.shape).astype(np.float32) * 3.0 - 1.0
    out = write_dicom_outputs([], files, ct, tmp_path / "o", run_id="r", score_map=ct.with_array(scores))
    assert out.seg is None and out.sr is None
    ds = pydicom.dcmread(out.parametric_map)
    frames = np.frombuffer(ds.FloatPixelData, np.float32).reshape(-1, *ct.shape[1:])
    assert len(frames) == ct.shape[0]
    for frame, item in zip(frames, ds.PerFrameFunctionalGroupsSequence, strict=True):
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        k = int(round(ct.physical_to_index(position)[2]))  # frames may be stored in any order
        assert np.array_equal(frame, scores[k])
    assert hd.pm.ParametricMap.from_dataset(ds).pixel_array.dtype == np.float32
    assert dciodvfy(out.parametric_map).errors == []


def test_a_map_on_another_grid_is_resampled_onto_the_source(ct_series, tmp_path: Path) -> None:
    from medanomaly.deploy.parametric_map import map_on_source_grid
    from medanomaly.preprocess.resample import resample_to_spacing

    ct, _ = ct_series
    ramp = np.broadcast_to(np.arange(ct.shape[2], dtype=np.float32), ct.shape).copy()
    coarse = resample_to_spacing(ct.with_array(ramp), (1.6, 1.4, 2.5), "linear")
    back = map_on_source_grid(coarse, ct)
    assert back.shape == ct.shape
    inner = back[:, 2:-2, 3:-3]
    assert np.abs(inner - ramp[:, 2:-2, 3:-3]).max() < 0.8  # a linear ramp survives linear resampling


def test_files_off_the_volume_grid_are_refused(ct_series, make_ct, tmp_path: Path) -> None:
    ct, files = ct_series
    shifted = Volume(ct.array, spacing=ct.spacing, origin=(ct.origin[0], ct.origin[1], ct.origin[2] + 1.0),
                     direction=ct.direction, meta=dict(ct.meta))  # fmt: skip
    with pytest.raises(InputError, match="not on the volume grid"):
        load_source_series(files, shifted)
    with pytest.raises(InputError, match="slices without a source file"):
        load_source_series(files[:-1], ct)


def test_unknown_site_is_one_line(ct_series, tmp_path: Path) -> None:
    ct, files = ct_series
    with pytest.raises(InputError, match="unknown finding site 'elbow'"):
        write_dicom_outputs(_two_lesions(ct), files, ct, tmp_path / "o", site="elbow")


def test_dciodvfy_reports_errors_of_a_broken_object(ct_series, tmp_path: Path) -> None:
    import pydicom

    ct, files = ct_series
    out = write_dicom_outputs(_two_lesions(ct), files, ct, tmp_path / "o", run_id="r")
    ds = pydicom.dcmread(out.seg)
    del ds.SegmentSequence  # a SEG without its segment descriptions is invalid
    broken = tmp_path / "broken.dcm"
    ds.save_as(broken)
    assert dciodvfy(out.seg).errors == []
    assert dciodvfy(broken).errors  # the check used on lung1/lung2 can fail


def test_outputs_for_a_dicom_folder_and_refusal_for_nifti(ct_series, tmp_path: Path) -> None:
    from medanomaly.deploy.dicom_out import write_dicom_outputs_for_path
    from medanomaly.io import write
    from medanomaly.types import Prediction

    ct, files = ct_series
    prediction = Prediction(scores=(0.9,), class_names=("nodule",), label="nodule", findings=tuple(_two_lesions(ct)))
    out = write_dicom_outputs_for_path(files[0].parent, ct, prediction, tmp_path / "o", run_id="r")
    assert out.seg is not None and out.sr is not None and out.parametric_map is None
    nifti = write(ct, tmp_path / "ct.nii.gz")
    with pytest.raises(InputError, match="need a DICOM source series"):
        write_dicom_outputs_for_path(nifti, ct, prediction, tmp_path / "o2")


def test_a_study_with_our_seg_and_sr_can_be_shared_de_identified_and_stays_valid(ct_series, tmp_path: Path) -> None:
    """deid refused every SR ('no pixel data'), so a study could not be shared with medanomaly's own report, and it
    emptied the SEG's Algorithm Name / Version and Tracking ID (Type 1 / 1C: dciodvfy errors). Now the SR is
    de-identified by the profile (its Content Sequence dummied: text replaced; codes, numbers and references kept),
    and SEG and SR pass dciodvfy with their references pointing at the de-identified CT and SEG."""
    import shutil

    import highdicom as hd

    from medanomaly.privacy.deid import DeidConfig, deidentify_folder

    ct, files = ct_series
    out = write_dicom_outputs(_two_lesions(ct), files, ct, tmp_path / "out", run_id="r1")
    study = tmp_path / "study"
    study.mkdir()
    for path in [*files, out.seg, out.sr]:
        shutil.copy(path, study / f"{path.parent.name}_{path.name}")
    summary = deidentify_folder(study, tmp_path / "deid", b"k" * 32, DeidConfig(burned_in="never"))
    assert summary.refused == 0
    written = {pydicom.dcmread(p).Modality: p for p in (tmp_path / "deid").rglob("*.dcm")}
    instances = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in (tmp_path / "deid").rglob("*.dcm")}
    assert dciodvfy(written["SEG"]).errors == [] and dciodvfy(written["SR"]).errors == []
    rows = read_sr_lesions(written["SR"])
    assert [r["seg_sop_instance_uid"] for r in rows] == [hd.seg.segread(written["SEG"]).SOPInstanceUID] * 2
    assert rows[0]["volume_ml"] == pytest.approx(read_sr_lesions(out.sr)[0]["volume_ml"])  # measurements kept
    assert rows[0]["tracking_id"] != "Lesion 1"  # free text dummied, as PS3.15 Annex E says for the Content Sequence
    seg = pydicom.dcmread(written["SEG"])
    refs = [str(r.ReferencedSOPInstanceUID) for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence]
    assert refs and set(refs) <= instances


def _assert_segments_are_the_findings(labels: Volume, ct: Volume, findings: list[Finding]) -> None:
    """Segment k of a SEG read back is finding k voxel for voxel on the CT's grid, and measures as it."""
    from medanomaly.quantify.labels import measure_labels

    placed = labels.placed_on(ct)
    for number, finding in enumerate(findings, start=1):
        assert np.array_equal(placed.array == number, np.asarray(finding.mask.array) > 0)
    measured = {lesion.label_value: lesion for lesion in measure_labels(labels, ct) if lesion.whole}
    for number, finding in enumerate(findings, start=1):
        assert measured[number].finding.measurements.volume_ml == pytest.approx(finding.measurements.volume_ml)


def test_our_seg_reads_back_as_a_label_map_that_quantify_measures_as_the_findings(ct_series, tmp_path: Path) -> None:
    """Read as an image, a SEG (one frame per segment and slice) was "frames are not equally spaced": neither `info`
    nor `quantify --mask seg.dcm` could take our own output. It is now the label map of its segment numbers on the
    slices it spans, placed voxel for voxel on the CT's grid to be measured; overlapping segments are one line."""
    from medanomaly.io import read

    ct, files = ct_series
    findings = _two_lesions(ct)
    out = write_dicom_outputs(findings, files, ct, tmp_path / "out", run_id="r1")
    labels = read(out.seg)
    assert labels.meta["modality"] == "SEG" and labels.shape[0] < ct.shape[0]  # the slices the segments touch
    assert np.unique(labels.array).tolist() == [0, 1, 2]  # segment numbers, not the frames' 0 / 1
    _assert_segments_are_the_findings(labels, ct, findings)
    a, b = np.zeros(ct.shape, np.uint8), np.zeros(ct.shape, np.uint8)
    a[1:4, 5:12, 5:12], b[2:5, 8:15, 8:15] = 1, 1
    overlapping = write_dicom_outputs([measure_lesions(ct.with_array(m), ct)[0] for m in (a, b)], files, ct,
                                      tmp_path / "o", run_id="r")  # fmt: skip
    with pytest.raises(InputError) as error:
        read(overlapping.seg)
    text = str(error.value)
    assert text.startswith(f"{overlapping.seg}: DICOM SEG not readable as one label map") and "\n" not in text


@pytest.mark.parametrize("vr", ["OB", "OW"])
def test_a_big_endian_seg_reads_back_as_the_same_label_map(ct_series, tmp_path: Path, vr: str) -> None:
    """Our SEG rewritten in Explicit VR Big Endian (an old archive's, or ``dcmconv +tb``'s) was "DICOM SEG not
    readable as one label map" (highdicom parses little-endian datasets only); it now reads as the same label map,
    its pixel data's words swapped back when stored as OW."""
    from pydicom.uid import ExplicitVRBigEndian

    from medanomaly.io import read

    ct, files = ct_series
    seg = write_dicom_outputs(_two_lesions(ct), files, ct, tmp_path / "out", run_id="r1").seg
    ds = pydicom.dcmread(seg)
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    if vr == "OW":  # big-endian words: each pair of the little-endian byte stream swapped
        ds[0x7FE00010].VR = "OW"
        ds.PixelData = np.frombuffer(ds.PixelData, "<u2").astype(">u2").tobytes()
    pydicom.dcmwrite(tmp_path / "be.dcm", ds, implicit_vr=False, little_endian=False)
    assert not pydicom.dcmread(tmp_path / "be.dcm").file_meta.TransferSyntaxUID.is_little_endian
    want, got = read(seg), read(tmp_path / "be.dcm")
    assert np.array_equal(got.array, want.array) and np.allclose(got.affine_lps, want.affine_lps)


def test_a_big_endian_sr_reads_back_as_the_same_lesions(ct_series, tmp_path: Path) -> None:
    """Our SR rewritten in Explicit VR Big Endian was a highdicom ValueError in read_sr_lesions (it parses
    little-endian datasets only); it now reads back the same rows, and a dataset passed in is left as it was."""
    from pydicom.uid import ExplicitVRBigEndian

    ct, files = ct_series
    sr = write_dicom_outputs(_two_lesions(ct), files, ct, tmp_path / "out", run_id="r1").sr
    ds = pydicom.dcmread(sr)
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    pydicom.dcmwrite(tmp_path / "be.dcm", ds, implicit_vr=False, little_endian=False)
    big = pydicom.dcmread(tmp_path / "be.dcm")
    assert read_sr_lesions(big) == read_sr_lesions(sr) and len(read_sr_lesions(sr)) == 2
    assert read_sr_lesions(tmp_path / "be.dcm") == read_sr_lesions(sr)
    assert not big.file_meta.TransferSyntaxUID.is_little_endian  # the caller's dataset unchanged


def test_the_seg_of_a_gantry_tilted_series_is_valid_and_reads_back_on_its_sheared_grid(make_ct, tmp_path: Path) -> None:
    """A gantry-tilted series is read as a sheared grid; its SEG's frames step sideways, which highdicom's volume
    refuses ("Frame positions do not form a regularly-spaced volume"), so quantify could not take our own SEG of
    it. Read back on the sheared grid the frames span, each segment is its finding voxel for voxel and measures
    the same. Lesion A touches slices 1-2 and B 3-5, so every gap between frames is one slice; the SliceThickness
    (the step's length) tells the step when frames skip slices."""
    from medanomaly.io import read
    from medanomaly.io.dicom_writer import write_dicom_series

    tilt = np.radians(15.0)
    sheared = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, np.sin(tilt)], [0.0, 0.0, np.cos(tilt)]])
    base = make_ct()
    files = write_dicom_series(Volume(base.array, spacing=(0.8, 0.7, 2.5 / np.cos(tilt)), origin=base.origin,
                                      direction=sheared, meta={"modality": "CT"}), tmp_path / "ct")  # fmt: skip
    ct = read(tmp_path / "ct")
    findings = _two_lesions(ct)
    out = write_dicom_outputs(findings, files, ct, tmp_path / "out", run_id="r1")
    assert dciodvfy(out.seg).errors == []
    labels = read(out.seg)
    np.testing.assert_allclose(labels.direction, ct.direction, atol=1e-4)  # positions written with 6 digits
    _assert_segments_are_the_findings(labels, ct, findings)
    gapped = np.zeros(ct.shape, np.uint8)
    gapped[0, 2:5, 2:5], gapped[4, 10:14, 10:14] = 1, 1  # two segments on slices 0 and 4 only: frames 4 slices apart
    skipping = write_dicom_outputs(measure_lesions(ct.with_array(gapped), ct), files, ct, tmp_path / "g", run_id="g")
    assert np.array_equal(read(skipping.seg).placed_on(ct).array > 0, gapped > 0)


def _edited(files: list[Path], folder: Path, **values: object) -> list[Path]:
    """Copies of the series whose headers hold ``values`` (None deletes the attribute)."""
    folder.mkdir()
    out = []
    for f in files:
        ds = pydicom.dcmread(f)
        for keyword, value in values.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        ds.save_as(folder / f.name, enforce_file_format=False)
        out.append(folder / f.name)
    return out


@pytest.mark.parametrize(("values", "words"), [
    ({"FrameOfReferenceUID": None}, "source image without FrameOfReferenceUID"),
    ({"StudyInstanceUID": None}, "source image without StudyInstanceUID"),
    ({"ImageOrientationPatient": None}, "without a valid ImageOrientationPatient"),
    ({"ImageOrientationPatient": [1, 0, 0, 1, 0, 0]}, "without a valid ImageOrientationPatient"),
    ({"PixelSpacing": [1.0]}, "PixelSpacing '1.0' is not two positive numbers"),
    ({"PixelSpacing": [0, 0]}, "is not two positive numbers"),
])  # fmt: skip
def test_a_source_our_outputs_cannot_reference_is_one_line_naming_the_file(ct_series, tmp_path: Path, values,
                                                                           words: str) -> None:  # noqa: ANN001
    """Source headers the volume reader takes with fallbacks (no orientation: identity; no frame of reference) made
    highdicom raise a ValueError / TypeError / AttributeError traceback after the model had run; refused when the
    source is loaded, naming the file (``detect --dicom`` loads it before the model runs)."""
    ct, files = ct_series
    edited = _edited(files, tmp_path / "edited", **values)
    with pytest.raises(InputError, match=re.escape(words)) as err:
        load_source_series(edited, ct)
    assert err.value.path in edited


def test_copied_values_that_are_not_valid_dicom_are_cleaned_and_the_outputs_stay_valid(ct_series, tmp_path: Path) -> None:
    """A birth date of ``xx``, a study date of 20261399, an unknown character set, or non-ASCII names with none
    declared: the SEG / SR copy these from the source (highdicom raised a ValueError, its enum for the character set;
    undeclared non-ASCII text made invalid values). Dates are emptied, the text is written as UTF-8, dciodvfy passes."""
    ct, files = ct_series
    for case, values in {"dates": {"PatientBirthDate": "xx", "StudyDate": "20261399", "StudyTime": "99"},
                         "charset": {"SpecificCharacterSet": "ISO_IR 999"},
                         "undeclared": {"PatientName": "Müller^Zoë"}}.items():
        edited = _edited(files, tmp_path / case, **values)
        out = write_dicom_outputs(_two_lesions(ct), edited, ct, tmp_path / f"o_{case}", run_id="r")
        for path in out.paths():
            assert dciodvfy(path).errors == [], (case, path.name, dciodvfy(path).errors)
        seg = pydicom.dcmread(out.seg)
        if case == "dates":
            assert seg.PatientBirthDate == "" and seg.StudyDate == ""
        else:
            assert seg.SpecificCharacterSet == "ISO_IR 192"
    assert str(pydicom.dcmread(out.seg).PatientName) == "Müller^Zoë"


def test_a_series_exported_twice_gets_its_seg_and_sr(ct_series, tmp_path: Path) -> None:
    """The volume of a folder holding two copies of a series is read once; its DICOM outputs then found "two source
    files for one slice" and the batch reported the series an error. Copies of an instance count once."""
    import shutil

    from medanomaly.io import read

    _, files = ct_series
    shutil.copytree(files[0].parent, tmp_path / "export2")
    both = sorted(files) + sorted((tmp_path / "export2").glob("*.dcm"))
    ct = read(files[0].parent)
    out = write_dicom_outputs(_two_lesions(ct), both, ct, tmp_path / "out", run_id="r1")
    assert dciodvfy(out.seg).errors == [] and load_source_series(both, ct).slice_index == tuple(range(ct.shape[0]))
