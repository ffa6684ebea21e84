"""Issue 18, done-when: a planted-PHI corpus of 40+ values in 25+ places beyond the existing tests
leaves no value in the output bytes with default options.

The places are the ones the issue found leaking (Text Value at the top and nested in an unlisted
sequence, Comments on the Scheduled Procedure Step, HL7 Instance Identifier, Acquisition Context
Description, Issuer of Clinical Trial Subject ID, overlay description and label, an unknown
public element, the preamble, the file meta) and many more the earlier corpus test does not
touch: physicians, operators, observers and recipients in and out of sequences, structured
content, graphic annotations, admission and order data, device and station ids, retired
interpretation attributes, private blocks in explicit and implicit VR. Three real files (CT and
MR, explicit VR; CT written in implicit VR) carry every value.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medanomaly.data.sources import real_data
from medanomaly.privacy.deid import DeidConfig, deidentify_folder


def _item(**attrs) -> Dataset:
    item = Dataset()
    for keyword, value in attrs.items():
        setattr(item, keyword, value)
    return item


def _plant(ds: Dataset) -> list[tuple[str, str]]:
    """Plant the corpus into ``ds``; returns (place, value) pairs (values are what must vanish)."""
    placed: list[tuple[str, str]] = []

    def put(place: str, value: str, store=None) -> None:
        placed.append((place, value))
        if store is not None:
            store(value)

    put("Comments on the Scheduled Procedure Step (top)", "Quimbyfarnsworth",
        lambda v: ds.add_new(0x00400400, "LT", f"call {v} before"))
    sps = Dataset()
    put("Scheduled Performing Physician's Name (in SPS)", "Drakenfeld^Ottoline",
        lambda v: setattr(sps, "ScheduledPerformingPhysicianName", v))
    put("Comments on the Scheduled Procedure Step (in SPS)", "Wexhamptonlea",
        lambda v: sps.add_new(0x00400400, "LT", f"ask {v}"))
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    put("Text Value (top)", "Thornbury-Vasquez", lambda v: ds.add_new(0x0040A160, "UT", f"patient {v} anxious"))
    region = _item(CodeValue="T-D3000", CodingSchemeDesignator="SRT", CodeMeaning="Chest")
    put("Text Value (in Anatomic Region Sequence, unlisted)", "Ellingborough",
        lambda v: region.add_new(0x0040A160, "UT", f"{v} family history"))
    put("unknown public element (in an unlisted sequence)", "Gravenstein-Oduya",
        lambda v: region.add_new(0x00109998, "LO", v))
    ds.AnatomicRegionSequence = Sequence([region])
    put("HL7 Instance Identifier", "HL7-883412-QXT", lambda v: ds.add_new(0x0040E001, "ST", f"{v}^^^HOSP"))
    put("Acquisition Context Description", "Pemberton-Achebe",
        lambda v: ds.add_new(0x00400556, "ST", f"acquired for {v}"))
    put("Issuer of Clinical Trial Subject ID", "St Wilfrida Trials Office",
        lambda v: ds.add_new(0x00120041, "LO", v))
    for elem, vr, value in ((0x0010, "US", 8), (0x0011, "US", 8), (0x0040, "CS", "G"), (0x0050, "SS", [1, 1]),
                            (0x0100, "US", 1), (0x0102, "US", 0), (0x3000, "OW", b"\x00" * 8)):  # fmt: skip
        ds.add_new(0x60000000 | elem, vr, value)
    put("Overlay Description", "Hollingsworth-Mbeki", lambda v: ds.add_new(0x60000022, "LO", f"marks by {v}"))
    put("Overlay Label", "Featherstonehaugh", lambda v: ds.add_new(0x60001500, "LO", v))
    put("unknown public element (0010,9999)", "Zbigniewska", lambda v: ds.add_new(0x00109999, "LO", v))
    put("Patient's Mother's Birth Name", "Oyelaran^Adebisi", lambda v: setattr(ds, "PatientMotherBirthName", v))
    other = _item()
    put("Other Patient IDs Sequence > Patient ID", "ALT-5541-9920", lambda v: setattr(other, "PatientID", v))
    put("Other Patient IDs Sequence > Issuer", "Riverside Mercy Registry",
        lambda v: setattr(other, "IssuerOfPatientID", v))
    ds.OtherPatientIDsSequence = Sequence([other])
    put("Patient's Telecom Information", "bartholomew.k@example.org",
        lambda v: setattr(ds, "PatientTelecomInformation", v))
    put("Referring Physician's Address", "88 Marlowe Crescent", lambda v: setattr(ds, "ReferringPhysicianAddress", v))
    put("Physician(s) of Record", "Aldous^Penhaligon", lambda v: setattr(ds, "PhysiciansOfRecord", v))
    put("Performing Physician's Name", "Cristobal^Ynfante", lambda v: setattr(ds, "PerformingPhysicianName", v))
    put("Operators' Name", "Marguerite^Tessaro", lambda v: setattr(ds, "OperatorsName", v))
    put("Requesting Physician", "Ignatius^Fairweather", lambda v: setattr(ds, "RequestingPhysician", v))
    put("Requesting Service", "Ward Nightingale Seven", lambda v: setattr(ds, "RequestingService", v))
    put("Names of Intended Recipients of Results", "Philippa^Rosenquist",
        lambda v: setattr(ds, "NamesOfIntendedRecipientsOfResults", v))
    put("Order Entered By", "Leopold^Vantongeren", lambda v: setattr(ds, "OrderEnteredBy", v))
    observer = _item()
    put("Verifying Observer Name (in sequence)", "Henrietta^Abernathy",
        lambda v: setattr(observer, "VerifyingObserverName", v))
    put("Verifying Organization (in sequence)", "Abernathy Diagnostics LLP",
        lambda v: setattr(observer, "VerifyingOrganization", v))
    ds.VerifyingObserverSequence = Sequence([observer])
    put("Admission ID", "ADM-20231188", lambda v: setattr(ds, "AdmissionID", v))
    put("Current Patient Location", "Bay 14 Rosewood Wing", lambda v: setattr(ds, "CurrentPatientLocation", v))
    put("Additional Patient History", "Dunmore-Kapoor",
        lambda v: setattr(ds, "AdditionalPatientHistory", f"sister {v} had cancer"))
    put("Study Description (name)", "Valdemarsson", lambda v: setattr(ds, "StudyDescription", f"CT {v} chest"))
    put("Series Description (date in words)", "29 Aug 1944",
        lambda v: setattr(ds, "SeriesDescription", f"born {v}"))
    put("Protocol Name", "Szczepanik", lambda v: setattr(ds, "ProtocolName", f"{v} protocol"))
    put("Study ID", "STU-7734129", lambda v: setattr(ds, "StudyID", v))
    put("Station Name", "RADSTN-KOWAL", lambda v: setattr(ds, "StationName", v))
    put("Device Serial Number", "SN-99120-ZX", lambda v: setattr(ds, "DeviceSerialNumber", v))
    put("Performed Station AE Title", "PACSNODE77", lambda v: setattr(ds, "PerformedStationAETitle", v))
    put("Responsible Person", "Gwendolyn^Throckmorton", lambda v: setattr(ds, "ResponsiblePerson", v))
    put("Responsible Organization", "Throckmorton Family Trust",
        lambda v: setattr(ds, "ResponsibleOrganization", v))
    inner = Dataset()
    inner.ValueType, inner.RelationshipType = "PNAME", "HAS OBS CONTEXT"
    put("Content Sequence > Person Name (nested 2 deep)", "Octavia^Lindqvist",
        lambda v: setattr(inner, "PersonName", v))
    text_item = Dataset()
    text_item.ValueType, text_item.RelationshipType = "TEXT", "CONTAINS"
    put("Content Sequence > Text Value", "Barnaby-Okonkwo",
        lambda v: setattr(text_item, "TextValue", f"{v} refused contrast"))
    text_item.ContentSequence = Sequence([inner])
    ds.ContentSequence = Sequence([text_item])
    text_object = Dataset()
    put("Graphic Annotation > Text Object > Unformatted Text Value", "Marchetti-Oyelowo",
        lambda v: setattr(text_object, "UnformattedTextValue", v))
    annotation = Dataset()
    annotation.TextObjectSequence = Sequence([text_object])
    ds.GraphicAnnotationSequence = Sequence([annotation])
    request = Dataset()
    put("Request Attributes > Reason for the Requested Procedure", "Pettigrew-Hale",
        lambda v: setattr(request, "ReasonForTheRequestedProcedure", f"{v} insists"))
    ds.RequestAttributesSequence = Sequence([request])
    put("Interpretation Recorder (retired)", "Ambrose^Quill", lambda v: ds.add_new(0x40080102, "PN", v))
    put("Reviewer Name", "Seraphina^Blackwood", lambda v: ds.add_new(0x300E0008, "PN", v))
    put("Identifying Comments (retired)", "Montgomery-Ashdown", lambda v: ds.add_new(0x00084000, "LT", v))
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    put("private OB blob", "Wolfenstein-Abara", lambda v: block.add_new(0x10, "OB", f"<name>{v}</name>".encode()))
    block2 = ds.private_block(0x0019, "ACME 1.0", create=True)
    put("private sequence > PN", "Cornelius^Vandermeer",
        lambda v: block2.add_new(0x20, "SQ", Sequence([_item(PatientName=v)])))
    return placed


def _preamble_and_meta(ds, placed: list[tuple[str, str]]) -> None:
    placed.append(("preamble", "TIFFNAME-Halvorsen"))
    ds.preamble = b"TIFFNAME-Halvorsen".ljust(128, b"\x00")
    placed.append(("file meta Source Application Entity Title", "SRCAE-NORTH"))
    ds.file_meta.SourceApplicationEntityTitle = "SRCAE-NORTH"
    placed.append(("file meta Private Information", "MetaSecret-Ruthven"))
    ds.file_meta.PrivateInformationCreatorUID = "1.2.826.0.1.3680043.2.1125.1"
    ds.file_meta.PrivateInformation = b"MetaSecret-Ruthven"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted_in")
    placed = []
    for i, (name, implicit) in enumerate((("CT_small.dcm", False), ("MR_small.dcm", False), ("CT_small.dcm", True))):
        ds = pydicom.dcmread(real_data(f"pydicom/{name}"))
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.2.1125.88.{i}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        placed = _plant(ds)
        _preamble_and_meta(ds, placed)
        if implicit:
            ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
        ds.save_as(root / f"planted_{i}.dcm", enforce_file_format=True)
    return root, placed


def test_corpus_size_and_every_value_is_in_the_input(corpus, needles):
    root, placed = corpus
    values = {v for _, v in placed}
    places = {p for p, _ in placed}
    assert len(values) >= 40 and len(places) >= 25
    for path in sorted(root.glob("*.dcm")):
        raw = path.read_bytes()
        for place, value in placed:
            assert any(n in raw for n in needles(value, "ISO_IR 100")), f"{path.name}: {place} not planted"


def test_no_planted_value_in_the_output_bytes_with_default_options(corpus, tmp_path, key, needles):
    root, placed = corpus
    out = tmp_path / "out"
    summary = deidentify_folder(root, out, key, DeidConfig())
    assert (summary.processed, summary.refused) == (3, 0)
    outputs = sorted(p for p in out.rglob("*.dcm"))
    assert len(outputs) == 3
    leaks = []
    for path in outputs:
        raw = path.read_bytes()
        assert raw[:128] == bytes(128)
        leaks += [place for place, value in placed if any(n in raw for n in needles(value, "ISO_IR 100"))]
        pydicom.dcmread(path)  # valid DICOM
    assert leaks == []
    audit_text = summary.audit_path.read_text()
    assert not [v for _, v in placed if v in audit_text]
    assert not [v for _, v in placed if any(v in p.name for p in Path(out).rglob("*"))]
