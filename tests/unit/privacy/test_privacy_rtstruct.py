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
    rs_path = write_structure_set(folder / "rs.dcm", [(1, "GTV Dr Smith", [square])])
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
