"""Reporting periods in the factory's time zone: "2026", "2026-11" or "2026-11-21"."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

_PERIOD = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


class PeriodError(ValueError):
    """str() is one user-facing sentence."""


def period_bounds(period: str, tz: str) -> tuple[float, float]:
    """[start, end) of a local year, month or day as epoch seconds (UTC).

    Raises PeriodError for anything else, e.g. "2026-13" or "26-11".
    """
    match = _PERIOD.match(period.strip())
    if not match:
        raise PeriodError(f"period {period!r} is not YYYY, YYYY-MM or YYYY-MM-DD")
    year, month, day = (int(g) if g else None for g in match.groups())
    zone = ZoneInfo(tz)
    assert year is not None
    try:
        if month is None:
            start = datetime(year, 1, 1, tzinfo=zone)
            end = datetime(year + 1, 1, 1, tzinfo=zone)
        elif day is None:
            start = datetime(year, month, 1, tzinfo=zone)
            end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=zone)
        else:
            start = datetime(year, month, day, tzinfo=zone)
            # Midnight to midnight in local time, even across a DST change.
            following = datetime.fromordinal(start.toordinal() + 1)
            end = following.replace(tzinfo=zone)
    except ValueError as exc:
        raise PeriodError(f"period {period!r} is not a real date ({exc})") from None
    return start.timestamp(), end.timestamp()
