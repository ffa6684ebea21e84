"""Done-when: a PHI-laden corpus leaves no PHI value anywhere in the output bytes.

The corpus is built here from real files: pydicom's charset files (patient names in Latin-1,
Arabic, Greek, Hebrew, Cyrillic, Japanese, Korean, Chinese) and a 3-file CT series made from
CT_small, with PHI planted in nested sequences, private tags, dates, UIDs and free-text comments.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medanomaly.data.sources import real_data
from medanomaly.privacy.deid import DeidConfig, deidentify_folder
from medanomaly.privacy.profile import ProfileOptions
from medanomaly.privacy.uids import is_valid_uid, remap_uid

CHARSETS = (
    "chrArab.dcm", "chrFren.dcm", "chrGerm.dcm", "chrGreek.dcm", "chrH31.dcm", "chrH32.dcm",
    "chrHbrw.dcm", "chrI2.dcm", "chrRuss.dcm", "chrX1.dcm", "chrX2.dcm",
)  # fmt: skip


def _plant(ds: Dataset, i: int) -> list[str]:
    """Plant PHI everywhere the profile must reach; returns the planted values (PHI to look for)."""
    name = str(ds.get("PatientName", "") or f"Doe{i}^Jane")
    pid = f"MRN{i:03d}XQ77"
    phi = {
        "pid": pid,
        "other_name": f"Maiden{i}name",
        "accession": f"ACC{i:04d}99887",
        "birth": "19510829",
        "address": f"{i} Rue Secrete Paris",
        "phone": f"+33-1-5555-{i:04d}",
        "institution": f"Clinique Confidentielle {i}",
        "referrer": f"Referrer{i}^Doctor",
        "comment": f"Patient {name.split('^')[0]} seen by Dr Hidden{i}",
        "nested_person": f"Observer{i}^Nested",
        "private_text": f"PrivateSecret{i}",
        "private_nested": f"DeepPrivate{i}^Name",
        "acq_dt": "20170302172457",
        "study_date": "20170302",
        "uid_ref": f"1.2.826.0.1.3680043.2.1125.{i}.77777",
    }
    ds.PatientID = pid
    ds.OtherPatientNames = phi["other_name"]
    ds.AccessionNumber = phi["accession"]
    ds.PatientBirthDate = phi["birth"]
    ds.PatientAddress = phi["address"]
    ds.PatientTelephoneNumbers = phi["phone"]
    ds.InstitutionName = phi["institution"]
    ds.ReferringPhysicianName = phi["referrer"]
    ds.ImageComments = phi["comment"]
    ds.PatientComments = phi["comment"]
    ds.StudyDate = phi["study_date"]
    ds.AcquisitionDateTime = phi["acq_dt"]
    # nested sequences: request attributes -> content with a person name, a UID and a date
    inner = Dataset()
    inner.PersonName = phi["nested_person"]
    inner.UID = phi["uid_ref"]
    inner.ObservationDateTime = phi["acq_dt"]
    req = Dataset()
    req.RequestedProcedureID = phi["accession"]
    req.ContentSequence = Sequence([inner])
    ds.RequestAttributesSequence = Sequence([req])
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = phi["uid_ref"]
    ref.ContentSequence = Sequence([Dataset()])
    ref.ContentSequence[0].PersonName = phi["nested_person"]
    ds.ReferencedImageSequence = Sequence([ref])
    # private tags: a creator block with text and a nested sequence holding a name
    block = ds.private_block(0x0011, "ACME PHI STORE", create=True)
    block.add_new(0x01, "LO", phi["private_text"])
    item = Dataset()
    item.add_new(0x00100010, "PN", phi["private_nested"])
    block.add_new(0x02, "SQ", Sequence([item]))
    values = [name, *phi.values()]
    if ds.get("OtherPatientNames"):
        values.append(str(ds.OtherPatientNames))
    return values


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, charset):
    """(input folder, {file name: (planted values, charsets, original UIDs, pixel bytes)})."""
    root = tmp_path_factory.mktemp("corpus_in")
    info = {}
    for i, fname in enumerate(CHARSETS):
        ds = pydicom.dcmread(charset(fname))
        values = _plant(ds, i)
        ds.save_as(root / fname, enforce_file_format=True)
        uids = [str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID)]
        info[fname] = (values, ds.get("SpecificCharacterSet", "ISO_IR 6"), uids, ds.PixelData)
    # a 3-file CT series referencing each other (one patient, one study, one series)
    base = pydicom.dcmread(real_data("pydicom/CT_small.dcm"))
    sops = [f"1.2.826.0.1.3680043.2.1125.9.{k}" for k in range(3)]
    for k in range(3):
        ds = pydicom.dcmread(real_data("pydicom/CT_small.dcm"))
        ds.PatientName = "Smith^Johnathan^Q"
        values = _plant(ds, 100)
        ds.SOPInstanceUID = sops[k]
        ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = sops[(k + 1) % 3]
        ds.file_meta.MediaStorageSOPInstanceUID = sops[k]
        ds.InstanceNumber = k + 1
        fname = f"series_{k}.dcm"
        ds.save_as(root / fname, enforce_file_format=True)
        uids = [sops[k], str(base.SeriesInstanceUID), str(base.StudyInstanceUID), str(base.FrameOfReferenceUID)]
        info[fname] = (values, ds.get("SpecificCharacterSet", "ISO_IR 6"), uids, ds.PixelData)
    return root, info, sops


@pytest.fixture(scope="module")
def deidentified(corpus, tmp_path_factory, key):
    root, info, sops = corpus
    out = tmp_path_factory.mktemp("corpus_out")
    summary = deidentify_folder(root, out, key, DeidConfig(ocr_check=False))
    return out, summary


def _output_for(out: Path, key: bytes, sop: str) -> Path:
    (found,) = list(out.rglob(f"{remap_uid(key, sop)}.dcm"))
    return found


def test_no_phi_value_survives_in_output_bytes(corpus, deidentified, key, needles):
    root, info, _ = corpus
    out, summary = deidentified
    assert summary.processed == len(info) and summary.refused == 0
    for fname, (values, charsets, uids, _) in info.items():
        raw = _output_for(out, key, uids[0]).read_bytes()
        checked = 0
        for value in values:
            for needle in needles(value, charsets):
                assert needle not in raw, f"{fname}: a planted PHI value survived"
                checked += 1
        for uid in uids:
            assert uid.encode() not in raw
        assert checked >= len(values)
    # nothing in the output tree names a patient either
    names = " ".join(p.name for p in out.rglob("*"))
    for fname, (values, *_rest) in info.items():
        assert fname not in names
        assert values[1] not in names


def test_every_planted_value_is_found_in_the_input(corpus, needles):
    """The needle search can fail: every planted value is found in the input bytes."""
    root, info, _ = corpus
    for fname, (values, charsets, _, _) in info.items():
        raw = (root / fname).read_bytes()
        for value in values:
            assert any(n in raw for n in needles(value, charsets)), f"{fname}: needle search misses a value"


def test_safe_private_list_keeps_only_the_listed_element(corpus, tmp_path, key, needles):
    """Negative control: a safe-listed private element survives, and the search sees it."""
    root, info, _ = corpus
    out = tmp_path / "safe"
    options = ProfileOptions(safe_private=frozenset({("ACME PHI STORE", 0x01)}))
    deidentify_folder(root, out, key, DeidConfig(options=options, burned_in="never"))
    fname = "chrFren.dcm"
    values, charsets, uids, _ = info[fname]
    raw = _output_for(out, key, uids[0]).read_bytes()
    kept = [v for v in values if v.startswith("PrivateSecret")]
    gone = [v for v in values if v.startswith("DeepPrivate")]
    assert kept and all(any(n in raw for n in needles(v, charsets)) for v in kept)
    assert gone and not any(n in raw for v in gone for n in needles(v, charsets))


def test_series_uids_consistent_and_references_remapped(corpus, deidentified, key):
    root, info, sops = corpus
    out, _ = deidentified
    outs = [pydicom.dcmread(_output_for(out, key, s)) for s in sops]
    assert len({d.StudyInstanceUID for d in outs}) == 1
    assert len({d.SeriesInstanceUID for d in outs}) == 1
    assert len({d.FrameOfReferenceUID for d in outs}) == 1
    assert len({d.PatientID for d in outs}) == 1 and outs[0].PatientID == outs[0].PatientName
    new_sops = [d.SOPInstanceUID for d in outs]
    for k, d in enumerate(outs):
        assert d.ReferencedImageSequence[0].ReferencedSOPInstanceUID == new_sops[(k + 1) % 3]
        assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
        assert d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # registered UIDs are kept
        for uid in (d.SOPInstanceUID, d.SeriesInstanceUID, d.StudyInstanceUID):
            assert is_valid_uid(uid)
        assert d.PatientIdentityRemoved == "YES"
        assert d.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert not any(t.group & 1 for t in d.keys())


def test_pixels_without_burned_in_text_are_bit_identical(corpus, deidentified, key):
    root, info, _ = corpus
    out, _ = deidentified
    for fname, (_, _, uids, pixels) in info.items():
        assert pydicom.dcmread(_output_for(out, key, uids[0])).PixelData == pixels, fname


def test_date_shift_keeps_intervals_per_patient(corpus, tmp_path, key):
    root, info, sops = corpus
    out = tmp_path / "shift"
    deidentify_folder(root, out, key, DeidConfig(options=ProfileOptions(dates="shift"), burned_in="never"))
    outs = [pydicom.dcmread(_output_for(out, key, s)) for s in sops]
    assert len({d.StudyDate for d in outs}) == 1 and outs[0].StudyDate != "20170302"
    d = outs[0]
    # AcquisitionDateTime and StudyDate moved by the same number of days; the time is kept
    assert d.AcquisitionDateTime[:8] == d.StudyDate and d.AcquisitionDateTime[8:] == "172457"
    assert d.LongitudinalTemporalInformationModified == "MODIFIED"
    assert "PatientBirthDate" not in d or not d.PatientBirthDate
