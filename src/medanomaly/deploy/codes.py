"""Coded concepts (SNOMED CT, DCM, UCUM) shared by the DICOM SEG, SR and Parametric Map writers.

Finding labels of medanomaly (``Finding.label``: "nodule", "mass", ...) and anatomic sites
("lung", "breast", ...) map to SNOMED CT codes here, once. Unknown labels fall back to
"Lesion" (SCT 52988006); unknown sites are refused, so a report never names a wrong organ.

Example:
    >>> finding_type("nodule").meaning
    'Nodule'
    >>> finding_site("lung").value
    '39607008'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medanomaly.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.sr.coding import Code

__all__ = ["FINDING_TYPES", "PRIVATE_SCHEME", "SITES", "deterministic_uid", "finding_site", "finding_type", "unit",
           "volume_method"]

#: Finding label -> (SCT code, meaning). Category of all: Morphologically Abnormal Structure.
FINDING_TYPES: dict[str, tuple[str, str]] = {
    "nodule": ("27925004", "Nodule"),
    "mass": ("4147007", "Mass"),
    "tumor": ("108369006", "Neoplasm"),
    "tumour": ("108369006", "Neoplasm"),
    "neoplasm": ("108369006", "Neoplasm"),
    "lesion": ("52988006", "Lesion"),
}

#: Anatomic site name -> (SCT code, meaning).
SITES: dict[str, tuple[str, str]] = {
    "lung": ("39607008", "Lung"),
    "breast": ("76752008", "Breast"),
    "brain": ("12738006", "Brain"),
    "liver": ("10200004", "Liver"),
    "kidney": ("64033007", "Kidney"),
    "chest": ("51185008", "Thorax"),
}

_UNITS: dict[str, tuple[str, str]] = {
    "ml": ("ml", "milliliter"),
    "mm": ("mm", "millimeter"),
    "hu": ("[hnsf'U]", "Hounsfield unit"),
    "1": ("1", "no units"),
}


def _code(value: str, scheme: str, meaning: str) -> Code:
    from pydicom.sr.coding import Code

    return Code(value, scheme, meaning)


def finding_type(label: str) -> Code:
    """SNOMED CT code of a finding label ("nodule" -> Nodule); unknown labels -> Lesion."""
    value, meaning = FINDING_TYPES.get(label.strip().lower(), FINDING_TYPES["lesion"])
    return _code(value, "SCT", meaning)


def finding_category() -> Code:
    """Morphologically Abnormal Structure (SCT 49755003): the category of every finding."""
    return _code("49755003", "SCT", "Morphologically Abnormal Structure")


def finding_site(name: str) -> Code:
    """SNOMED CT code of an anatomic site name ("lung", "breast", "brain", "liver", ...).

    Raises:
        InputError: an unknown site name (the message lists the known ones).
    """
    key = name.strip().lower()
    if key not in SITES:
        raise InputError(f"unknown finding site {name!r}; known: {', '.join(sorted(SITES))}")
    value, meaning = SITES[key]
    return _code(value, "SCT", meaning)


#: medanomaly's private coding scheme (PS3.16: designators beginning "99"), for what no standard code names.
PRIVATE_SCHEME = "99MEDANOMALY"

#: How a volume was calculated (the TID 300 Measurement Method, CID 7474 extended): key -> (value, scheme, meaning).
_VOLUME_METHODS: dict[str, tuple[str, str, str]] = {
    "voxels": ("126030", "DCM", "Sum of segmented voxel method for volume"),
    "partial_volume": ("PVA", PRIVATE_SCHEME, "Partial-volume analysis"),
}


def volume_method(name: str) -> Code:
    """The method code of a volume: "voxels" (the mask's voxel count x voxel volume, DCM 126030) or
    "partial_volume" (:mod:`medanomaly.quantify.partial_volume`: no standard code, so a private one)."""
    return _code(*_VOLUME_METHODS[name])


def unit(name: str) -> Code:
    """UCUM code of a unit: "ml", "mm", "hu" (Hounsfield unit) or "1" (no units)."""
    value, meaning = _UNITS[name]
    return _code(value, "UCUM", meaning)


def deterministic_uid(*parts: str) -> str:
    """A UID (2.25 root) derived from ``parts``: the same inputs give the same UID.

    The UID is ``2.25.`` followed by a name-based (SHA-1) UUID of the parts, as an integer
    (DICOM PS3.5 B.2). Outputs derived from one source series by one run get the same SOP Instance UIDs on every
    rerun, so storing them again into a PACS replaces instead of duplicating.
    """
    import uuid

    name = "\x1f".join(("medanomaly", *parts))  # unit separator: ("a", "bc") and ("ab", "c") differ
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"  # PS3.5 B.2: a UUID as a 2.25 UID
