"""Free text: the identifiers a header names, and the scrubber behind the Clean (``C``) action.

:func:`phi_terms` collects what identifies *this* patient and the people around them: every
person name anywhere in the header (any sequence depth, every PN element: patient, physicians,
operators, observers...), the patient's ids, birth date and address, accession number,
institution names and addresses. :class:`Scrubber` replaces those terms and generic patterns in
free text by ``X``:

* numeric dates (``08/29/1951``, ``1951-08-29``, ``19510829``) and dates written in words in
  English, French or German (``29 Aug 1944``, ``March 17th 1944``, ``17 mars 1944``,
  ``Aug. 1944``);
* numbers of 5 digits or more (record numbers, accession numbers, post codes) and phone numbers
  (7+ digits with the usual separators, ``+1 (555) 123-4567``);
* street addresses (a house number followed by up to four words and a street word: ``742
  Evergreen Terrace``, ``12 rue de la Paix``, ``Hauptstrasse 5``), US state + ZIP codes, P.O. boxes;
* a capitalised word after a title or honorific (``Dr Hidden``, ``Mrs. Smith``, ``Prof Weiss``).

Limits (documented in ``docs/privacy.md``): a name that appears nowhere in the header and
follows no title survives; so do dates written in other languages or free formats, and
addresses without a house number or street word.

Example:
    >>> s = Scrubber(["Buc", "Jerome"])
    >>> s.clean("Chest CT of Jerome Buc, born 29 Aug 1944, tel 555-123-4567")
    'Chest CT of X X, born X, tel X'
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: Attributes whose whole value identifies the patient or a place (kept whole as a term).
_WHOLE_VALUE_TAGS = (
    0x00100020, 0x00101000, 0x00080050, 0x00100030, 0x00101040, 0x00080080, 0x00080081, 0x00200010,
    0x00080092, 0x00080094, 0x00102154, 0x00101090, 0x00380010, 0x00401102, 0x00401103, 0x00081040,
    0x00100021, 0x00120040, 0x00120042, 0x00400009, 0x00401001, 0x00402016, 0x00402017,
)  # fmt: skip

_MONTHS = (
    r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?"
    r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
    r"|janvier|f[eé]vrier|mars|avril|mai|juin|juillet|ao[uû]t|septembre|octobre|novembre|d[eé]cembre"
    r"|januar|februar|m[aä]rz|juni|juli|oktober|dezember"
)
_DAY = r"(?<!\d)[0-3]?\d(?:st|nd|rd|th|er)?\.?"
_YEAR = r"(?:\d{4}|'\d{2})(?!\d)"
_STREET_WORDS = (
    r"Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Square|Sq"
    r"|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Close|Crescent|Row|Alley|Plaza|Rue|rue|avenue|boulevard|bd|chemin"
    r"|Chemin|quai|Quai|impasse|Impasse|allée|Allée|place"
)
_LINK = r"(?:de|du|des|la|le|of|the|l'|d')"
_WORD = r"[A-ZÀ-Ý][\w'\-]*"
_TITLES = r"Dr|Drs|Mr|Mrs|Ms|Miss|Mme|Mlle|Herr|Frau|Prof|Dott|Sr|Sra"

#: (name, pattern) applied in this order; ``phone`` matches count only with 7 digits or more.
_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("date in words", re.compile(rf"{_DAY}\s*(?:of\s+)?\b(?:{_MONTHS})\b\.?(?:,?\s*{_YEAR})?", re.I)),
    ("date in words", re.compile(rf"\b(?:{_MONTHS})\b\.?\s*(?:{_DAY}\b,?(?:\s*{_YEAR})?|,?\s*\d{{4}}(?!\d))", re.I)),
    ("phone", re.compile(r"(?<![\w.])(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{1,5}\)[\s.\-]?)?\d{1,5}(?:[\s.\-]\d{1,5}){1,5}(?![\w.])")),
    ("numeric date", re.compile(r"\b\d{1,4}\s*[/.\-]\s*\d{1,2}\s*[/.\-]\s*\d{2,4}\b")),
    ("numeric date", re.compile(r"\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d*\b")),
    ("address", re.compile(
        rf"\b\d{{1,5}}[A-Za-z]?,?\s+(?:{_WORD}\.?\s+|{_LINK}\s+){{0,4}}(?:{_STREET_WORDS})\b\.?"
        rf"(?:\s+(?:{_LINK}\s*)*{_WORD}){{0,3}}"
    )),
    ("address", re.compile(rf"\b(?:Rue|rue|Avenue|Boulevard|Chemin|Quai|Impasse|Allée)\s+(?:{_LINK}\s*)*{_WORD}(?:\s+{_WORD}){{0,2}}")),
    ("address", re.compile(r"\b[A-ZÄÖÜ][\wäöüß\-]*(?:strasse|straße|str\.|weg|gasse|platz|allee|ring)\s*\d{1,5}[a-z]?\b")),
    ("address", re.compile(r"\bP\.?\s?O\.?\s*Box\s+\d+", re.I)),
    ("address", re.compile(r"\b[A-Z]{2}\s+\d{5}(?:-\d{4})?\b")),
    ("long number", re.compile(r"\d{5,}")),
    ("title and name", re.compile(rf"\b(?:{_TITLES})\b\.?\s+{_WORD}(?:\s+{_WORD})?")),
)


#: Words of institution names too common to scrub on their own (the whole name still is).
_GENERIC_WORDS = frozenset({
    "hospital", "hopital", "hôpital", "krankenhaus", "klinik", "klinikum", "clinic", "clinique", "clinica",
    "center", "centre", "medical", "general", "university", "universitat", "universität", "universite",
    "université", "health", "institute", "institut", "imaging", "radiology", "radiologie", "department",
    "saint", "memorial", "regional", "national", "community", "children", "childrens", "women", "foundation",
})  # fmt: skip


def _values(elem) -> list[str]:
    value = elem.value
    if value is None or value == "":
        return []
    if isinstance(value, (bytes, bytearray)):
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value if str(v).strip()]
    return [str(value)]


def _name_parts(value: str) -> list[str]:
    return [t for t in re.split(r"[\^=\s,.]+", value) if len(t) >= 2]


def phi_terms(ds) -> list[str]:
    """Identifying strings of ``ds`` for the Clean action and the OCR check (longest first).

    Every person name at any depth is split into its parts (family, given, middle names of at
    least 2 characters); the whole values of the patient's ids, birth date, address, phone,
    accession number and institution are added as they are. Private elements are read too when
    their VR is known (their names may be repeated in public free text).

    Args:
        ds: a pydicom ``Dataset``, read before any de-identification.

    Returns:
        distinct terms, longest first (so ``Johnathan`` is replaced before ``John``).
    """
    terms: set[str] = set()
    _collect(ds, terms, depth=0)
    return sorted(terms, key=lambda t: (-len(t), t))


def _collect(ds, terms: set[str], depth: int) -> None:
    if depth > 16:  # a pathological nesting: the profile still removes what it must
        return
    for tag in list(ds.keys()):
        try:
            elem = ds[tag]
        except Exception:  # noqa: BLE001 - an undecodable value names no one we can read
            continue
        vr = elem.VR
        if vr == "SQ":
            for item in elem.value or []:
                _collect(item, terms, depth + 1)
        elif vr == "PN":
            for v in _values(elem):
                terms.update(_name_parts(v))
        elif int(tag) in _WHOLE_VALUE_TAGS:
            for v in _values(elem):
                v = v.strip()
                if len(v) >= 2:
                    terms.add(v)
                if int(tag) in (0x00080080, 0x00081040):  # institution / department: each word too
                    terms.update(
                        w for w in re.split(r"[\s,.\-]+", v) if len(w) >= 4 and w.lower() not in _GENERIC_WORDS
                    )


class Scrubber:
    """Replace identifying terms and generic PHI patterns in free text by ``X``.

    Terms of 4 characters or more are replaced wherever they occur (also inside a longer word),
    shorter ones only as whole words (so the name ``Li`` does not eat ``Clinical``); matching
    ignores case.
    """

    def __init__(self, terms: Iterable[str] = ()) -> None:
        parts = []
        for term in sorted(set(terms), key=lambda t: (-len(t), t)):
            escaped = re.escape(term)
            parts.append(escaped if len(term) >= 4 else rf"(?<!\w){escaped}(?!\w)")
        self._terms = re.compile("|".join(parts), re.IGNORECASE) if parts else None

    def clean(self, text: str) -> str:
        """``text`` with every term and pattern replaced by ``X``."""
        if self._terms is not None:
            text = self._terms.sub("X", text)
        for name, pattern in _PATTERNS:
            text = pattern.sub(_keep_short_numbers if name == "phone" else "X", text)
        return text


def _keep_short_numbers(match: re.Match) -> str:
    """A phone-number candidate counts only with 7 digits or more (``120 80``, ``512 512`` stay)."""
    found = match.group(0)
    return "X" if sum(c.isdigit() for c in found) >= 7 else found
