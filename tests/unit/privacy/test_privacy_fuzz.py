"""Issue 18, item 8: property tests for the de-identifier on random element trees.

Hypothesis builds data sets with nested sequences (public, private, unknown), elements of every
VR, private blocks with and without creators, overlay groups and unknown public elements, and
plants marker strings wherever identifying data can hide. Written in explicit or implicit VR and
read back (so the de-identifier sees raw elements, as with real files), they go through the
profile with default options. Properties: nothing raises, the output can be written and read, and
no planted marker is left in the output bytes. Markers are planted only where the allowlist does
not keep values by design (the safe-listed code and equipment attributes, kept binary data).
"""

from __future__ import annotations

import string
from io import BytesIO

import pydicom
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from medanomaly.privacy.allowlist import safe_text_tags
from medanomaly.privacy.one_file import DeidConfig, Refused, deidentify_file, quiet_pydicom
from medanomaly.privacy.profile import ProfileOptions, action_table, deidentify_dataset
from medanomaly.privacy.uids import fix_file_meta

KEY = b"fuzz-test-project-key-0123"
ALL_VRS = (
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF", "OL",
    "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US",
    "UT", "UV",
)  # fmt: skip
STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"})
BYTES_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_EXCLUDED_GROUPS = (0x0000, 0x0002, 0x0028, 0x7FE0)
_EXCLUDED_TAGS = {0x00080005, 0x00080016, 0x00080018, 0x0020000D, 0x0020000E, 0x00100010, 0x00100020}


