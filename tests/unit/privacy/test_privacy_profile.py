"""The Annex E table and its options, checked row by row against known entries of the standard."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.dataset import Dataset

from medanomaly.data.sources import real_data
from medanomaly.privacy.profile import (
    ProfileOptions,
    action_table,
    deidentify_dataset,
    load_table,
    resolve,
)

BASIC_CODES = {"X", "Z", "D", "K", "C", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}


def test_table_is_complete_and_well_formed():
    rules = load_table()
    assert len(rules) >= 656  # the 2026c edition of Table E.1-1 has 656 rows
    assert len({r.tag for r in rules}) == len(rules)
    for r in rules:
        assert r.basic in BASIC_CODES, r
        assert set(r.options) <= {"uids", "dev", "inst", "pat", "full", "mod", "desc", "struct", "graph", "priv"}
        assert set(r.options.values()) <= {"K", "C", "X"}
    by_name = {r.name: r for r in rules}
    # spot checks against PS3.15 Table E.1-1
    assert by_name["Patient's Name"].basic == "Z" and by_name["Patient ID"].basic == "Z/D"  # 2026c
    assert by_name["Patient's Birth Date"].basic == "Z"
    assert by_name["Study Instance UID"].basic == "U" and by_name["SOP Instance UID"].basic == "U"
    assert by_name["Patient's Age"].options == {"pat": "K"}
    assert by_name["Study Date"].options == {"full": "K", "mod": "C"}
    assert by_name["Series Description"].options == {"desc": "C"}
    assert by_name["Station Name"].options == {"dev": "K"} and by_name["Station Name"].basic == "X/Z/D"


def test_options_change_the_actions():
    basic = action_table(ProfileOptions())
    assert basic[0x00101010] == "X" and basic[0x00080020] == "Z" and basic[0x0008103E] == "X"
    assert basic[0x00081140] == "K"  # Referenced Image Sequence: kept, UIDs inside remapped
    opts = ProfileOptions(dates="shift", retain_patient_characteristics=True, clean_descriptors=True)
    table = action_table(opts)
    assert table[0x00101010] == "K" and table[0x00100040] == "K"  # age, sex
    assert table[0x00080020] == "S" and table[0x0008103E] == "C"
    assert action_table(ProfileOptions(dates="keep"))[0x00080020] == "K"
    assert action_table(ProfileOptions(retain_device_identity=True))[0x00081010] == "K"
    with pytest.raises(ValueError):
        ProfileOptions(dates="sometimes")
    rule = next(r for r in load_table() if r.name == "Allergies")
    assert resolve(rule, ProfileOptions()) == "X" and resolve(rule, ProfileOptions(clean_descriptors=True)) == "C"


def _ct():
    ds = pydicom.dcmread(real_data("pydicom/CT_small.dcm"))
    ds.PatientName = "Buc^Jerome"
    ds.PatientID = "MRN55501234"
    ds.SeriesDescription = "Chest Jerome Buc 08/29/1951 MRN55501234"
    ds.PatientAge = "066Y"
    ds.PatientSex = "M"
    ds.add_new(0x60003000, "OW", b"\x01\x02" * 8)  # overlay data (can hold burned-in annotation)
    ds.add_new(0x60004000, "LT", "overlay by Buc")
    ds.add_new(0x50000010, "US", 3)  # curve data group
    ds.add_new(0x00181012, "DA", "20170302")  # Date of Secondary Capture: X in the 2026c table
    ds.add_new(0x00141020, "DA", "20170302")  # Expiry Date: not in the table, a date
    ds.add_new(0x00321032, "PN", "Requesting^Doctor")
    ds.add_new(0x0018FFF0, "UN", b"Buc Jerome")  # a public tag unknown to the dictionary
    item = Dataset()
    item.add_new(0x00401101, "SQ", [])
    item.add_new(0x0040A123, "PN", "Nested^Person")
    ds.add_new(0x0040A730, "SQ", [item])
    return ds


def test_basic_profile_on_a_real_ct(key):
    ds = _ct()
    out = deidentify_dataset(ds, key)
    assert str(ds.PatientName) == out.pseudonym == ds.PatientID
    for tag in ("SeriesDescription", "PatientAge", "RequestingPhysician"):
        assert tag not in ds
    assert 0x60003000 not in ds and 0x60004000 not in ds and 0x50000010 not in ds
    assert 0x0018FFF0 not in ds  # safety net: unknown public element removed
    assert 0x00181012 not in ds  # a row of the 2026c edition
    assert not ds[0x00141020].value  # allowlist: an unlisted date is emptied
    assert str(ds.ContentSequence[0].PersonName) == "ANONYMOUS"  # D inside a sequence
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert out.counts[("PatientName", "Z")] == 1 and out.counts[("SeriesDescription", "X")] == 1


def test_clean_descriptors_and_patient_characteristics(key):
    ds = _ct()
    deidentify_dataset(ds, key, ProfileOptions(clean_descriptors=True, retain_patient_characteristics=True))
    desc = str(ds.SeriesDescription)
    assert desc.startswith("Chest") and "Buc" not in desc and "Jerome" not in desc
    assert "1951" not in desc and "55501234" not in desc
    assert ds.PatientAge == "066Y" and ds.PatientSex == "M"
    codes = {i.CodeValue for i in ds.DeidentificationMethodCodeSequence}
    assert {"113100", "113105", "113108"} <= codes
