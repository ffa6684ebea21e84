"""Property tests: pseudonyms, date shifts and UID remaps (hypothesis)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from medanomaly.privacy.profile import shift_date, shift_datetime
from medanomaly.privacy.pseudonym import MAX_SHIFT_DAYS, date_shift_days, file_id, pseudonym
from medanomaly.privacy.uids import is_registered_uid, is_valid_uid, remap_uid

keys = st.binary(min_size=16, max_size=64)
identities = st.text(min_size=1, max_size=64).filter(lambda s: s.strip())
uid_parts = st.integers(min_value=0, max_value=10**12).map(str)
uids = st.lists(uid_parts, min_size=2, max_size=8).map(".".join).filter(lambda u: len(u) <= 64)
dates = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 12, 31))


@settings(max_examples=40, deadline=None)
@given(keys, keys, identities)
def test_pseudonym_deterministic_per_key_distinct_across_keys(k1, k2, ident):
    p = pseudonym(k1, ident)
    assert p == pseudonym(k1, ident)
    assert p.startswith("ANON") and len(p) == 16 and p.isalnum() and p.isupper()
    if k1 != k2:
        assert p != pseudonym(k2, ident)


@settings(max_examples=60, deadline=None)
@given(keys, identities, identities)
def test_distinct_patients_get_distinct_pseudonyms(k, a, b):
    if a.strip() != b.strip():
        assert pseudonym(k, a) != pseudonym(k, b)


@settings(max_examples=60, deadline=None)
@given(keys, identities, dates, dates)
def test_date_shift_consistent_per_patient_and_keeps_intervals(k, ident, d1, d2):
    days = date_shift_days(k, ident)
    assert -MAX_SHIFT_DAYS <= days <= -1 and days == date_shift_days(k, ident)
    s1 = shift_date(d1.strftime("%Y%m%d"), days)
    s2 = shift_date(d2.strftime("%Y%m%d"), days)
    p1, p2 = (dt.datetime.strptime(s, "%Y%m%d").date() for s in (s1, s2))
    assert (p2 - p1) == (d2 - d1)
    assert (p1 - d1).days == days
    stamp = d1.strftime("%Y%m%d") + "101530.25+0100"
    assert shift_datetime(stamp, days) == s1 + "101530.25+0100"


@settings(max_examples=100, deadline=None)
@given(keys, uids, uids)
def test_uid_remap_valid_consistent_and_injective(k, u1, u2):
    r1 = remap_uid(k, u1)
    assert r1 == remap_uid(k, u1)
    if is_registered_uid(u1):
        assert r1 == u1
    else:
        assert is_valid_uid(r1) and len(r1) <= 64 and r1.startswith("2.25.") and r1 != u1
    if u1 != u2 and not is_registered_uid(u1) and not is_registered_uid(u2):
        assert r1 != remap_uid(k, u2)


@settings(max_examples=30, deadline=None)
@given(keys, st.text(min_size=1, max_size=80))
def test_file_ids_are_keyed_hex(k, rel):
    fid = file_id(k, rel)
    assert len(fid) == 16 and int(fid, 16) >= 0 and fid == file_id(k, rel)


def test_registered_uids_kept_and_invalid_uids_detected():
    k = b"0123456789abcdef"
    assert remap_uid(k, "1.2.840.10008.5.1.4.1.1.2") == "1.2.840.10008.5.1.4.1.1.2"
    assert not is_valid_uid("1.02.3") and not is_valid_uid("1." + "1" * 70) and not is_valid_uid("1.a")
    assert shift_date("2017", -3) is None and shift_date("notadate", -3) is None
    assert shift_date("20170101-20170110", -1) == "20161231-20170109"


# a "Qz" prefix so a value cannot occur by chance in pixel data or another element
phi_text = st.text(alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd")), min_size=6, max_size=24).map(
    lambda s: "Qz" + s
)


@settings(max_examples=25, deadline=None)
@given(phi_text, phi_text, phi_text, st.integers(min_value=1, max_value=4))
def test_random_phi_at_any_depth_never_reaches_the_output(name, comment, private, depth):
    """Random identifiers planted in the header, in sequences nested ``depth`` deep and in private
    tags never appear in the written bytes (UTF-8 character set, so any letter is encodable)."""
    from io import BytesIO

    import pydicom
    from pydicom.dataset import Dataset

    from medanomaly.data.sources import real_data
    from medanomaly.privacy.profile import deidentify_dataset
    from medanomaly.privacy.uids import fix_file_meta

    ds = pydicom.dcmread(real_data("pydicom/CT_small.dcm"))
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = name
    ds.ImageComments = comment
    item = ds
    for _ in range(depth):
        child = Dataset()
        child.PersonName = name
        child.TextValue = comment  # (0040,A160) free text in structured content
        child.add_new(0x00091001, "LO", private)
        item.ContentSequence = [child]
        item = child
    ds.private_block(0x0029, "ANY CREATOR", create=True).add_new(0x01, "LO", private)
    deidentify_dataset(ds, b"property-test-key-0123")
    fix_file_meta(ds)
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    raw = buf.getvalue()
    for value in (name, private):
        assert value.encode("utf-8") not in raw


@settings(max_examples=200, deadline=None)
@given(st.dates(), st.integers(min_value=-MAX_SHIFT_DAYS, max_value=-1))
def test_every_date_shifts_to_a_valid_da_or_is_emptied(day, days):
    """Placeholder dates refused a valid file ("de-identification failed": 00010105 moved before year 1 raised) or
    came out as 7 digits (09990101 -> '9890103': strftime drops a year's leading zeros), an invalid DA."""
    shifted = shift_date(f"{day.year:04d}{day.month:02d}{day.day:02d}", days)
    if (day - dt.date.min).days < -days:
        assert shifted is None  # emptied, as a date that cannot be parsed
    else:
        assert shifted is not None and len(shifted) == 8 and shifted.isdigit()
        moved = dt.date(int(shifted[:4]), int(shifted[4:6]), int(shifted[6:]))
        assert (moved - day).days == days
