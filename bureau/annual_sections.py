"""The coverage and chain sections of the annual evaluation (bureau.annual): per month, the
days with an accepted report, with none, without data, rejected or pending-link; and the year's
reports in chain order with their links, the seq gaps and the rejections."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from agent.protocol.chain import ChainEntry, walk_chain
from bureau.store import ACCEPTED, PENDING_LINK, REJECTED

if TYPE_CHECKING:
    from bureau.annual import DayEntry

NO_DATA = "no_data"  # a day whose accepted report has no sample: not a coverage day


def day_in(period_key: str, first: date, last: date) -> bool:
    try:
        day = date.fromisoformat(period_key)
    except ValueError:
        return False
    return first <= day <= last


def period_days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def coverage_section(
    entries: Sequence[DayEntry],
    chosen: Mapping[str, DayEntry],
    no_data: set[str],
    first: date,
    last: date,
    bound: float,
) -> dict[str, Any]:
    states: dict[str, set[str]] = {}
    for entry in entries:
        states.setdefault(entry.period_key, set()).add(entry.state)

    def status(day: str) -> str:
        if day in chosen:
            return ACCEPTED
        if day in no_data:
            return NO_DATA
        seen = states.get(day, set())
        if PENDING_LINK in seen:
            return PENDING_LINK
        if REJECTED in seen:
            return REJECTED
        return "missing"

    by_day = {d.isoformat(): status(d.isoformat()) for d in period_days(first, last)}
    months: list[dict[str, Any]] = []
    for month in sorted({d[:7] for d in by_day}):
        days = {d: s for d, s in by_day.items() if d.startswith(month)}
        months.append(tally(days, bound) | {"month": month})
    total = tally(by_day, bound)
    ok = total["ok"] and all(m["ok"] for m in months)
    return total | {
        "min_day_share": bound,
        "ok": ok,
        "months": months,
        "months_below_bound": [m["month"] for m in months if not m["ok"]],
        "missing_days": [d for d, s in by_day.items() if s == "missing"],
        "no_data_days": [d for d, s in by_day.items() if s == NO_DATA],
        "rejected_days": [d for d, s in by_day.items() if s == REJECTED],
        "pending_link_days": [d for d, s in by_day.items() if s == PENDING_LINK],
    }


def tally(days: Mapping[str, str], bound: float) -> dict[str, Any]:
    counts = {s: sum(1 for v in days.values() if v == s) for s in (ACCEPTED, "missing")}
    counts[REJECTED] = sum(1 for v in days.values() if v == REJECTED)
    counts[PENDING_LINK] = sum(1 for v in days.values() if v == PENDING_LINK)
    counts[NO_DATA] = sum(1 for v in days.values() if v == NO_DATA)
    share = counts[ACCEPTED] / len(days) if days else 0.0
    return {
        "days": len(days),
        "accepted": counts[ACCEPTED],
        "missing": counts["missing"],
        "no_data": counts[NO_DATA],
        "rejected": counts[REJECTED],
        "pending_link": counts[PENDING_LINK],
        "share": share,
        "ok": share >= bound,
    }


def chain_section(
    entries: Sequence[DayEntry],
    chain: Sequence[DayEntry],
    chosen: Mapping[str, DayEntry],
    first: date,
    last: date,
) -> dict[str, Any]:
    """The year's stored reports and the chain's reports of any kind between them, in seq
    order with their link state; the seq gaps; the rejections."""
    unique: dict[str, DayEntry] = {}
    for entry in [*entries, *chain]:
        if entry.state != REJECTED and entry.seq is not None:
            unique.setdefault(entry.report_id or f"seq {entry.seq}", entry)
    stored = sorted(unique.values(), key=lambda e: int(e.seq or 0))
    used = {e.report_id for e in chosen.values()}
    links: list[dict[str, Any]] = []
    gaps: list[dict[str, int]] = []
    for link in walk_chain(
        [ChainEntry(int(e.seq or 0), e.payload_sha256, e.prev_sha256) for e in stored]
    ):
        entry = stored[link.index]
        if link.gap and link.previous_seq is not None:
            gaps.append({"after_seq": link.previous_seq, "next_seq": link.seq})
        links.append(
            {
                "seq": link.seq,
                "kind": entry.kind,
                "period_key": entry.period_key,
                "report_id": entry.report_id,
                "revision": entry.revision,
                "kid": entry.kid,
                "state": entry.state,
                "payload_sha256": entry.payload_sha256,
                "prev_sha256": entry.prev_sha256,
                "linked_to_previous": link.linked,
                "counted": entry.kind == "day"
                and entry.report_id in used
                and day_in(entry.period_key, first, last),
            }
        )
    rejections = [
        {
            "period_key": e.period_key,
            "report_id": e.report_id,
            "seq": e.seq,
            "reason": e.reason,
            "payload_sha256": e.payload_sha256,
        }
        for e in entries
        if e.state == REJECTED
    ]
    return {"reports": links, "gaps": gaps, "rejections": rejections}
