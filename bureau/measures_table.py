"""Base measures in columns: each accepted daily report's per-device day sums, written in the
receiver's transaction, so the annual evaluation reads numbers instead of re-parsing a year of
report JSON (issue 18 item 6: that was 60 % of 356 ms per factory).

Two tables beside the store's `reports` (created by migration 0003, bureau/migrations/; the
statements run on SQLite and PostgreSQL through bureau.database):

    measured_reports  one row per daily report recorded: factory, day, whether its base
                      measures rest on any received sample (`report_has_samples`)
    report_measures   one row per device and local day of the report: the day sums that
                      `indicators.measures.daily_measures` gives for its hourly rows

The rows are what the receiver's indicator check computed (bureau.indicator_check), so they
are the signed report's own numbers. They are a cache of the signed reports, never evidence:
the evidence folder and its offline verifier (bureau.evidence_verify) recompute from the
signed reports. A report without a row (a database from before this table) is recorded from
its payload the first time the evaluation needs it (`record_missing`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from agent.protocol.envelope import Kind, unverified_payload
from agent.protocol.report import base_frame, report_has_samples
from bureau.database import Database
from bureau.indicator_check import DaySums, day_sums
from indicators.columns import BASE_MEASURE_COLUMNS, COUNT_COLUMNS, MEASURE_COLUMNS
from indicators.measures import daily_measures

_ROW_NAMES = ("device_id", "day_start", *MEASURE_COLUMNS)
_INSERT_ROWS = (
    f"INSERT INTO report_measures (report_id, {', '.join(_ROW_NAMES)}) VALUES "
)
_ROWS_PER_INSERT = 200  # 23 parameters a row: 4,600, below SQLite's and PostgreSQL's limits
_COUNTS = frozenset(COUNT_COLUMNS)


def record(
    db: Database, report: Mapping[str, Any], sums: DaySums | None = None, *,
    replace: bool = True,
) -> None:
    """Record an accepted daily report's day sums (`sums` when the verifier computed them);
    other period kinds are not recorded. Replaces an earlier recording of the same report id
    unless `replace` is False (the receiver's new reports: two statements fewer)."""
    period = report["period"]
    if period["kind"] != "day":
        return
    write(
        db,
        str(report["report_id"]),
        str(report["factory_id"]),
        str(period["key"]),
        report_has_samples(report),
        _rows(report, sums),
        replace=replace,
    )


def write(
    db: Database,
    report_id: str,
    factory_id: str,
    period_key: str,
    has_samples: bool,
    rows: Sequence[Sequence[Any]],
    *,
    replace: bool = True,
) -> None:
    """One report's recording: (device_id, day_start, *MEASURE_COLUMNS) per row."""
    if replace:
        key = {"report_id": report_id}
        db.execute("DELETE FROM report_measures WHERE report_id = :report_id", key)
        db.execute("DELETE FROM measured_reports WHERE report_id = :report_id", key)
    db.execute(
        "INSERT INTO measured_reports (report_id, factory_id, period_key, has_samples)"
        " VALUES (:report_id, :factory_id, :period_key, :has_samples)",
        {"report_id": report_id, "factory_id": factory_id, "period_key": period_key,
         "has_samples": int(has_samples)},
    )
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        db.execute(*_insert_rows(report_id, rows[start : start + _ROWS_PER_INSERT]))


def _insert_rows(
    report_id: str, rows: Sequence[Sequence[Any]]
) -> tuple[str, dict[str, Any]]:
    """One INSERT of several rows (multi-row VALUES, in SQLite and PostgreSQL): one statement
    per report instead of one per device, each a round of the driver's work and the server's."""
    params: dict[str, Any] = {"report_id": report_id}
    groups = []
    for n, row in enumerate(rows):
        marks = []
        for name, value in zip(_ROW_NAMES, _plain(row), strict=True):
            params[f"{name}_{n}"] = value
            marks.append(f":{name}_{n}")
        groups.append(f"(:report_id, {', '.join(marks)})")
    return _INSERT_ROWS + ", ".join(groups), params


def measure_rows(report: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """The rows `record` writes for a daily report."""
    return _rows(report, None)


def _rows(report: Mapping[str, Any], sums: DaySums | None) -> list[tuple[Any, ...]]:
    if sums is None:
        sums = day_sums(report)
    if sums is not None:
        return sums.rows()
    # Rows over two local days, out of order or none: the general (pandas) sum.
    member = report["base_measures"]
    if not member["rows"]:
        return []
    daily = daily_measures(base_frame(member), str(report["period"]["time_zone"]))
    columns = [daily[name].tolist() for name in BASE_MEASURE_COLUMNS]
    return [tuple(row) for row in zip(*columns, strict=True)]


@dataclass(frozen=True)
class ReportMeta:
    """A stored report's columns, without its JWS."""

    report_id: str
    seq: int
    period_kind: str
    period_key: str
    revision: int
    kid: str
    payload_sha256: str
    prev_sha256: str
    state: str


def report_metas(db: Database, factory_id: str) -> list[ReportMeta]:
    """Every stored report of the factory in seq order, its JWS left on disk."""
    rows = db.rows(
        "SELECT report_id, seq, period_kind, period_key, revision, kid, payload_sha256, "
        "prev_sha256, state FROM reports WHERE factory_id = :factory_id ORDER BY seq",
        {"factory_id": factory_id},
    )
    return [ReportMeta(*row) for row in rows]


def has_samples(db: Database, report_ids: Iterable[str]) -> dict[str, bool]:
    """Recorded reports among `report_ids` and whether each rests on a received sample."""
    found: dict[str, bool] = {}
    for chunk in _chunks(list(report_ids)):
        marks, params = _in_list(chunk)
        for report_id, flag in db.rows(
            f"SELECT report_id, has_samples FROM measured_reports WHERE report_id IN ({marks})",
            params,
        ):
            found[str(report_id)] = bool(flag)
    return found


def record_missing(db: Database, report_ids: Sequence[str]) -> int:
    """Record, from their stored JWS, the reports among `report_ids` not recorded yet; returns
    how many (each one parsed once, then never again)."""
    known = has_samples(db, report_ids)
    missing = [r for r in report_ids if r not in known]
    for chunk in _chunks(missing):
        marks, params = _in_list(chunk)
        tokens = db.rows(f"SELECT jws FROM reports WHERE report_id IN ({marks})", params)
        for (token,) in tokens:
            record(db, unverified_payload(token, Kind.REPORT))
    return len(missing)


def payload(db: Database, report_id: str) -> dict[str, Any]:
    """One stored report's payload (decoded from its verbatim JWS)."""
    row = db.row("SELECT jws FROM reports WHERE report_id = :report_id", {"report_id": report_id})
    if row is None:
        raise KeyError(report_id)
    return unverified_payload(row[0], Kind.REPORT)


def daily_base(db: Database, report_ids: Sequence[str], time_zone: str) -> pd.DataFrame:
    """The recorded day sums of `report_ids` as `daily_measures` gives them for the reports'
    hourly rows together (device, local day), the frame the annual evaluation sums."""
    rows: list[tuple[Any, ...]] = []
    names = ", ".join(("device_id", "day_start", *MEASURE_COLUMNS))
    for chunk in _chunks(list(report_ids)):
        marks, params = _in_list(chunk)
        rows += [
            tuple(row)
            for row in db.rows(
                f"SELECT {names} FROM report_measures WHERE report_id IN ({marks})", params
            )
        ]
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(BASE_MEASURE_COLUMNS)
    frame: dict[str, Any] = {
        "device_id": np.array(columns[0], dtype=object),
        "hour_start": np.array(columns[1], dtype=np.int64),
    }
    for offset, name in enumerate(MEASURE_COLUMNS, start=2):
        frame[name] = np.array(columns[offset], dtype=np.int64 if name in _COUNTS else np.float64)
    # One row per device-day already; daily_measures orders them and merges a device-day
    # that two reports share (rows of a malformed period), as it does for hourly rows.
    return daily_measures(pd.DataFrame(frame), time_zone)


def _chunks(items: list[str], size: int = 500) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _in_list(items: list[str]) -> tuple[str, dict[str, str]]:
    """Named parameters for `IN (...)`: the marks and their values."""
    params = {f"id{index}": item for index, item in enumerate(items)}
    return ", ".join(f":{name}" for name in params), params


def _plain(row: Sequence[Any]) -> list[Any]:
    """numpy scalars as Python numbers: psycopg adapts int and float, not numpy.int64."""
    return [value.item() if isinstance(value, np.generic) else value for value in row]
