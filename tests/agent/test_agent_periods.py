"""Local reporting periods."""

from __future__ import annotations

import pytest

from agent.periods import PeriodError, period_bounds


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
    assert period_bounds(period, "Asia/Shanghai") == (start, end)


def test_day_across_dst_is_23_hours() -> None:
    start, end = period_bounds("2026-03-08", "America/New_York")
    assert end - start == 23 * 3600


@pytest.mark.parametrize("period", ["26", "2026-13", "2026-02-30", "2026/11", ""])
def test_bad_period_is_refused(period: str) -> None:
    with pytest.raises(PeriodError):
        period_bounds(period, "Asia/Shanghai")
