"""De-identify one data set: PS3.15 Annex E profile with options, allowlist, keyed pseudonyms.

:func:`deidentify_dataset` applies the profile in place: every element listed in Table E.1-1
(``annex_e.json``, the current 2026c edition, :mod:`medanomaly.privacy.table`) gets the table's
action for the chosen options; every element the table does not list survives only where the
allowlist says keep (:mod:`medanomaly.privacy.allowlist`: unknown public elements removed, names
and AE titles emptied, free text emptied unless it is a code, equipment or technique attribute,
malformed codes and numbers emptied, UIDs remapped, dates by the date option); private elements
go unless safe-listed; overlays go whole. Patient's Name and Patient ID become one keyed
pseudonym. The Clean (``C``) action and ``--clean-descriptors`` scrub free text with
:class:`medanomaly.privacy.freetext.Scrubber` (names found anywhere in the header, dates in
digits or words, phone numbers, addresses).

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

from collections import Counter
from dataclasses import dataclass, field

from medanomaly.privacy.dates import shift_date, shift_datetime
from medanomaly.privacy.freetext import phi_terms
from medanomaly.privacy.pseudonym import date_shift_days, pseudonym
from medanomaly.privacy.table import (
    DATE_OPTIONS,
    METHOD_CODES,
    ProfileOptions,
    Rule,
    action_table,
    load_table,
    profile_id,
    resolve,
)
from medanomaly.privacy.walker import Walker

__all__ = [
    "DATE_OPTIONS", "METHOD_CODES", "DeidOutcome", "ProfileOptions", "Rule", "action_table",
    "deidentify_dataset", "load_table", "patient_identity", "phi_terms", "profile_id", "resolve",
    "set_method", "shift_date", "shift_datetime",
]  # fmt: skip


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
    cleans = options.clean_descriptors or "C" in action_table(options).values()
    terms = phi_terms(ds) if cleans else []
    Walker(key, options, date_shift_days(key, identity), terms, outcome.counts).walk(ds)

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
