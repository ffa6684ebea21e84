"""Which series of an archive a task runs on: filter rules, the task's preference, the memory limit.

* ``--series-filter`` rules, all of which a series must pass: ``FIELD OP VALUE`` with OP one of
  ``=  !=  <  <=  >  >=  ~`` (``~`` = case-insensitive regular-expression search). FIELD is a
  :class:`~medanomaly.deploy.archive.SeriesEntry` attribute or its DICOM keyword: Modality,
  SliceThickness (mm), ConvolutionKernel, ImageType, BodyPartExamined, SeriesDescription, Rows,
  Columns, NumberOfFrames, orientation (axial/coronal/sagittal/oblique), kernel_class.
  Example: ``Modality=CT``, ``SliceThickness<=2.5``, ``ConvolutionKernel~B3|STANDARD``.
* **Detection on CT** (``lung_nodule``, or a generic ``detection`` run whose input is CT) wants
  one series per study: an axial CT, not a localizer,
  with a soft-tissue or lung kernel (a bone/sharp kernel only when nothing else exists), the
  thinnest slices, then the most slices. The other series of the study are reported as "not
  selected" with the chosen series' UID.
* Other tasks run on every image series that passes the rules.
* A series whose float32 volume (rows x columns x frames x samples x 4 bytes, from its headers)
  exceeds the memory limit is refused by UID before anything is read.

Example:
    >>> rule = parse_rule("SliceThickness<=2.5")
    >>> (rule.field, rule.op, rule.value)
    ('slice_thickness', '<=', '2.5')
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from medanomaly.deploy.archive import SeriesEntry
from medanomaly.errors import InputError

__all__ = ["CT_DETECTION", "DETECTION_TASKS", "Decision", "Rule", "kernel_class", "parse_rule", "parse_size",
           "select_series", "selection_policy"]  # fmt: skip

#: Tasks that always want one thin axial CT per study.
DETECTION_TASKS = frozenset({"lung_nodule"})
#: The selection policy name of "one thin axial CT per study".
CT_DETECTION = "ct_detection"


def selection_policy(task: str, info: object = None) -> str:
    """``"ct_detection"`` for lung nodule detection and for a generic ``detection`` run whose input
    modality is CT (``model.json`` ``input.modality``); else the task name (every series runs).

    >>> selection_policy("lung_nodule"), selection_policy("classification")
    ('ct_detection', 'classification')
    """
    modality = str((getattr(info, "input", None) or {}).get("modality", "")).upper()
    if task in DETECTION_TASKS or (task == "detection" and modality == "CT"):
        return CT_DETECTION
    return task
#: Default memory limit per series (float32 volume): 4 GiB.
DEFAULT_MEMORY_LIMIT = 4 << 30

_ALIASES = {
    "modality": "modality", "slicethickness": "slice_thickness", "slice_thickness": "slice_thickness",
    "convolutionkernel": "kernel", "kernel": "kernel", "imagetype": "image_type", "image_type": "image_type",
    "bodypartexamined": "body_part", "body_part": "body_part", "seriesdescription": "description",
    "description": "description", "rows": "rows", "columns": "columns", "numberofframes": "n_frames",
    "n_frames": "n_frames", "orientation": "orientation", "kernel_class": "kernel_class",
}  # fmt: skip
_OPS = ("<=", ">=", "!=", "=", "<", ">", "~")
_RULE = re.compile(r"^\s*([A-Za-z_]+)\s*(<=|>=|!=|=|<|>|~)\s*(.*?)\s*$")

#: Kernel name patterns (vendor conventions: Siemens B/Br/I, GE, Philips, Toshiba/Canon FC).
_KERNELS = (
    ("bone", re.compile(r"BONE|B[6-9]\d|BR[6-9]\d|I[6-9]\d|EDGE|SHARP|FC(3\d|8\d)", re.I)),
    ("lung", re.compile(r"LUNG|B[5]\d|BL\d\d|BR5\d|I5\d|FC5\d|L\b|^D$", re.I)),
    ("soft", re.compile(r"SOFT|STANDARD|STND|B[1-4]\d|BR[1-4]\d|I[1-4]\d|FC[0-2]\d|^[ABC]$|DETAIL", re.I)),
)


def kernel_class(kernel: str) -> str:
    """``"soft"``, ``"lung"``, ``"bone"`` or ``"unknown"`` for a ConvolutionKernel name.

    >>> [kernel_class(k) for k in ("B31f", "LUNG", "B70f", "FC13", "")]
    ['soft', 'lung', 'bone', 'soft', 'unknown']
    """
    for name, pattern in _KERNELS:
        if kernel and pattern.search(kernel.strip()):
            return name
    return "unknown"


@dataclass(frozen=True)
class Rule:
    """One ``FIELD OP VALUE`` filter rule."""

    field: str
    op: str
    value: str

    def value_of(self, entry: SeriesEntry) -> object:
        if self.field == "kernel_class":
            return kernel_class(entry.kernel)
        value = getattr(entry, self.field)
        return "\\".join(value) if isinstance(value, tuple) else value

    def matches(self, entry: SeriesEntry) -> bool:
        """True when ``entry`` passes the rule (a missing number never passes a comparison)."""
        got = self.value_of(entry)
        if self.op == "~":
            return re.search(self.value, str(got or ""), re.I) is not None
        if self.op in ("=", "!="):
            equal = str(got or "").strip().upper() == self.value.strip().upper()
            if isinstance(got, (int, float)) and got is not None:
                try:
                    equal = math.isclose(float(got), float(self.value))
                except ValueError:
                    pass
            return equal if self.op == "=" else not equal
        if got is None or got == "":
            return False
        a, b = float(got), float(self.value)  # type: ignore[arg-type]
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[self.op]


def parse_rule(text: str) -> Rule:
    """Parse ``"Modality=CT"``-style text into a :class:`Rule`.

    Raises:
        InputError: unknown field, missing operator, a comparison with a non-number or a bad regex.
    """
    m = _RULE.match(text)
    if not m:
        raise InputError(f"series filter {text!r}: expected FIELD OP VALUE with OP one of {' '.join(_OPS)}")
    name, op, value = m.groups()
    field = _ALIASES.get(name.lower())
    if field is None:
        raise InputError(f"series filter {text!r}: unknown field {name!r}; known: {', '.join(sorted(set(_ALIASES)))}")
    if op in ("<", "<=", ">", ">="):
        try:
            float(value)
        except ValueError:
            raise InputError(f"series filter {text!r}: {op} needs a number") from None
    if op == "~":
        try:
            re.compile(value)
        except re.error as exc:
            raise InputError(f"series filter {text!r}: bad regular expression ({exc})") from None
    return Rule(field, op, value)


def parse_size(text: str | int) -> int:
    """Bytes from ``"4G"``, ``"512M"``, ``"8GiB"`` or a plain number of bytes.

    Raises:
        InputError: not a positive size.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = float(text)
        unit = 1
    else:
        m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(?:I?B)?\s*", str(text), re.I)
        if not m:
            raise InputError(f"memory limit {text!r} is not a size (e.g. 4G, 512M)")
        value = float(m.group(1))
        unit = 1 << (10 * " KMGT".index(m.group(2).upper() or " "))
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"memory limit {text!r} must be positive")
    return int(value * unit)


