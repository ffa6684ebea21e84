"""What survives of an element that PS3.15 Table E.1-1 does not list: the allowlist.

The table names the attributes that can identify someone; everything it does not name used to be
kept. Here an unlisted element survives only when it is known to be harmless:

* **unknown public elements** (not in pydicom's data dictionary, e.g. ``(0010,9999)``), group
  lengths and file meta elements inside the data set: removed;
* **person names** (PN) and **AE titles**: emptied; **UIDs** not in the DICOM registry: keyed
  remap; **dates** (DA, DT) and **times** (TM): as the date option says;
* **free text** (LO, SH, LT, ST, UT, UC, UR): kept only for the codes, equipment and acquisition
  technique attributes of ``safe_text.json``; any other (Text Value, comments, HL7 identifiers,
  labels...) is emptied, or cleaned under ``--clean-descriptors``; inside a sequence the table
  dummies (Content Sequence...) it gets a dummy value, codes kept; a Tracking ID (required in segmentations) always
  gets a dummy value;
* **codes and numbers in text form** (CS, DS, IS, AS, and kept dates and times): kept only when
  they are well formed for their VR (a CS of at most 16 capitals, digits, space, ``_-./+``; a
  number; an age ``nnnY``), else emptied, so a name typed into a numeric field goes;
* binary and numeric values (US, SS, UL, FL, FD, OB, OW, AT...) and sequences (their items go
  through the same rules): kept.

Example:
    >>> from medanomaly.privacy.table import ProfileOptions
    >>> unlisted_action(0x0040A160, "UT", ProfileOptions())  # Text Value at the top level
    'Z'
    >>> unlisted_action(0x00080070, "LO", ProfileOptions())  # Manufacturer
    'K'
    >>> well_formed("CS", ["ORIGINAL", "PRIMARY"]), well_formed("CS", ["Jane Smith"])
    (True, False)
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources

from medanomaly.privacy.table import ProfileOptions

#: Free-text VRs: kept only when safe-listed.
FREE_TEXT_VRS = frozenset({"LO", "SH", "LT", "ST", "UT", "UC", "UR"})
#: Free-text identifiers a valid object must carry (Tracking ID, Type 1C in a segmentation's segments and in SR
#: measurements): replaced by a dummy value, never kept (a site may type anything into them) nor emptied.
DUMMIED_TEXT_TAGS = frozenset({0x00620020})
#: Coded-entry attributes (codes, not free text) kept inside sequences the profile dummies.
CODED_ENTRY_TAGS = frozenset({
    0x00080100, 0x00080102, 0x00080103, 0x00080104, 0x00080105, 0x00080106, 0x00080107,
    0x00080119, 0x00080120, 0x00080121, 0x0008010B, 0x0008010F, 0x00080117, 0x00081150,
})  # fmt: skip

_SYNTAX = {
    "CS": re.compile(r" *[A-Z0-9_\-./+][A-Z0-9 _\-./+]{0,15} *|"),
    "DS": re.compile(r" *[+\-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+\-]?\d+)? *|"),
    "IS": re.compile(r" *[+\-]?\d{1,12} *|"),
    "AS": re.compile(r"\d{3}[DWMY]|"),
    "DA": re.compile(r" *(?:\d{8})?(?:-(?:\d{8})?)? *"),
    "TM": re.compile(r" *(?:\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d{1,6})?)?)?)?(?:-(?:\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d{1,6})?)?)?)?)? *"),
    "DT": re.compile(r" *(?:\d{4}(?:\d{2}){0,5}(?:\.\d{1,6})?(?:[+\-]\d{4})?)?(?:-(?:\d{4}(?:\d{2}){0,5}(?:\.\d{1,6})?(?:[+\-]\d{4})?)?)? *"),
}
#: VRs whose kept values must be well formed (:func:`well_formed`).
CHECKED_VRS = frozenset(_SYNTAX)


def well_formed(vr: str, values: list[str]) -> bool:
    """True when every value matches the syntax of ``vr`` (PS3.5 6.2); other VRs are not checked."""
    pattern = _SYNTAX.get(vr)
    return pattern is None or all(pattern.fullmatch(v) for v in values)


@lru_cache(maxsize=1)
def safe_text_tags() -> frozenset[int]:
    """Tags of the free-text attributes kept as they are (``safe_text.json``)."""
    from pydicom.datadict import tag_for_keyword

    data = json.loads(resources.files("medanomaly.privacy").joinpath("safe_text.json").read_text(encoding="utf-8"))
    tags = set()
    for keywords in data["groups"].values():
        for keyword in keywords:
            tag = tag_for_keyword(keyword)
            if tag is None:
                raise ValueError(f"safe_text.json: {keyword} is not a DICOM keyword")
            tags.add(int(tag))
    return frozenset(tags)


@lru_cache(maxsize=65536)
def is_known_public(tag: int) -> bool:
    """True for a public tag of pydicom's data dictionary (repeating groups such as 60xx included)."""
    from pydicom.datadict import dictionary_has_tag, repeater_has_tag

    return bool(dictionary_has_tag(tag) or repeater_has_tag(tag))


def unlisted_action(tag: int, vr: str, options: ProfileOptions, in_dummy: bool = False) -> str:
    """The action for a known public element the table does not list (see module doc).

    Args:
        tag: the element tag (an int).
        vr: its value representation (as read, or from the dictionary).
        options: the profile options (date option and Clean Descriptors matter here).
        in_dummy: the element sits inside a sequence the table dummies (``D``).

    Returns:
        one of ``X Z D K U S C``.
    """
    if vr == "SQ":
        return "K"
    if (in_dummy and (vr in FREE_TEXT_VRS or vr == "PN") and tag not in CODED_ENTRY_TAGS) or tag in DUMMIED_TEXT_TAGS:
        return "D"
    if vr in ("UN", "NONE") or not vr:
        return "X"
    if vr in ("PN", "AE"):
        return "Z"
    if vr == "UI":
        return "U"
    if vr in ("DA", "DT"):
        return {"remove": "Z", "keep": "K", "shift": "S"}[options.dates]
    if vr == "TM":
        return "Z" if options.dates == "remove" else "K"
    if vr in FREE_TEXT_VRS:
        if tag in safe_text_tags():
            return "K"
        return "C" if options.clean_descriptors else "Z"
    return "K"
