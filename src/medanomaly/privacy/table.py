"""DICOM PS3.15 Annex E Table E.1-1 as data, and the options that change its actions.

The attribute table (``annex_e.json`` beside this module: the 460 rows of the innolitics
transcription with each option's action, plus the rows of the current 2026c edition it lacks,
656 rows in all) is data, not code. :func:`action_table` resolves it for a set of
:class:`ProfileOptions`.

Actions (PS3.15 E.1.1): ``X`` remove, ``Z`` empty, ``D`` dummy value, ``K`` keep, ``C`` clean
(free text kept with every identifier scrubbed out), ``U`` keyed UID remap, plus ``S`` (shift a
date by the per-patient offset) and ``P`` (keyed pseudonym, for Patient's Name and Patient ID).
Compound codes are resolved to the action that keeps the dataset valid whatever the IOD:
``X/Z`` -> Z, any code with ``D`` -> D, ``X/Z/U*`` -> keep and recurse (UIDs inside are remapped).

Example:
    >>> opts = ProfileOptions(dates="shift", retain_patient_characteristics=True)
    >>> action_table(opts)[0x00101010]  # Patient's Age kept under Retain Patient Characteristics
    'K'
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

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
            name, comments...) and the free text the table does not list, cleaned (names found
            anywhere in the header, dates, phone numbers, addresses scrubbed), instead of
            removing or emptying them.
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
    data = json.loads(_data_text("annex_e.json"))
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
def mask_actions(options: ProfileOptions) -> dict[str, str]:
    return {r.tag: resolve(r, options) for r in load_table() if not all(c in "0123456789ABCDEF" for c in r.tag)}


def _data_text(name: str) -> str:
    return resources.files("medanomaly.privacy").joinpath(name).read_text(encoding="utf-8")


#: Bumped whenever the walker changes what survives, so a resumed run never mixes two versions.
PROFILE_VERSION = 2


@lru_cache(maxsize=1)
def profile_id() -> str:
    """An id of the profile in force: walker version + digest of the table and allowlist data.

    The resume record of a folder run stores it; a later run with another profile refuses to
    resume (its earlier outputs were made under other rules).
    """
    digest = hashlib.sha256()
    for name in ("annex_e.json", "safe_text.json"):
        digest.update(_data_text(name).encode("utf-8"))
    return f"v{PROFILE_VERSION}-{digest.hexdigest()[:12]}"
