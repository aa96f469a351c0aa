"""Reporting periods: a local calendar day, month or year in the factory's time zone.

One key format everywhere: "2026-11-21" (day), "2026-11" (month), "2026" (year). The kind
follows from the key, so `Period.parse` is the only parser. A report's place in the outbox
is its *slot*, the period plus a correction revision: "day/2026-11-21/0".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.protocol.errors import ProtocolError

PeriodKind = Literal["day", "month", "year"]
_KEY = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_KIND_BY_LENGTH: dict[int, PeriodKind] = {4: "year", 7: "month", 10: "day"}


class PeriodError(ProtocolError, ValueError):
    """A period key that is not a real day, month or year; str() is one user-facing sentence."""


@dataclass(frozen=True, slots=True)
class Period:
    """A calendar period in a time zone; build it with `Period.parse` or `Period.day`."""

    kind: PeriodKind
    key: str
    time_zone: str

    @classmethod
    def parse(cls, key: str, time_zone: str) -> Period:
        """'2026' -> year, '2026-11' -> month, '2026-11-21' -> day; PeriodError otherwise."""
        key = key.strip()
        if not _KEY.match(key):
            raise PeriodError(f"period {key!r} is not YYYY, YYYY-MM or YYYY-MM-DD")
        period = cls(_KIND_BY_LENGTH[len(key)], key, time_zone)
        period.bounds()  # a real date in a known time zone
        return period

    @classmethod
    def day(cls, day: date, time_zone: str) -> Period:
        return cls("day", day.isoformat(), time_zone)

    def first_day(self) -> date:
        match = _KEY.match(self.key)
        if not match or _KIND_BY_LENGTH.get(len(self.key)) != self.kind:
            raise PeriodError(f"period key {self.key!r} does not fit kind {self.kind!r}")
        year, month, day = (int(g) if g else 1 for g in match.groups())
        try:
            return date(year, month, day)
        except ValueError as error:
            raise PeriodError(f"period {self.key!r} is not a real date ({error})") from None

    def bounds(self) -> tuple[int, int]:
        """[start, end) as epoch seconds (UTC) of local midnights, even across a DST change."""
        first = self.first_day()
        try:
            zone = ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise PeriodError(f"time zone {self.time_zone!r} is not an IANA time zone") from None
        if self.kind == "day":
            following = date.fromordinal(first.toordinal() + 1)
        elif self.kind == "month":
            following = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
        else:
            following = date(first.year + 1, 1, 1)
        start = datetime(first.year, first.month, first.day, tzinfo=zone)
        end = datetime(following.year, following.month, following.day, tzinfo=zone)
        return int(start.timestamp()), int(end.timestamp())

    def buildable_from(self, grace_s: float) -> float:
        """The earliest epoch second at which the period's report may be built: its end +
        the grace for late data."""
        return self.bounds()[1] + grace_s

    def slot(self, revision: int) -> str:
        """The outbox's key for this period's report at `revision`: 'day/2026-11-21/0'."""
        return f"{self.kind}/{self.key}/{revision}"

    def to_json(self) -> dict[str, Any]:
        start, end = self.bounds()
        return {
            "kind": self.kind,
            "key": self.key,
            "time_zone": self.time_zone,
            "start": start,
            "end": end,
        }
