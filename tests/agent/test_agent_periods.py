"""Local reporting periods."""

from __future__ import annotations

import pytest

from agent.protocol.period import Period, PeriodError


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("2026", 1_767_196_800, 1_798_732_800),
        ("2026-12", 1_796_054_400, 1_798_732_800),
        ("2026-11-21", 1_763_654_400 + 365 * 86400, 1_763_740_800 + 365 * 86400),
    ],
)
def test_period_bounds_in_shanghai(period: str, start: float, end: float) -> None:
    """If a period is local to Asia/Shanghai, then its bounds are 8 h before UTC midnight."""
    assert Period.parse(period, "Asia/Shanghai").bounds() == (start, end)


def test_day_across_dst_is_23_hours() -> None:
    start, end = Period.parse("2026-03-08", "America/New_York").bounds()
    assert end - start == 23 * 3600


@pytest.mark.parametrize("period", ["26", "2026-13", "2026-02-30", "2026/11", ""])
def test_bad_period_is_refused(period: str) -> None:
    with pytest.raises(PeriodError):
        Period.parse(period, "Asia/Shanghai")


@pytest.mark.parametrize(
    ("key", "kind"), [("2026", "year"), ("2026-11", "month"), ("2026-11-21", "day")]
)
def test_the_kind_follows_from_the_key(key: str, kind: str) -> None:
    period = Period.parse(key, "Asia/Shanghai")
    assert period.kind == kind
    assert period.slot(2) == f"{kind}/{key}/2"


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(PeriodError, match="time zone"):
        Period.parse("2026-11-21", "Mars/Olympus")
