"""RT Structure Sets are de-identified as PS3.15 Table E.1-1 says, beside the images they were drawn on: they were
refused as "no pixel data", so a radiotherapy study could not be shared with its contours."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medanomaly.data.sources import real_data
from medanomaly.privacy.deid import DeidConfig, deidentify_folder
from medanomaly.privacy.table import ProfileOptions
from tests.unit.io.conftest import write_structure_set


def _study(tmp_path):
    """pydicom's CT_small and a structure set drawn on it (its patient, study and frame), one ROI named by a person."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(real_data("pydicom/CT_small.dcm"), folder / "ct.dcm")
    ct = pydicom.dcmread(folder / "ct.dcm")
    square = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [10.0, 10.0, 0.0], [0.0, 10.0, 0.0]])
    rs_path = write_structure_set(folder / "rs.dcm", [(1, "GTV Dr Smith", [square])], frame=ct.FrameOfReferenceUID)
    rs = pydicom.dcmread(rs_path)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "FrameOfReferenceUID"):
        setattr(rs, keyword, ct.get(keyword, ""))
    rs.StructureSetLabel, rs.StructureSetDate = "Smith plan", "20240102"
    image = Dataset()
    image.ReferencedSOPClassUID, image.ReferencedSOPInstanceUID = ct.SOPClassUID, ct.SOPInstanceUID
    rs.ROIContourSequence[0].ContourSequence[0].ContourImageSequence = Sequence([image])
    rs.save_as(rs_path, enforce_file_format=True)
    return folder, ct


def test_a_structure_set_keeps_its_contours_and_follows_its_images(tmp_path, key):
    folder, ct = _study(tmp_path)
    out = tmp_path / "out"
    summary = deidentify_folder(folder, out, key, DeidConfig(burned_in="never"))
    assert (summary.processed, summary.refused) == (2, 0)
    by_modality = {ds.Modality: ds for ds in map(pydicom.dcmread, out.rglob("*.dcm"))}
    rs, new_ct = by_modality["RTSTRUCT"], by_modality["CT"]
    assert rs.PatientName == new_ct.PatientName != ct.PatientName and rs.StudyInstanceUID == new_ct.StudyInstanceUID
    reference = rs.ROIContourSequence[0].ContourSequence[0].ContourImageSequence[0].ReferencedSOPInstanceUID
    assert reference == new_ct.SOPInstanceUID != ct.SOPInstanceUID  # the contour still points at its slice
    assert [float(v) for v in rs.ROIContourSequence[0].ContourSequence[0].ContourData][:3] == [0.0, 0.0, 0.0]
    assert rs.StructureSetROISequence[0].ROIName == ""  # Table E.1-1: Z (a name a person typed)
    assert rs.StructureSetLabel not in ("", "Smith plan") and "Smith" not in str(rs)


def test_roi_names_are_kept_cleaned_under_clean_descriptors(tmp_path, key):
    folder, _ = _study(tmp_path)
    options = ProfileOptions(clean_descriptors=True)
    deidentify_folder(folder, tmp_path / "out", key, DeidConfig(options=options, burned_in="never"))
    rs = next(ds for ds in map(pydicom.dcmread, (tmp_path / "out").rglob("*.dcm")) if ds.Modality == "RTSTRUCT")
    name = rs.StructureSetROISequence[0].ROIName
    assert name.startswith("GTV") and "Smith" not in name  # the cleaner drops the person ("GTV X")


def test_a_de_identified_structure_set_still_measures_on_its_de_identified_image(tmp_path, key):
    """Its Referenced Frame of Reference UID is remapped with the image's Frame of Reference UID (one key), so the
    pair still shares one frame (``read_mask`` refuses a structure set in another frame) and its voxels are the same."""
    from medanomaly.io import read, read_mask

    folder, ct = _study(tmp_path)
    square = np.array([[-150.0, -170.0, -75.7], [-140.0, -170.0, -75.7], [-140.0, -160.0, -75.7], [-150.0, -160.0, -75.7]])
    rs = pydicom.dcmread(folder / "rs.dcm")
    rs.ROIContourSequence[0].ContourSequence[0].ContourData = [f"{v:.4f}" for v in square.ravel()]
    rs.save_as(folder / "rs.dcm", enforce_file_format=True)
    before = read_mask(folder / "rs.dcm", read(folder / "ct.dcm")).array
    out = tmp_path / "out"
    deidentify_folder(folder, out, key, DeidConfig(burned_in="never"))
    by_modality = {pydicom.dcmread(p).Modality: p for p in out.rglob("*.dcm")}
    image = read(by_modality["CT"])
    assert image.meta["frame_of_reference_uid"] != ct.FrameOfReferenceUID
    after = read_mask(by_modality["RTSTRUCT"], image).array
    assert before.sum() > 100 and np.array_equal(after, before)
