"""The per-run JSON audit of a de-identification run, free of PHI by construction.

It records only: counts, attribute *keywords* with the action applied (never a value), region
boxes (pixel coordinates), keyed file ids (never an input path, which may hold a name), output
paths (built from remapped UIDs) and fixed refusal reasons chosen by us (never an exception
message, which may quote a value or a path).

Example:
    >>> a = Audit(options={"dates": "remove"})
    >>> a.refuse("0123abcd", "no pixel data")
    >>> a.as_dict()["files"]["refused"]
    1
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone

from medanomaly.privacy.walker import TOO_DEEP

#: The only reasons a file is refused (fixed strings: no PHI can leak through them).
REASONS = (
    "not a readable DICOM file",
    "no pixel data",
    "missing a required UID (SOP Class, SOP Instance, Study or Series)",
    "file larger than the size limit",
    "pixel data cannot be decoded",
    "burned-in text remains after redaction",
    "burned-in annotation flagged but no text found (review by hand)",
    "de-identification failed",
    TOO_DEEP,
    "output could not be written",
    "another input has the same SOP Instance UID (the first was kept)",
    "the worker process died on this file, also when retried alone (killed or out of memory)",
    "not attempted: the run stopped early (see the audit status)",
    "the re-identification lookup file could not be written",
)


@dataclass
class Audit:
    """Accumulates what a run did; :meth:`write` stores it as JSON."""

    options: dict
    started: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    processed: int = 0
    resumed: int = 0
    refused: list[dict[str, str]] = field(default_factory=list)
    actions: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    pixels: list[dict] = field(default_factory=list)
    patients: set[str] = field(default_factory=set)
    status: str = "running"

    def refuse(self, file_id: str, reason: str, same_output_as: str | None = None) -> None:
        """Record a refused input by keyed id and one of :data:`REASONS` (and, for a duplicate,
        the keyed id of the input that was kept)."""
        if reason not in REASONS:
            raise ValueError(f"audit reasons must be fixed strings from REASONS, got {reason!r}")
        entry = {"file_id": file_id, "reason": reason}
        if same_output_as is not None:
            entry["same_output_as"] = same_output_as
        self.refused.append(entry)

    def add(self, output: str, counts: Counter, pseudonym: str, redaction=None) -> None:
        """Record one written file: its output path, action counts and pixel redaction."""
        self.processed += 1
        self.patients.add(pseudonym)
        for (keyword, action), n in counts.items():
            self.actions[keyword][action] += n
        if redaction is not None and redaction.scanned:
            self.pixels.append(
                {
                    "output": output,
                    "regions_blanked": [r.as_list() for r in redaction.regions],
                    "phi_regions": redaction.phi_regions,
                    "residual_regions": redaction.residual_regions,
                    "residual_phi": redaction.residual_phi,
                }
            )

    def as_dict(self) -> dict:
        """The audit as plain JSON-able data."""
        reasons = Counter(r["reason"] for r in self.refused)
        return {
            "tool": "medanomaly deid",
            "profile": "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile",
            "status": self.status,
            "started": self.started,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "options": self.options,
            "files": {
                "processed": self.processed,
                "resumed": self.resumed,
                "refused": len(self.refused),
                "refused_by_reason": dict(reasons),
            },
            "patients": len(self.patients),
            "refused": self.refused,
            "actions_per_attribute": {k: dict(v) for k, v in sorted(self.actions.items())},
            "pixel_redaction": self.pixels,
        }

    def compact(self) -> dict:
        """The audit without its per-file lists (what still fits when the disk is full)."""
        full = self.as_dict()
        for name in ("refused", "actions_per_attribute", "pixel_redaction"):
            full.pop(name)
        full["compact"] = "per-file lists left out: the output folder was full"
        return full
