"""DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile, with options.

The attribute table (``annex_e.json`` beside this module, 460 rows with the basic-profile action
and each option's action, plus 5 patient-identity rows of later revisions) is data, not code. :func:`action_table` resolves it for a set of
:class:`ProfileOptions`; :func:`deidentify_dataset` applies it to a pydicom dataset in place,
recursing into every sequence item.

Actions (PS3.15 E.1.1): ``X`` remove, ``Z`` empty, ``D`` dummy value, ``K`` keep, ``C`` clean
(free text kept with every identifier of this patient scrubbed out), ``U`` keyed UID remap,
plus ``S`` (shift a date by the per-patient offset) and ``P`` (keyed pseudonym, used for
Patient's Name and Patient ID so a patient stays linkable across files).
Compound codes are resolved to the action that keeps the dataset valid whatever the IOD:
``X/Z`` -> Z, any code with ``D`` -> D, ``X/Z/U*`` -> keep and recurse (UIDs inside are remapped).

Safety net beyond the table (elements the table does not list): person names (PN) are emptied,
non-registered UIDs (UI) remapped, dates and date-times (DA/DT) follow the date option, times
(TM) are emptied unless dates are kept or shifted, public elements of unknown VR (UN) removed, free
text inside a sequence whose action is D (Content Sequence TEXT items...) dummied except codes,
private elements removed unless safe-listed.

Why our own table and not ``deid`` or ``dicognito``: pydicom/deid ships recipe files, not the
Annex E table (its default recipe covers a subset and needs a recipe language to extend); dicognito
implements a fixed anonymisation without the profile options. The table as data makes the
profile auditable row by row against the standard.

Example:
    >>> opts = ProfileOptions(dates="shift", retain_patient_characteristics=True)
    >>> action_table(opts)[0x00101010]  # Patient's Age kept under Retain Patient Characteristics
    'K'
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from medanomaly.privacy.pseudonym import date_shift_days, pseudonym
from medanomaly.privacy.uids import remap_uid

DATE_OPTIONS = ("remove", "shift", "keep")

#: DICOM CID 7050 de-identification method codes (DCM scheme).
METHOD_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "pixels": ("113101", "Clean Pixel Data Option"),
    "desc": ("113105", "Clean Descriptors Option"),
    "full": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "mod": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "pat": ("113108", "Retain Patient Characteristics Option"),
    "dev": ("113109", "Retain Device Identity Option"),
    "priv": ("113111", "Retain Safe Private Option"),
    "inst": ("113112", "Retain Institution Identity Option"),
}

_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"})
_DUMMY = {
    "PN": "ANONYMOUS", "LO": "ANONYMOUS", "SH": "ANONYMOUS", "CS": "ANONYMOUS", "AE": "ANONYMOUS",
    "LT": "ANONYMOUS", "ST": "ANONYMOUS", "UT": "ANONYMOUS", "UC": "ANONYMOUS", "UR": "",
    "DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000Y", "IS": "0", "DS": "0",
    "US": 0, "SS": 0, "UL": 0, "SL": 0, "FL": 0.0, "FD": 0.0, "UV": 0, "SV": 0,
}  # fmt: skip
_FREE_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT", "PN"})
#: Coded-entry attributes (codes, not free text) kept inside sequences the profile dummies.
_CODED_ENTRY_TAGS = frozenset({
    0x00080100, 0x00080102, 0x00080103, 0x00080104, 0x00080105, 0x00080106, 0x00080107,
    0x00080119, 0x00080120, 0x00080121, 0x0008010B, 0x0008010F, 0x00080117, 0x00081150,
})  # fmt: skip


@dataclass(frozen=True)
class ProfileOptions:
    """Which Annex E options apply on top of the Basic Profile.

    Attributes:
        dates: ``"remove"`` (basic profile), ``"shift"`` (Retain Longitudinal Temporal
            Information, Modified Dates: every date of a patient moves by one keyed offset of
            1-3650 days into the past; times kept) or ``"keep"`` (Full Dates option).
        retain_patient_characteristics: keep sex, age, size, weight, ethnic group, smoking and
            pregnancy status; clean allergies, pre-medication, special needs, patient state.
        clean_descriptors: keep descriptions and comments (series/study description, protocol
            name, comments...) with this patient's identifiers scrubbed, instead of removing them.
        retain_device_identity: keep station name, serial numbers, device ids.
        retain_institution_identity: keep institution name/address/department.
        safe_private: private elements to keep, as ``(private creator, element byte)`` pairs,
            e.g. ``("GEMS_ACQU_01", 0x0C)`` for ``(0019,xx0C)``; everything else private goes.
    """

    dates: str = "remove"
    retain_patient_characteristics: bool = False
    clean_descriptors: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    safe_private: frozenset[tuple[str, int]] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.dates not in DATE_OPTIONS:
            raise ValueError(f"dates must be one of {DATE_OPTIONS}, got {self.dates!r}")

    def enabled(self) -> list[str]:
        """Option keys (``annex_e.json`` ``option_keys``) in the order they override the basic action."""
        keys = []
        if self.dates == "keep":
            keys.append("full")
        if self.dates == "shift":
            keys.append("mod")
        for flag, name in (
            (self.retain_patient_characteristics, "pat"),
            (self.clean_descriptors, "desc"),
            (self.retain_device_identity, "dev"),
            (self.retain_institution_identity, "inst"),
            (bool(self.safe_private), "priv"),
        ):
            if flag:
                keys.append(name)
        return keys


@dataclass(frozen=True)
class Rule:
    """One row of the Annex E table."""

    tag: str
    basic: str
    options: dict[str, str]
    name: str


@lru_cache(maxsize=1)
def load_table() -> tuple[Rule, ...]:
    """The Annex E rows from ``annex_e.json`` (packaged data)."""
    text = resources.files("medanomaly.privacy").joinpath("annex_e.json").read_text(encoding="utf-8")
    data = json.loads(text)
    rows = data["rows"] + data.get("supplement", [])
    rules = []
    for tag, basic, opts, name in rows:
        parsed = dict(item.split("=") for item in opts.split()) if opts else {}
        rules.append(Rule(tag, basic, parsed, name))
    return tuple(rules)


def _resolve_basic(code: str) -> str:
    if code in ("X", "Z", "D", "K", "C", "U"):
        return code
    if code == "X/Z/U*":
        return "K"  # keep the sequence, its UIDs are remapped by their own rows
    if "D" in code:
        return "D"
    if code == "X/Z":
        return "Z"
    raise ValueError(f"unknown Annex E action {code!r}")


def resolve(rule: Rule, options: ProfileOptions) -> str:
    """The action for one row under ``options`` (the last enabled option listed in the row wins)."""
    action = _resolve_basic(rule.basic)
    for key in options.enabled():
        code = rule.options.get(key)
        if code is None:
            continue
        action = "S" if (key == "mod" and code == "C") else code
    return action


@lru_cache(maxsize=32)
def action_table(options: ProfileOptions) -> dict[int, str]:
    """``{tag: action}`` for every exact tag of the table, resolved for ``options``."""
    return {int(r.tag, 16): resolve(r, options) for r in load_table() if all(c in "0123456789ABCDEF" for c in r.tag)}


@lru_cache(maxsize=32)
def _mask_actions(options: ProfileOptions) -> dict[str, str]:
    return {r.tag: resolve(r, options) for r in load_table() if not all(c in "0123456789ABCDEF" for c in r.tag)}


# ------------------------------------------------------------------------------------ values
def shift_date(value: str, days: int) -> str | None:
    """Shift a DA value (``YYYYMMDD`` or a range ``A-B``) by ``days``; None if it cannot be parsed."""
    value = value.strip()
    if not value:
        return value
    if "-" in value:
        parts = [shift_date(p, days) if p else "" for p in value.split("-")]
        return None if any(p is None for p in parts) else "-".join(parts)  # type: ignore[arg-type]
    try:
        day = _dt.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return None
    if len(value) != 8:
        return None
    return (day + _dt.timedelta(days=days)).strftime("%Y%m%d")


def shift_datetime(value: str, days: int) -> str | None:
    """Shift the date part of a DT value, keeping time and offset; None if it has no full date."""
    value = value.strip()
    if not value:
        return value
    head = shift_date(value[:8], days) if len(value) >= 8 else None
    return None if head is None else head + value[8:]


def phi_terms(ds) -> list[str]:
    """Identifying strings of this dataset, for the Clean action (longest first)."""
    terms: set[str] = set()
    for tag in (0x00100010, 0x00101001, 0x00101005, 0x00101060, 0x00080090, 0x00081050, 0x00081060, 0x00081070):
        if tag in ds and ds[tag].value:
            values = ds[tag].value if ds[tag].VM > 1 else [ds[tag].value]
            for v in values:
                terms.update(t for t in re.split(r"[\^=\s,]+", str(v)) if len(t) >= 2)
    for tag in (0x00100020, 0x00101000, 0x00080050, 0x00100030, 0x00101040, 0x00080080, 0x00080081, 0x00200010):
        if tag in ds and ds[tag].value:
            values = ds[tag].value if ds[tag].VM > 1 else [ds[tag].value]
            terms.update(str(v).strip() for v in values if len(str(v).strip()) >= 2)
    return sorted(terms, key=len, reverse=True)


_GENERIC_PHI = re.compile(
    r"\b\d{1,4}[/.\-]\d{1,2}[/.\-]\d{2,4}\b"  # dates like 08/29/1951
    r"|\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b"  # YYYYMMDD
    r"|\b\d{5,}\b"  # long numbers: MRNs, accession numbers, phone numbers
)


# --------------------------------------------------------------------------------- the walker
@dataclass
class DeidOutcome:
    """What :func:`deidentify_dataset` did: counts per (attribute keyword, action), and identity.

    ``identity`` and ``original`` hold PHI: they exist only in memory for the optional encrypted
    lookup file and are never logged or audited.
    """

    pseudonym: str
    counts: Counter = field(default_factory=Counter)
    identity: str = ""
    original: dict[str, str] = field(default_factory=dict)


@lru_cache(maxsize=8192)
def _keyword(tag: int) -> str:
    from pydicom.datadict import keyword_for_tag

    return keyword_for_tag(tag) or f"{tag:08X}"


class _Walker:
    def __init__(self, key: bytes, options: ProfileOptions, shift: int, terms: list[str], counts: Counter):
        self.key = key
        self.options = options
        self.actions = action_table(options)
        self.masks = _mask_actions(options)
        self.shift = shift
        self.counts = counts
        self.dummy_depth = 0
        self.scrub = re.compile("|".join(re.escape(t) for t in terms), re.IGNORECASE) if terms else None

    def _clean_text(self, text: str) -> str:
        if self.scrub is not None:
            text = self.scrub.sub("X", text)
        return _GENERIC_PHI.sub("X", text)

    def _action_for(self, tag: int, vr: str) -> str:
        action = self.actions.get(tag)
        if action is not None:
            return action
        group, elem = tag >> 16, tag & 0xFFFF
        if group & 0xFF00 == 0x5000:
            return self.masks["50xxxxxx"]
        if group & 0xFF00 == 0x6000 and elem in (0x3000, 0x4000):
            return self.masks[f"60xx{elem:04X}"]
        if self.dummy_depth and vr in _FREE_TEXT_VRS and tag not in _CODED_ENTRY_TAGS:
            return "D"  # free text inside a D sequence (e.g. Content Sequence TEXT items)
        if vr == "UN":  # a public element nobody (not even pydicom's dictionary) knows: may hold anything
            return "X"
        if vr == "PN":
            return "Z"
        if vr == "UI":
            return "U"
        if vr in ("DA", "DT"):
            return {"remove": "Z", "keep": "K", "shift": "S"}[self.options.dates]
        if vr == "TM":
            return "Z" if self.options.dates == "remove" else "K"
        return "K"

    def walk(self, ds) -> None:
        safe_blocks = self._safe_private_blocks(ds)
        for tag in list(ds.keys()):
            if tag.group == 0x0002:
                continue
            if tag.group & 1:
                self._private(ds, tag, safe_blocks)
                continue
            # Decide from the raw element when possible: converting every value costs more than
            # the whole profile, and deleted or kept elements never need it.
            raw = ds.get_item(tag)
            vr = raw.VR
            if vr is None or vr == "UN":
                vr = ds[tag].VR
            action = self._action_for(int(tag), vr)
            self.counts[(_keyword(int(tag)), action)] += 1
            if action == "X":
                del ds[tag]
            elif action != "K" or vr == "SQ":
                self._apply(ds, ds[tag], action, vr)

    def _safe_private_blocks(self, ds) -> dict[tuple[int, int], str]:
        if not self.options.safe_private:
            return {}
        creators = {c for c, _ in self.options.safe_private}
        blocks = {}
        for tag in ds.keys():
            if tag.group & 1 and 0x10 <= tag.element <= 0xFF:
                value = ds[tag].value
                if isinstance(value, bytes):
                    value = value.decode("ascii", "replace")
                if str(value).strip() in creators:
                    blocks[(tag.group, tag.element)] = str(value).strip()
        return blocks

    def _private(self, ds, tag, safe_blocks) -> None:
        keep = False
        if safe_blocks:
            if 0x10 <= tag.element <= 0xFF:
                keep = (tag.group, tag.element) in safe_blocks
            else:
                creator = safe_blocks.get((tag.group, tag.element >> 8))
                keep = creator is not None and (creator, tag.element & 0xFF) in self.options.safe_private
        if keep:
            self.counts[("private", "K")] += 1
            elem = ds[tag]
            if elem.VR == "SQ":
                for item in elem.value:
                    self.walk(item)
        else:
            self.counts[("private", "X")] += 1
            del ds[tag]

    def _apply(self, ds, elem, action: str, vr: str) -> None:
        if action == "X":
            del ds[elem.tag]
            return
        if vr == "SQ":
            if action == "Z":
                elem.value = []
            else:  # D, K, C, U*: keep the structure, clean every item
                self.dummy_depth += action == "D"
                try:
                    for item in elem.value:
                        self.walk(item)
                finally:
                    self.dummy_depth -= action == "D"
            return
        if action == "K" or elem.value is None or elem.value == "":
            return
        if action == "Z":
            elem.value = None
        elif action == "D":
            elem.value = _DUMMY.get(vr)
        elif action == "U":
            if vr == "UI":
                elem.value = self._map(elem.value, lambda v: remap_uid(self.key, str(v)))
            else:
                elem.value = None
        elif action == "S":
            if vr == "DA":
                elem.value = self._map(elem.value, lambda v: shift_date(str(v), self.shift) or "")
            elif vr == "DT":
                elem.value = self._map(elem.value, lambda v: shift_datetime(str(v), self.shift) or "")
            elif vr == "TM":
                return
            else:
                del ds[elem.tag]
        elif action == "C":
            if vr in _TEXT_VRS:
                elem.value = self._map(elem.value, lambda v: self._clean_text(str(v)))
        else:  # pragma: no cover - the table only holds the actions above
            raise ValueError(f"unknown action {action!r}")

    @staticmethod
    def _map(value, fn):
        from pydicom.multival import MultiValue

        if isinstance(value, (list, tuple, MultiValue)):
            return [fn(v) for v in value]
        return fn(value)


def patient_identity(ds) -> str:
    """The string that identifies the patient for pseudonyms and date shifts (PHI: keep in memory).

    Patient ID (with its issuer when present), else Patient's Name, else the Study Instance UID
    (an anonymous study still gets one consistent pseudonym).
    """
    pid = str(ds.get("PatientID", "") or "").strip()
    if pid:
        issuer = str(ds.get("IssuerOfPatientID", "") or "").strip()
        return f"{issuer}|{pid}" if issuer else pid
    name = str(ds.get("PatientName", "") or "").strip()
    if name:
        return "name|" + name
    return "study|" + str(ds.get("StudyInstanceUID", "") or "")


def deidentify_dataset(ds, key: bytes, options: ProfileOptions | None = None) -> DeidOutcome:
    """Apply the profile to ``ds`` in place (file meta is left to :func:`uids.fix_file_meta`).

    Args:
        ds: a pydicom ``Dataset`` (its pixel data is not touched here).
        key: the project secret (:func:`medanomaly.privacy.pseudonym.load_key`).
        options: profile options (default: Basic Profile only).

    Returns:
        counts per (attribute keyword, action) for the audit, and the pseudonym given.
    """
    options = options or ProfileOptions()
    identity = patient_identity(ds)
    original = {"patient_id": str(ds.get("PatientID", "") or ""), "patient_name": str(ds.get("PatientName", "") or "")}
    outcome = DeidOutcome(pseudonym=pseudonym(key, identity), identity=identity, original=original)
    cleans = "C" in action_table(options).values()
    terms = phi_terms(ds) if cleans else []
    walker = _Walker(key, options, date_shift_days(key, identity), terms, outcome.counts)
    walker.walk(ds)

    ds.PatientName = outcome.pseudonym
    ds.PatientID = outcome.pseudonym
    outcome.counts[("PatientName", "P")] += 1
    outcome.counts[("PatientID", "P")] += 1
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = {"remove": "REMOVED", "shift": "MODIFIED", "keep": "UNMODIFIED"}[
        options.dates
    ]
    set_method(ds, options)
    return outcome


def set_method(ds, options: ProfileOptions, pixels_cleaned: bool = False) -> None:
    """Write De-identification Method and its Code Sequence (CID 7050) for the options applied."""
    from pydicom.dataset import Dataset

    keys = ["basic", *(k for k in options.enabled())]
    if pixels_cleaned:
        keys.append("pixels")
    items = []
    for k in keys:
        item = Dataset()
        item.CodeValue, item.CodeMeaning = METHOD_CODES[k]
        item.CodingSchemeDesignator = "DCM"
        items.append(item)
    ds.DeidentificationMethodCodeSequence = items
    label = "medanomaly PS3.15 E basic" + "".join(f"+{k}" for k in keys[1:])
    ds.DeidentificationMethod = label[:64]
