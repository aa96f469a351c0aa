"""Writing what `Deriver.take()` produced (agent.derive.carry.Derived) inside the store's
transaction, and reading the signal-health rows back for a period."""

from __future__ import annotations

import sqlite3

from agent.derive.carry import COUNT_FIELDS, Derived
from agent.derive.issues import IssueEvent, events

_COUNT_UPSERT = (
    "INSERT INTO sample_counts (device_id, hour_start, " + ", ".join(COUNT_FIELDS) + ") "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, hour_start) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in COUNT_FIELDS)
)
_ISSUE_UPSERT = (
    "INSERT INTO signal_issues (device_id, signal_id, cause, hour_start, count, detail) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, signal_id, cause, hour_start) DO UPDATE "
    "SET count = count + excluded.count, "
    "detail = CASE WHEN excluded.detail = '' THEN detail ELSE excluded.detail END"
)


def write_derived(conn: sqlite3.Connection, derived: Derived) -> list[IssueEvent]:
    """Insert the derived rows; returns the batch's signal-health events (for after the
    commit: metrics and log lines)."""
    conn.executemany(
        'INSERT INTO intervals (device_id, start, "end", state, auto) VALUES (?, ?, ?, ?, ?)',
        derived.intervals,
    )
    conn.executemany(
        'INSERT INTO deltas (device_id, role, start, "end", delta) VALUES (?, ?, ?, ?, ?)',
        derived.deltas,
    )
    conn.executemany(_COUNT_UPSERT, derived.count_rows())
    conn.executemany(_ISSUE_UPSERT, derived.issues.rows())
    return events(derived.issues)


def read_signal_issues(conn: sqlite3.Connection, start: float, end: float
                       ) -> list[dict[str, object]]:
    """Problem samples per device, signal and cause over [start, end), with the detail of
    the latest hour that had one; sorted, for the report's data_quality section."""
    rows = conn.execute(
        "SELECT device_id, signal_id, cause, SUM(count), "
        "(SELECT detail FROM signal_issues AS latest WHERE latest.device_id = i.device_id "
        "AND latest.signal_id = i.signal_id AND latest.cause = i.cause AND latest.hour_start "
        ">= ? AND latest.hour_start < ? ORDER BY hour_start DESC LIMIT 1) "
        "FROM signal_issues AS i WHERE hour_start >= ? AND hour_start < ? "
        "GROUP BY device_id, signal_id, cause ORDER BY device_id, signal_id, cause",
        (start, end, start, end),
    ).fetchall()
    return [
        {"device_id": d, "signal_id": s, "cause": c, "samples": int(n), "detail": detail}
        for d, s, c, n, detail in rows
    ]
