"""Per-patient date shifts of DA and DT values (Retain Longitudinal Temporal Information, Modified Dates).

Example:
    >>> shift_date("20170302", -1)
    '20170301'
    >>> shift_datetime("20170302101530.25+0100", -2)
    '20170228101530.25+0100'
    >>> shift_date("09990105", -10), shift_date("00010105", -10)
    ('09981226', None)
"""

from __future__ import annotations

import datetime as _dt
import re

_DT_TAIL = re.compile(r"(?:\d{2}){0,3}(?:\.\d{1,6})?(?:[+\-]\d{4})?")


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
    try:
        moved = day + _dt.timedelta(days=days)
    except OverflowError:  # before year 1 (a placeholder such as 00010101 moved into the past): emptied
        return None
    return f"{moved.year:04d}{moved.month:02d}{moved.day:02d}"  # strftime's %Y drops a year's leading zeros


def shift_datetime(value: str, days: int) -> str | None:
    """Shift the date part of a DT value, keeping time and offset; None if it is not a valid DT
    with a full date (the caller then empties it)."""
    value = value.strip()
    if not value:
        return value
    head = shift_date(value[:8], days) if len(value) >= 8 else None
    if head is None or not _DT_TAIL.fullmatch(value[8:]):
        return None  # no full date, or something after it that is not a time and offset
    return head + value[8:]
