"""A fusion call's Spatial Registration (REG) is de-identified beside the two series it relates: it was refused as "no
pixel data", so a study shared de-identified lost the record of how its PD was moved onto its T1."""

from __future__ import annotations

import pydicom

from medanomaly.privacy.deid import DeidConfig, deidentify_folder
from tests.unit.deploy.test_dicom_reg import MATRIX, _series


def test_a_registration_keeps_its_matrix_and_follows_its_two_series(tmp_path, key):
    from medanomaly.deploy.atomic import atomic_save_dataset
    from medanomaly.deploy.dicom_out import dciodvfy
    from medanomaly.deploy.dicom_reg import build_registration

    folder = tmp_path / "in"
    t1, _ = _series(folder, "t1", "1.2.826.0.1.3680043.8.498.21")
    _, pd = _series(folder, "pd", "1.2.826.0.1.3680043.8.498.22", study="1.2.826.0.1.3680043.8.498.12")
    reg = build_registration(t1, [(pd, MATRIX)], run_id="r1", algorithm="fusion")
    reg.PatientName, reg.PatientID, reg.ContentCreatorName = "Doe^Jane", "MRN-4711", "Smith^John"
    atomic_save_dataset(folder / "reg" / "reg.dcm", reg)
    summary = deidentify_folder(folder, tmp_path / "out", key, DeidConfig(burned_in="never"))
    assert (summary.processed, summary.refused) == (9, 0)  # 4 T1 slices, 4 PD slices, the REG
    images = [ds for ds in map(pydicom.dcmread, (tmp_path / "out").rglob("*.dcm")) if ds.Modality == "MR"]
    (out,) = [p for p in (tmp_path / "out").rglob("*.dcm") if pydicom.dcmread(p).Modality == "REG"]
    new = pydicom.dcmread(out)
    frames = {str(ds.SeriesInstanceUID): str(ds.FrameOfReferenceUID) for ds in images}
    first, moved = new.RegistrationSequence
    assert new.FrameOfReferenceUID == first.FrameOfReferenceUID and len(set(frames.values())) == 2
    assert {first.FrameOfReferenceUID, moved.FrameOfReferenceUID} == set(frames.values())  # one key: still related
    assert {r.ReferencedSOPInstanceUID for item in (first, moved) for r in item.ReferencedImageSequence} == {
        str(ds.SOPInstanceUID) for ds in images}  # every image reference resolves to a de-identified image
    matrix = moved.MatrixRegistrationSequence[0].MatrixSequence[0].FrameOfReferenceTransformationMatrix
    assert [float(v) for v in matrix] == list(MATRIX)  # the transform is numbers: kept
    text = str(new)
    assert not any(phi in text for phi in ("Doe", "MRN-4711", "Smith", "1.2.826.0.1.3680043.8.498.2"))
    assert dciodvfy(out).errors == []
