"""Issue 18, item 1: an element survives only where the profile or the allowlist says keep."""

from __future__ import annotations

from io import BytesIO

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medanomaly.data.sources import real_data
from medanomaly.privacy.allowlist import safe_text_tags, unlisted_action, well_formed
from medanomaly.privacy.freetext import Scrubber, phi_terms
from medanomaly.privacy.profile import ProfileOptions, action_table, deidentify_dataset, load_table
from medanomaly.privacy.uids import fix_file_meta

KEY = b"allowlist-test-key-0123456789"


def _ct() -> pydicom.FileDataset:
    ds = pydicom.dcmread(real_data("pydicom/CT_small.dcm"))
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN7781234"
    return ds


def _bytes(ds) -> bytes:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _raw(ds, tag: int, vr: str, value: bytes) -> None:
    """Put a raw (unvalidated) element into ``ds``, as a file from elsewhere can hold it."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    ds._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def _roundtrip(ds) -> pydicom.FileDataset:
    """Write and read back, so the de-identifier sees raw elements as it does on real files."""
    return pydicom.dcmread(BytesIO(_bytes(ds)))


def test_the_elements_issue_18_found_in_the_output_are_gone():
    ds = _ct()
    ds.add_new(0x00400400, "LT", "Comments naming QzAlpha")  # Comments on the Scheduled Procedure Step
    ds.add_new(0x0040A160, "UT", "Text naming QzBravo")  # Text Value, top level
    inner = Dataset()
    inner.add_new(0x0040A160, "UT", "Nested text naming QzCharlie")
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "T-D3000", "SRT", "Chest"
    ds.add_new(0x00082218, "SQ", Sequence([inner]))  # Anatomic Region Sequence: not in the table
    ds.add_new(0x0040E001, "ST", "HL7 id QzDelta^^^HOSP")  # HL7 Instance Identifier
    ds.add_new(0x00400556, "ST", "Acquisition context QzEcho")  # Acquisition Context Description
    ds.add_new(0x00120041, "LO", "Issuer QzFoxtrot")  # Issuer of Clinical Trial Subject ID
    ds.add_new(0x60000010, "US", 8)  # an overlay: rows, description, label, data
    ds.add_new(0x60000022, "LO", "Overlay QzGolf")
    ds.add_new(0x60001500, "LO", "Label QzHotel")
    ds.add_new(0x60003000, "OW", b"\x00" * 8)
    ds.add_new(0x00109999, "LO", "Unknown public QzIndia")
    ds.preamble = b"QzJuliet preamble".ljust(128, b"\x00")
    ds.file_meta.SourceApplicationEntityTitle = "QZKILO"
    ds.file_meta.PrivateInformationCreatorUID = "1.2.3.4"
    ds.file_meta.PrivateInformation = b"QzLima private meta"
    raw_in = _bytes(ds)
    for planted in (b"QzAlpha", b"QzBravo", b"QzCharlie", b"QzDelta", b"QzEcho", b"QzFoxtrot", b"QzGolf",
                    b"QzHotel", b"QzIndia", b"QzJuliet", b"QZKILO", b"QzLima"):  # fmt: skip
        assert planted in raw_in  # the search can find them
    ds = pydicom.dcmread(BytesIO(raw_in))
    deidentify_dataset(ds, KEY)
    fix_file_meta(ds)
    raw = _bytes(ds)
    for planted in (b"QzAlpha", b"QzBravo", b"QzCharlie", b"QzDelta", b"QzEcho", b"QzFoxtrot", b"QzGolf",
                    b"QzHotel", b"QzIndia", b"QzJuliet", b"QZKILO", b"QzLima"):  # fmt: skip
        assert planted not in raw, planted
    out = pydicom.dcmread(BytesIO(raw))
    assert raw[:128] == b"\x00" * 128
    assert not any(t.group == 0x6000 for t in out.keys())  # the whole overlay went with its data
    assert 0x00109999 not in out and 0x00400556 not in out and 0x00120041 not in out
    assert out.AnatomicRegionSequence[0].CodeMeaning == "Chest"  # codes survive, the text does not
    meta = {int(t) for t in out.file_meta.keys()} - {0x00020000}
    assert meta == {0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013}


def test_current_table_rows_and_the_allowlist_data():
    table = action_table(ProfileOptions())
    assert table[0x00400556] == "X" and table[0x00120041] == "X" and table[0x00120043] == "X"
    assert table[0x00080012] == "X" or table[0x00080012] == "D"  # Instance Creation Date, X/D in 2026c
    tags = {r.tag for r in load_table()}
    assert len(tags) >= 656
    safe = safe_text_tags()
    assert 0x00080070 in safe and 0x00080104 in safe
    assert not safe & set(table), "a safe-listed attribute the table acts on would be kept wrongly"


@pytest.mark.parametrize(
    ("tag", "vr", "expected"),
    [
        (0x0040A160, "UT", "Z"),  # Text Value
        (0x00400400, "LT", "Z"),  # Comments on the Scheduled Procedure Step
        (0x0040E001, "ST", "Z"),  # HL7 Instance Identifier
        (0x00080070, "LO", "K"),  # Manufacturer (safe list)
        (0x00321032, "PN", "Z"),  # a person name
        (0x00400241, "AE", "Z"),  # an AE title
        (0x00080016, "UI", "U"),  # a UID: remapped unless registered
        (0x00280010, "US", "K"),  # Rows
        (0x00080008, "CS", "K"),  # Image Type
        (0x00141020, "DA", "Z"),  # an unlisted date under the basic profile
    ],
)
def test_unlisted_actions(tag, vr, expected):
    assert unlisted_action(tag, vr, ProfileOptions()) == expected


def test_unlisted_free_text_is_cleaned_under_clean_descriptors_and_dummied_in_content():
    opts = ProfileOptions(clean_descriptors=True)
    assert unlisted_action(0x0040A160, "UT", opts) == "C"
    assert unlisted_action(0x0040A160, "UT", ProfileOptions(), in_dummy=True) == "D"
    assert unlisted_action(0x00080104, "LO", ProfileOptions(), in_dummy=True) == "K"  # Code Meaning
    assert unlisted_action(0x00141020, "DA", ProfileOptions(dates="shift")) == "S"


def test_values_kept_as_they_are_must_be_well_formed():
    assert well_formed("CS", ["ORIGINAL", "PRIMARY", "AXIAL", "ABDOM/RAD", ""])
    assert not well_formed("CS", ["Jane Smith"]) and not well_formed("CS", ["A" * 17])
    assert well_formed("DS", ["0.5", "-1.25e3", " 12 "]) and not well_formed("DS", ["Smith"])
    assert well_formed("IS", ["12"]) and not well_formed("IS", ["12a"])
    assert well_formed("AS", ["066Y"]) and not well_formed("AS", ["Jane"])
    assert well_formed("DA", ["20170302", ""]) and not well_formed("DA", ["Jane"])
    ds = _ct()
    _raw(ds, 0x00080008, "CS", b"ORIGINAL\\PRIMARY\\Jane Doe")  # a name typed into a code string
    _raw(ds, 0x00180050, "DS", b"Jane")  # into a number
    ds.ConvolutionKernel = "STANDARD"
    ds = _roundtrip(ds)
    deidentify_dataset(ds, KEY, ProfileOptions(dates="keep", retain_patient_characteristics=True))
    assert not ds.ImageType and not ds.SliceThickness
    assert ds.ConvolutionKernel == "STANDARD" and ds.Rows == 128


def test_clean_descriptors_scrubs_dates_in_words_phones_addresses_and_names_anywhere():
    ds = _ct()
    observer = Dataset()
    observer.add_new(0x0040A123, "PN", "Hidden^Observer")  # a name deep in a sequence
    ds.add_new(0x0040A730, "SQ", Sequence([observer]))
    ds.ImageComments = (
        "Chest for Jane Doe born 29 Aug 1944 (March 17th 1944), tel +1 (555) 123-4567, "
        "742 Evergreen Terrace, seen by Observer Hidden and Dr Watson"
    )
    ds.add_new(0x0040A160, "UT", "Note: 12 rue de la Paix, 75002 Paris; Hauptstrasse 5; call 555 0199")
    ds = _roundtrip(ds)
    deidentify_dataset(ds, KEY, ProfileOptions(clean_descriptors=True))
    desc, note = str(ds.ImageComments), str(ds.TextValue)
    assert desc.startswith("Chest for")
    for gone in ("Jane", "Doe", "1944", "Aug", "March", "555", "4567", "Evergreen", "742", "Observer", "Hidden",
                 "Watson"):  # fmt: skip
        assert gone not in desc, gone
    for gone in ("12 rue", "Paix", "75002", "Hauptstrasse", "0199"):
        assert gone not in note, gone


def test_phi_terms_collects_names_at_any_depth_and_scrubber_spares_short_words():
    ds = Dataset()
    ds.PatientName = "Li^Wei"
    item = Dataset()
    item.add_new(0x00081050, "PN", "Surgeon^Sam")
    ds.add_new(0x00400275, "SQ", Sequence([Dataset()]))
    ds[0x00400275].value[0].add_new(0x0040A730, "SQ", Sequence([item]))
    terms = phi_terms(ds)
    assert {"Li", "Wei", "Surgeon", "Sam"} <= set(terms)
    text = Scrubber(terms).clean("Clinical note: Li Wei operated by Surgeon")
    assert text == "Clinical note: X X operated by X"  # "Li" goes as a word, not inside "Clinical"
    ds.InstitutionName = "Springfield General Hospital"
    terms = phi_terms(ds)
    assert "Springfield" in terms and "General" not in terms and "Hospital" not in terms
    assert Scrubber(terms).clean("from Springfield, a general hospital") == "from X, a general hospital"


def test_file_meta_elements_and_group_lengths_inside_the_data_set_are_removed():
    ds = Dataset()
    ds.add_new(0x00020016, "AE", "SRCNODE")  # Source Application Entity Title, misplaced in the body
    ds.add_new(0x00020003, "UI", "1.2.3.4")  # Media Storage SOP Instance UID (a table row: U)
    ds.add_new(0x00080000, "UL", 42)  # a group length
    ds.Manufacturer = "ACME"
    deidentify_dataset(ds, KEY)
    assert not [t for t in ds.keys() if t.group == 0x0002 or t.element == 0]
    assert ds.Manufacturer == "ACME"
