"""A backfill's progress in agent.db, so that an interrupted import resumes (agent.backfill).

`backfill_progress` (agent.store.schema) has one row per (history, device): how far the
device is imported (`imported_through`, epoch s), how many samples that is, and whether it is
done. The row is
written in the same transaction as the samples it accounts for, so after a kill -9 it says
exactly what is in the store and a re-run continues from there without a duplicate.

Until a device is imported, its hours of the history hold *placeholder* base measures: the
rows that a device without a single sample gets (state unknown, every slot expected, none
received), computed by the live derivation and time model. The real import replaces them
hour by hour (`INSERT OR REPLACE` on the same device-hour). So a half-imported store never
reads as complete collection: the devices and hours not yet imported are
expected-but-not-received, and the data collection rate is below 1.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.derive.engine import HOUR_S, Deriver
from indicators.columns import BASE_MEASURE_COLUMNS, DELTA_COLUMNS, INTERVAL_COLUMNS

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True, slots=True)
class DeviceProgress:
    device_id: str
    imported_through: float
    samples: int
    done: bool


@dataclass(frozen=True, slots=True)
class HistoryProgress:
    history_id: str
    start: float
    end: float
    devices: int
    done: int


class BackfillState:
    """Reads and (inside the store's transactions) writes `backfill_progress`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def histories(self) -> list[HistoryProgress]:
        rows = self._conn.execute(
            'SELECT history_id, min(start), max("end"), count(*), sum(done) '
            "FROM backfill_progress GROUP BY history_id ORDER BY min(start)"
        ).fetchall()
        return [HistoryProgress(str(h), float(s), float(e), int(n), int(d or 0))
                for h, s, e, n, d in rows]

    def progress(self, history_id: str) -> dict[str, DeviceProgress]:
        rows = self._conn.execute(
            "SELECT device_id, imported_through, samples, done FROM backfill_progress "
            "WHERE history_id = ?", (history_id,),
        ).fetchall()
        return {str(d): DeviceProgress(str(d), float(t), int(n), bool(done))
                for d, t, n, done in rows}

    def record(
        self, history_id: str, start: float, end: float, device: DeviceProgress
    ) -> None:
        """Upsert one device's progress (call inside the transaction of its samples)."""
        self._conn.execute(
            'INSERT INTO backfill_progress (history_id, device_id, start, "end", '
            "imported_through, samples, done) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (history_id, device_id) DO UPDATE SET "
            "imported_through = excluded.imported_through, samples = excluded.samples, "
            "done = excluded.done",
            (history_id, device.device_id, start, end, device.imported_through,
             device.samples, int(device.done)),
        )

    def write_placeholders(
        self, deriver: Deriver, ideal: dict[str, float], min_failure_s: float,
        start: float, end: float,
    ) -> None:
        """Base measures of every planned device over the history's complete hours as if
        it had no sample at all (see the module docstring); inside the caller's transaction."""
        rows = placeholder_measures(deriver, ideal, min_failure_s, start, end)
        columns = ", ".join(BASE_MEASURE_COLUMNS)
        marks = ", ".join("?" for _ in BASE_MEASURE_COLUMNS)
        self._conn.executemany(
            f"INSERT OR REPLACE INTO base_measures ({columns}) VALUES ({marks})",
            rows.loc[:, list(BASE_MEASURE_COLUMNS)].astype(object).itertuples(
                index=False, name=None),
        )


def placeholder_measures(
    deriver: Deriver, ideal: dict[str, float], min_failure_s: float, start: float, end: float
) -> pd.DataFrame:
    """What the derivation makes of [start, end) without samples, per planned device: a
    scratch `Deriver` on the same plans, so expected samples are counted exactly as the real
    import counts them. Only complete hours (as the import materialises them)."""
    import pandas as pd

    from indicators.timemodel import base_measures

    scratch = Deriver(deriver.plans, deriver.realtime_bound_s)
    for device_id in deriver.plans:
        scratch.begin(device_id, start)
        scratch.advance(device_id, end)
    derived = scratch.take()
    intervals = pd.DataFrame.from_records(derived.intervals, columns=list(INTERVAL_COLUMNS))
    intervals["auto"] = intervals["auto"].astype(bool)
    rows = base_measures(intervals, pd.DataFrame(columns=list(DELTA_COLUMNS)), derived.counts(),
                         ideal, min_failure_s=min_failure_s)
    first = int(start // HOUR_S) * HOUR_S
    return rows[(rows["hour_start"] >= first) & (rows["hour_start"] + HOUR_S <= end)]
