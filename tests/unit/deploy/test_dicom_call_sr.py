"""A whole-image call as a DICOM SR: a classifier on an archive, a PACS or a DICOM upload left nothing in DICOM."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from medanomaly.deploy.dicom_call_sr import is_call, read_call_sr
from medanomaly.deploy.dicom_out import dciodvfy, write_dicom_outputs
from medanomaly.types import Finding, Prediction

CALL = Prediction(scores=(0.12, 0.07, 0.81), class_names=("benign", "uncertain", "malignant"), label="malignant")


def test_a_call_is_an_sr_of_its_class_and_probabilities_that_dciodvfy_accepts(ct_series, tmp_path: Path) -> None:
    ct, files = ct_series
    out = write_dicom_outputs([], files, ct, tmp_path / "o", run_id="r", site="breast", algorithm="classification",
                              call=CALL)  # fmt: skip
    assert out.seg is None and out.rtstruct is None and out.sr is not None
    assert read_call_sr(out.sr) == {"class": "malignant", "certainty": pytest.approx(0.81),
                                    "probabilities": {"benign": pytest.approx(0.12), "uncertain": pytest.approx(0.07),
                                                      "malignant": pytest.approx(0.81)}}  # fmt: skip
    assert dciodvfy(out.sr).errors == []
    sr, source = pydicom.dcmread(out.sr), pydicom.dcmread(files[0])
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.CodingSchemeIdentificationSequence[0]
    evidence = {i.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                for series in s.ReferencedSeriesSequence for i in series.ReferencedSOPSequence}  # fmt: skip
    assert evidence == {pydicom.dcmread(f).SOPInstanceUID for f in files}, "the whole series is the evidence"
    again = write_dicom_outputs([], files, ct, tmp_path / "again", run_id="r", call=CALL)
    assert pydicom.dcmread(again.sr).SOPInstanceUID == sr.SOPInstanceUID  # a rerun rewrites the same instance


def test_an_abstained_call_says_so(ct_series, tmp_path: Path) -> None:
    ct, files = ct_series
    abstained = Prediction(scores=(0.48, 0.52), class_names=("normal", "abnormal"), label="abnormal", abstained=True)
    out = write_dicom_outputs([], files, ct, tmp_path / "o", run_id="r", call=abstained)
    assert read_call_sr(out.sr)["class"] == "abstained (not to be acted on)" and dciodvfy(out.sr).errors == []


def test_findings_anomaly_scores_and_nan_are_not_calls() -> None:
    finding = Finding(center_mm=(0.0, 0.0, 0.0), bbox_mm=((0, 0, 0), (1, 1, 1)), score=0.9, label="nodule")
    assert is_call(CALL)
    assert not is_call(Prediction(scores=(0.2, 0.8), class_names=("a", "b"), label="b", findings=(finding,)))
    assert not is_call(Prediction(scores=(5.7,), class_names=("anomaly",), label="anomaly"))  # a score, not p
    assert not is_call(Prediction(scores=(float("nan"), 0.5), class_names=("a", "b"), label="b"))


def test_a_detector_that_finds_nothing_says_so_in_standard_codes(ct_series, tmp_path: Path, small_archive,
                                                                 fake_module) -> None:  # fmt: skip
    """A detector that found nothing wrote nothing: a PACS could not tell a study read and clear from one never read.
    Lesion (SCT 52988006) = Absent (SCT 272519000); through an archive batch, every clear series gets one."""
    import json

    from medanomaly.deploy.batch import BatchOptions, run_batch

    ct, files = ct_series
    out = write_dicom_outputs([], files, ct, tmp_path / "o", run_id="r", site="lung", report_none=True)
    assert out.seg is None and read_call_sr(out.sr) == {"absent": "Lesion"} and dciodvfy(out.sr).errors == []
    assert "CodingSchemeIdentificationSequence" not in pydicom.dcmread(out.sr), "standard codes only"
    assert write_dicom_outputs([], files, ct, tmp_path / "none", run_id="r").sr is None  # a classifier: no call given

    batch = tmp_path / "batch"
    run_batch(fake_module.FakeDetector(threshold_hu=10_000.0), small_archive.root, batch, BatchOptions(),
              progress=False)  # fmt: skip
    for uid in small_archive.good:
        record = json.loads((batch / "series" / f"{uid}.json").read_text())
        assert record["n_findings"] == 0 and read_call_sr(batch / record["dicom"]["sr"]) == {"absent": "Lesion"}


def _algorithm_parameters(path: Path) -> list[str]:
    """Every Algorithm Parameters (DCM 111002) text of an SR's content tree."""
    found: list[str] = []

    def walk(items) -> None:
        for item in items:
            code = item.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in item else ""
            if code == "111002":
                found.append(str(item.TextValue))
            walk(item.get("ContentSequence", []))

    walk(pydicom.dcmread(path).ContentSequence)
    return found


def test_an_sr_carries_the_runs_thresholds_as_its_algorithm_parameters(ct_series, tmp_path: Path, small_archive,
                                                                       fake_module) -> None:  # fmt: skip
    """A "no findings" said nothing of the operating point: a detector that found nothing at 0.5 is not one that found
    nothing at 0.05. The run's thresholds are the algorithm's parameters in every SR (TID 4019)."""
    import json
    from types import SimpleNamespace

    from medanomaly.deploy.batch import BatchOptions, run_batch

    ct, files = ct_series
    parameters = ("candidate=0.15", "finding=0.5")
    for name, kwargs in (("none", {"report_none": True}), ("call", {"call": CALL})):
        out = write_dicom_outputs([], files, ct, tmp_path / name, run_id="r", parameters=parameters, **kwargs)
        assert _algorithm_parameters(out.sr) == list(parameters) and dciodvfy(out.sr).errors == [], name
    model = fake_module.FakeDetector(threshold_hu=10_000.0)
    model.info = SimpleNamespace(**vars(model.info), thresholds={"finding": 0.5, "candidate": 0.15, "text": "x"})
    run_batch(model, small_archive.root, tmp_path / "batch", BatchOptions(), progress=False)
    record = json.loads((tmp_path / "batch" / "series" / f"{small_archive.good[0]}.json").read_text())
    assert _algorithm_parameters(tmp_path / "batch" / record["dicom"]["sr"]) == list(parameters)


def test_a_big_endian_call_sr_reads_back_as_the_same_call(ct_series, tmp_path: Path) -> None:
    """A call SR an archive rewrote in Explicit VR Big Endian was a highdicom ValueError in read_call_sr."""
    from pydicom.uid import ExplicitVRBigEndian

    ct, files = ct_series
    out = write_dicom_outputs([], files, ct, tmp_path / "o", run_id="r", algorithm="classification", call=CALL)
    ds = pydicom.dcmread(out.sr)
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    pydicom.dcmwrite(tmp_path / "be.dcm", ds, implicit_vr=False, little_endian=False)
    assert read_call_sr(tmp_path / "be.dcm") == read_call_sr(out.sr)