def _raw(tag: int, vr: str, text: str):
    """A planted value as a file from elsewhere holds it: raw bytes, whatever the VR's syntax."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    data = text.encode("ascii")
    data += b" " * (len(data) % 2)
    return RawDataElement(Tag(tag), vr, len(data), data, 0, False, True)


def _pools():
    from pydicom._dicom_dict import DicomDictionary

    table = action_table(ProfileOptions())
    kept = safe_text_tags() | {t for t, a in table.items() if a == "K"}
    leaves, plantable, sequences = [], [], []
    for tag, entry in DicomDictionary.items():
        vr = entry[0]
        if tag >> 16 in _EXCLUDED_GROUPS or tag in _EXCLUDED_TAGS or vr not in ALL_VRS or tag & 0xFFFF == 0:
            continue
        if vr == "SQ":
            sequences.append(tag)
            continue
        leaves.append((tag, vr))
        if vr in STRING_VRS and tag not in kept:
            plantable.append((tag, vr))
    return sorted(leaves), sorted(plantable), sorted(sequences)


LEAVES, PLANTABLE, SEQUENCES = _pools()
markers = st.text(alphabet=string.ascii_letters + string.digits, min_size=8, max_size=14).map(lambda s: "Qz" + s)


@st.composite
def valid_value(draw, vr: str):
    """A value that is well formed for ``vr`` (never a marker)."""
    if vr in ("US", "UL", "UV"):
        return draw(st.integers(0, {"US": 2**16 - 1, "UL": 2**32 - 1, "UV": 2**64 - 1}[vr]))
    if vr in ("SS", "SL", "SV"):
        bound = {"SS": 2**15, "SL": 2**31, "SV": 2**63}[vr]
        return draw(st.integers(-bound, bound - 1))
    if vr in ("FL", "FD"):
        return draw(st.floats(-1e6, 1e6, allow_nan=False, width=32 if vr == "FL" else 64))
    if vr == "AT":
        return draw(st.integers(0x00080000, 0x7FDFFFFF))
    if vr in BYTES_VRS:
        return draw(st.binary(min_size=0, max_size=16).map(lambda b: b + b"\x00" * (len(b) % 2)))
    simple = {
        "AE": "STATION1", "AS": "045Y", "CS": "ORIGINAL", "DA": "20200102", "DS": "1.5", "DT": "20200102030405",
        "IS": "42", "TM": "101112", "UI": "1.2.826.0.1.3680043.2.1125.5", "UR": "http://example.org/a",
    }  # fmt: skip
    if vr in simple:
        return simple[vr]
    return draw(st.sampled_from(("", "axial", "2.5 mm", "T1 weighted", "BODY")))


@st.composite
def element(draw, planted: list[str]):
    """One element: a known public one, an unknown public one, or an overlay element."""
    kind = draw(st.sampled_from(("known", "plant", "plant", "unknown", "overlay")))
    if kind == "known":
        tag, vr = draw(st.sampled_from(LEAVES))
        return DataElement(tag, vr, draw(valid_value(vr)))
    if kind == "plant":
        tag, vr = draw(st.sampled_from(PLANTABLE))
    elif kind == "unknown":
        from pydicom.datadict import dictionary_has_tag, repeater_has_tag

        group = draw(st.integers(0x0004, 0x3FFF)) * 2
        tag = (group << 16) | draw(st.integers(1, 0xFFFF))
        if dictionary_has_tag(tag) or repeater_has_tag(tag) or group in _EXCLUDED_GROUPS:
            tag = 0x00109999  # an element PS3.6 does not define
        vr = draw(st.sampled_from([v for v in ALL_VRS if v != "SQ"]))
    else:
        group = 0x6000 + 2 * draw(st.integers(0, 15))
        overlay = ((0x0022, "LO"), (0x1500, "LO"), (0x3000, "OW"), (0x4000, "LT"), (0x0010, "US"))
        elem, vr = draw(st.sampled_from(overlay))
        tag = (group << 16) | elem
    marker = draw(markers)
    if vr in STRING_VRS:
        planted.append(marker)
        return _raw(tag, vr, marker)
    if vr in BYTES_VRS:
        planted.append(marker)
        data = marker.encode()
        return DataElement(tag, vr, data + b"\x00" * (len(data) % 2))
    return DataElement(tag, vr, draw(valid_value(vr)))


@st.composite
def private_block(draw, planted: list[str]):
    """A private creator and 1-3 elements of random VR in its block (sometimes no creator)."""
    group = 2 * draw(st.integers(0x0004, 0x3FFF)) + 1
    block = draw(st.integers(0x10, 0xFF))
    creator = draw(markers)
    elements = []
    if draw(st.booleans()):
        planted.append(creator)
        elements.append(_raw((group << 16) | block, "LO", creator))
    for offset in draw(st.lists(st.integers(0, 0xFF), min_size=1, max_size=3, unique=True)):
        vr = draw(st.sampled_from([v for v in ALL_VRS if v != "SQ"]))
        marker = draw(markers)
        tag = (group << 16) | (block << 8) | offset
        if vr in STRING_VRS:
            planted.append(marker)
            elements.append(_raw(tag, vr, marker))
        elif vr in BYTES_VRS:
            planted.append(marker)
            elements.append(DataElement(tag, vr, marker.encode() + b"\x00" * (len(marker) % 2)))
        else:
            elements.append(DataElement(tag, vr, draw(valid_value(vr))))
    return elements


@st.composite
def tree(draw, planted: list[str], depth: int = 0) -> Dataset:
    """A data set of random elements, private blocks and (to depth 3) nested sequences."""
    ds = Dataset()
    for elem in draw(st.lists(element(planted), max_size=8)):
        ds[elem.tag] = elem
    for _ in range(draw(st.integers(0, 2))):
        for elem in draw(private_block(planted)):
            ds[elem.tag] = elem
    if depth < 3:
        for _ in range(draw(st.integers(0, 2))):
            items = [draw(tree(planted, depth + 1)) for _ in range(draw(st.integers(1, 2)))]
            where = draw(st.sampled_from(("public", "public", "private", "unknown")))
            if where == "public":
                tag = draw(st.sampled_from(SEQUENCES))
            elif where == "private":
                tag = ((2 * draw(st.integers(0x0004, 0x3FFF)) + 1) << 16) | 0x1001
            else:
                tag = 0x00109998
            ds[tag] = DataElement(tag, "SQ", Sequence(items))
    return ds


def _wrap(ds: Dataset, planted: list[str], name: str, pid: str) -> None:
    planted += [name.split("^")[0], name.split("^")[1], pid]
    ds.PatientName = name
    ds.PatientID = pid
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.9.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.9.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.9.3"


def _encode(ds: Dataset, implicit: bool) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1"
    buf = BytesIO()
    with quiet_pydicom():
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@st.composite
def planted_files(draw):
    """(encoded input bytes, markers found in them): a random tree with a planted name and id."""
    planted: list[str] = []
    with quiet_pydicom():
        ds = draw(tree(planted))
    family, given, pid = draw(markers), draw(markers), draw(markers)
    _wrap(ds, planted, f"{family}^{given}", pid)
    raw_in = _encode(ds, draw(st.booleans()))
    found = [m for m in planted if m.encode() in raw_in]  # (a tag drawn twice keeps the last)
    assert {family, given, pid} <= set(found)  # the search can find what was planted
    return raw_in, found


def _deidentified(raw_in: bytes) -> bytes:
    with quiet_pydicom():
        ds = pydicom.dcmread(BytesIO(raw_in))
        deidentify_dataset(ds, KEY)
        fix_file_meta(ds)
        buf = BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        pydicom.dcmread(BytesIO(buf.getvalue()))  # the output is a readable DICOM file
    return buf.getvalue()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(planted_files())
def test_random_trees_never_crash_and_never_leak_a_planted_string(case):
    raw_in, planted = case
    raw = _deidentified(raw_in)
    assert not [m for m in planted if m.encode() in raw]


def test_the_property_can_fail_when_the_allowlist_is_off(monkeypatch):
    """Negative control: with every unlisted element kept, the same generator finds a leak."""
    from hypothesis import find

    from medanomaly.privacy import walker

    monkeypatch.setattr(walker, "unlisted_action", lambda *args, **kwargs: "K")
    with quiet_pydicom():
        found = find(
            planted_files(),
            lambda case: any(m.encode() in _deidentified(case[0]) for m in case[1]),
            settings=settings(max_examples=200, deadline=None, database=None, phases=[Phase.generate]),
        )
    assert found


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_random_trees_in_real_files_through_the_file_path(tmp_path_factory, data):
    """The same trees added to a real CT file go through the whole per-file path (read, pixel
    checks, profile, file meta): never a failure, never a planted string in the written file."""
    from medanomaly.data.sources import real_data

    planted: list[str] = []
    base = pydicom.dcmread(real_data("pydicom/CT_small.dcm"))
    with quiet_pydicom():
        extra = data.draw(tree(planted))
    for elem in extra:
        base[elem.tag] = elem
    base.PatientName = data.draw(markers)
    planted.append(str(base.PatientName))
    path = tmp_path_factory.mktemp("fuzz") / "in.dcm"
    with quiet_pydicom():
        base.save_as(path, enforce_file_format=True)
    planted = [m for m in planted if m.encode() in path.read_bytes()]
    try:
        result = deidentify_file(path, KEY, DeidConfig(burned_in="never"))
    except Refused as exc:  # pragma: no cover - the assertion message names the reason
        raise AssertionError(f"refused: {exc.reason}") from None
    buf = BytesIO()
    with quiet_pydicom():
        result.dataset.save_as(buf, enforce_file_format=True)
    raw = buf.getvalue()
    assert not [m for m in planted if m.encode() in raw]
