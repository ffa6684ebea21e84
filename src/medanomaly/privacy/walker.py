"""Apply the profile to every element of a data set, recursing into every sequence item.

Each element gets one action: from the Annex E table when it lists the tag (resolved for the
options, :mod:`medanomaly.privacy.table`), from the allowlist when it does not
(:mod:`medanomaly.privacy.allowlist`). Private elements go unless safe-listed; repeating groups
follow their table rows (curves ``50xx``; overlays ``60xx``: the whole overlay group goes with
its data, so Overlay Description, Label and Type do not outlive it). A value kept as it is must
also be well formed for its VR.

Example:
    >>> from collections import Counter
    >>> from pydicom.dataset import Dataset
    >>> from medanomaly.privacy.table import ProfileOptions
    >>> ds = Dataset()
    >>> ds.TextValue = "Jane Doe called"
    >>> ds.add_new(0x00109999, "LO", "unknown public")
    >>> Walker(b"k" * 16, ProfileOptions(), -10, [], Counter()).walk(ds)
    >>> ds.TextValue, 0x00109999 in ds
    (None, False)
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

from medanomaly.privacy.allowlist import CHECKED_VRS, is_known_public, unlisted_action, well_formed
from medanomaly.privacy.dates import shift_date, shift_datetime
from medanomaly.privacy.freetext import Scrubber
from medanomaly.privacy.table import ProfileOptions, action_table, mask_actions
from medanomaly.privacy.uids import remap_uid

_DUMMY = {
    "PN": "ANONYMOUS", "LO": "ANONYMOUS", "SH": "ANONYMOUS", "CS": "ANONYMOUS", "AE": "ANONYMOUS",
    "LT": "ANONYMOUS", "ST": "ANONYMOUS", "UT": "ANONYMOUS", "UC": "ANONYMOUS", "UR": "",
    "DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000Y", "IS": "0", "DS": "0",
    "US": 0, "SS": 0, "UL": 0, "SL": 0, "FL": 0.0, "FD": 0.0, "UV": 0, "SV": 0,
}  # fmt: skip
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"})
#: Deeper nesting is refused (a crafted file could otherwise exhaust the stack).
MAX_DEPTH = 64


@lru_cache(maxsize=8192)
def keyword(tag: int) -> str:
    """The attribute keyword for the audit (``0010xxxx``-style hex when pydicom has none)."""
    from pydicom.datadict import keyword_for_tag

    return keyword_for_tag(tag) or f"{tag:08X}"


def _strings(ds, tag) -> list[str]:
    """The values of a text element, read from the raw bytes when not yet converted."""
    value = ds.get_item(tag).value
    if value is None:
        return []
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1").rstrip("\x00 ").split("\\")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value]
    return [str(value)]


#: The audit's reason for a file whose sequences nest deeper than :data:`MAX_DEPTH` (fixed: quotes nothing).
TOO_DEEP = f"sequences nested deeper than {MAX_DEPTH} levels"


class NestedTooDeep(ValueError):
    """Sequences nested deeper than :data:`MAX_DEPTH`."""


class Walker:
    """One pass of the profile over a data set (in place).

    Args:
        key: project secret (UID remaps).
        options: profile options.
        shift: this patient's date shift in days.
        terms: this patient's identifying strings (:func:`freetext.phi_terms`), for ``C``.
        counts: ``Counter`` of (attribute keyword, action), filled for the audit.
    """

    def __init__(self, key: bytes, options: ProfileOptions, shift: int, terms: list[str], counts: Counter):
        self.key = key
        self.options = options
        self.actions = action_table(options)
        self.masks = mask_actions(options)
        self.shift = shift
        self.counts = counts
        self.dummy_depth = 0
        self.depth = 0
        self.scrubber = Scrubber(terms)

    def action_for(self, tag: int, vr: str) -> str:
        """The action for one public element (table row, repeating group or allowlist)."""
        group, elem = tag >> 16, tag & 0xFFFF
        if group == 0x0002:
            return "X"  # file meta inside a data set: the meta is rebuilt apart
        action = self.actions.get(tag)
        if action is not None:
            return action
        if group & 0xFF00 == 0x5000:
            return self.masks["50xxxxxx"]
        if group & 0xFF00 == 0x6000:
            if elem in (0x3000, 0x4000):
                return self.masks[f"60xx{elem:04X}"]
            return "X" if self.masks["60xx3000"] == "X" else "K"  # the overlay goes with its data
        if elem == 0x0000 or not is_known_public(tag):
            return "X"  # group lengths, unknown public elements
        return unlisted_action(tag, vr, self.options, self.dummy_depth > 0)

    def walk(self, ds) -> None:
        """Apply the profile to ``ds`` and, recursively, to every item of its sequences."""
        if self.depth >= MAX_DEPTH:
            raise NestedTooDeep(TOO_DEEP)
        safe_blocks = self._safe_private_blocks(ds)
        for tag in list(ds.keys()):
            if tag.group & 1:
                self._private(ds, tag, safe_blocks)
                continue
            # Decide from the raw element when possible: converting every value costs more than
            # the whole profile, and deleted or kept elements never need it.
            vr = ds.get_item(tag).VR
            if vr is None or vr == "UN":
                try:
                    vr = ds[tag].VR
                except Exception:  # noqa: BLE001 - a value pydicom cannot convert: it goes
                    vr = "UN"
            action = self.action_for(int(tag), vr)
            if action == "K" and vr in CHECKED_VRS and not well_formed(vr, _strings(ds, tag)):
                action = "Z"  # a kept value must be what its VR says (no name in a number field)
            self.counts[(keyword(int(tag)), action)] += 1
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
                self._items(elem)
        else:
            self.counts[("private", "X")] += 1
            del ds[tag]

    def _items(self, elem, dummy: bool = False) -> None:
        self.dummy_depth += dummy
        self.depth += 1
        try:
            for item in elem.value or []:
                self.walk(item)
        finally:
            self.dummy_depth -= dummy
            self.depth -= 1

    def _apply(self, ds, elem, action: str, vr: str) -> None:
        if vr == "SQ":
            if action == "Z":
                elem.value = []
            else:  # D, K, C, U*: keep the structure, clean every item
                self._items(elem, dummy=action == "D")
            return
        if action == "K" or elem.value is None or elem.value == "":
            return
        if action == "Z":
            elem.value = None
        elif action == "D":
            if vr == "UI":  # a dummy UID: the keyed remap keeps references consistent
                elem.value = self._map(elem.value, lambda v: remap_uid(self.key, str(v)))
            else:
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
                if not well_formed("TM", _strings(ds, elem.tag)):
                    elem.value = None
            else:
                del ds[elem.tag]
        elif action == "C":
            if vr in _TEXT_VRS:
                elem.value = self._map(elem.value, lambda v: self.scrubber.clean(str(v)))
            elif vr in ("OB", "OW", "UN"):
                elem.value = None  # bytes cannot be cleaned
        else:  # pragma: no cover - the table only holds the actions above
            raise ValueError(f"unknown action {action!r}")

    @staticmethod
    def _map(value, fn):
        from pydicom.multival import MultiValue

        if isinstance(value, (list, tuple, MultiValue)):
            return [fn(v) for v in value]
        return fn(value)
