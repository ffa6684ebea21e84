"""False positives that recur at one anatomical position across scans that share their anatomy.

Simulated test sets insert different lesions into a few real source scans (the lung case study: two chest CTs,
ten held-out scans each). A structure the detector mistakes for a lesion (a vessel seen end-on, the hilum) then
returns in every scan of its source at the same place, so one anatomical mistake is counted up to ten times in
the FROC, and a few such structures decide the curve's low-FP end and most of the run-to-run spread. This module
counts them, so a report can say how many of its false positives are independent.

Positions are grouped per source: a false positive joins the first position of its source whose first centre is
within ``radius_mm`` (the scans of one source share their voxel grid, so a recurring structure's centres agree
to a voxel or two); a position recurs when it is found in at least ``min_fraction`` of that source's scans
(and in two or more).

Example:
    >>> r = recurring_false_positives([("a", [(0, 0, 0)]), ("a", [(0.5, 0, 0), (40, 0, 0)]), ("b", [])])
    >>> r.false_positives, r.recurring, len(r.positions)
    (3, 2, 1)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RecurringFalsePositives", "recurring_false_positives"]


@dataclass(frozen=True)
class RecurringFalsePositives:
    """How many of a scan set's false positives lie at recurring positions.

    Attributes:
        false_positives: all false positives counted (every scan).
        recurring: those at a recurring position.
        positions: the recurring positions, most scans first: ``{"source", "center_mm" (LPS mm), "scans"}``.
        radius_mm / min_fraction: the grouping rule.
    """

    false_positives: int
    recurring: int
    positions: list[dict[str, Any]]
    radius_mm: float
    min_fraction: float

    def to_json(self) -> dict[str, Any]:
        return {"false_positives": self.false_positives, "recurring": self.recurring,
                "n_positions": len(self.positions), "positions": self.positions, "radius_mm": self.radius_mm,
                "min_fraction": self.min_fraction}  # fmt: skip


def recurring_false_positives(sites: Sequence[tuple[str, Sequence[Sequence[float]]]], radius_mm: float = 3.0,
                              min_fraction: float = 0.5) -> RecurringFalsePositives:  # fmt: skip
    """Group each scan's false-positive centres by source and position (see the module docstring).

    Args:
        sites: one ``(source name, false-positive centres in mm)`` per scan.
        radius_mm: how far (mm) a centre may lie from a position's first centre and still be that position.
        min_fraction: the share of a source's scans a position must appear in to recur.

    Raises:
        ValueError: ``radius_mm`` not positive or ``min_fraction`` outside (0, 1].
    """
    if not radius_mm > 0 or not 0 < min_fraction <= 1:
        raise ValueError(f"radius_mm must be > 0 and min_fraction in (0, 1], got {radius_mm}, {min_fraction}")
    scans_of: dict[str, int] = {}
    groups: dict[str, list[tuple[np.ndarray, list[int]]]] = {}  # source -> [(first centre, scan of each member)]
    total = 0
    for index, (source, centres) in enumerate(sites):
        scans_of[source] = scans_of.get(source, 0) + 1
        for centre in centres:
            c = np.asarray(centre, float)
            total += 1
            members = next((m for first, m in groups.setdefault(source, []) if np.linalg.norm(first - c) <= radius_mm),
                           None)  # fmt: skip
            if members is None:
                groups[source].append((c, [index]))
            else:
                members.append(index)
    positions, recurring = [], 0
    for source, found in groups.items():
        need = max(2, math.ceil(min_fraction * scans_of[source]))
        for first, members in found:
            if len(set(members)) >= need:
                recurring += len(members)
                positions.append({"source": source, "center_mm": [round(float(v), 1) for v in first],
                                  "scans": len(set(members)), "of_scans": scans_of[source]})  # fmt: skip
    positions.sort(key=lambda p: -p["scans"])
    return RecurringFalsePositives(total, recurring, positions, float(radius_mm), float(min_fraction))