@dataclass(frozen=True)
class Decision:
    """What happens to one series: ``run`` it, or skip it with a status and reason.

    Attributes:
        entry: the series.
        status: "run", "skipped" (filtered out or not selected) or "refused" (too large).
        reason: why it is skipped or refused ("" when run).
    """

    entry: SeriesEntry
    status: str
    reason: str = ""


def _preference(entry: SeriesEntry) -> tuple[float, ...]:
    """Sort key of a detection CT series: kernel, thinnest slices, most slices (smaller is better)."""
    kernel_rank = {"soft": 0, "lung": 0, "unknown": 1, "bone": 2}[kernel_class(entry.kernel)]
    thickness = entry.slice_thickness if entry.slice_thickness else 99.0
    return (kernel_rank, thickness, -entry.n_frames)


def _detection_candidate(entry: SeriesEntry) -> str:
    """Why a series cannot be a detection input ("" when it can)."""
    unknown_volume = entry.kind == "volume" and entry.modality in ("", "OT")  # NIfTI/NRRD: no modality
    if entry.modality != "CT" and not unknown_volume:
        return f"not CT ({entry.modality})"
    if any(t in ("LOCALIZER", "SCOUT", "TOPOGRAM") for t in entry.image_type):
        return "localizer"
    if entry.orientation and entry.orientation != "axial":
        return f"not axial ({entry.orientation})"
    if entry.n_frames < 3:
        return f"too few slices ({entry.n_frames})"
    return ""


def _pick_per_study(entries: Sequence[SeriesEntry], name: Callable[[str], str]) -> dict[str, str]:
    """series key -> "" (chosen) or the reason it was not chosen (naming the chosen series by ``name``), for
    detection tasks."""
    out: dict[str, str] = {}
    by_study: dict[str, list[SeriesEntry]] = {}
    for e in entries:
        why = _detection_candidate(e)
        if why:
            out[e.key] = f"not selected for detection: {why}"
        else:
            by_study.setdefault(e.study_uid or e.key, []).append(e)
    for group in by_study.values():
        best = min(group, key=_preference)
        for e in group:
            out[e.key] = "" if e is best else f"not selected: study's detection series is {name(best.key)}"
    return out


def select_series(
    entries: Sequence[SeriesEntry],
    task: str,
    rules: Sequence[Rule | str] = (),
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    name: Callable[[str], str] = str,
) -> list[Decision]:
    """Decide, for every series, whether the task runs on it (one decision per series, in order).

    Args:
        entries: the archive's series.
        task: the selection policy (:func:`selection_policy`: ``"ct_detection"`` picks one
            thin axial CT per study) or a task name.
        rules: ``--series-filter`` rules (text or parsed) that every run series must pass.
        memory_limit: largest estimated float32 volume (bytes) a series may have.
        name: how a reason names a series, from its key (a keyed id where the results must show no UID).
    """
    from medanomaly.io.limits import format_bytes

    parsed = [parse_rule(r) if isinstance(r, str) else r for r in rules]
    kept = []
    reasons: dict[str, str] = {}
    for e in entries:
        failed = next((r for r in parsed if not r.matches(e)), None)
        if failed is not None:
            reasons[e.key] = f"filtered out by {failed.field}{failed.op}{failed.value}"
        else:
            kept.append(e)
    if task == CT_DETECTION or task in DETECTION_TASKS:
        reasons.update(_pick_per_study(kept, name))
    out = []
    for e in entries:
        reason = reasons.get(e.key, "")
        if reason:
            out.append(Decision(e, "skipped", reason))
        elif e.estimated_bytes > memory_limit:
            need, limit = format_bytes(e.estimated_bytes), format_bytes(memory_limit)
            out.append(Decision(e, "refused", f"series {name(e.key)}: needs ~{need} as float32, over the limit of {limit}"))
        else:
            out.append(Decision(e, "run"))
    return out
