"""Reads for report building: base measures, and the rowid ranges the raw reads walk
(`Store.raw_samples`, and the sealing of a day's raw segments, agent.store.sealed).

Functions of a connection, so that report-building worker processes (agent.report_inputs)
read exactly as `Store` does, over their own read-only connection. Nothing here writes.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import numpy as np

from agent.derive.slots import HOUR_S
from indicators.columns import BASE_MEASURE_COLUMNS

if TYPE_CHECKING:
    import pandas as pd


def _devices_of(table: str) -> str:
    """SQL for the distinct device ids of `table`, one primary-key seek per device.

    base_measures and sample_index are keyed (device_id, hour_start): a condition on
    hour_start alone scans the whole table (a year of a factory: 20 ms per day read),
    while `device_id IN (this)` seeks each device's hours directly (under a millisecond).
    """
    return (
        f"(WITH RECURSIVE ids(id) AS (SELECT (SELECT min(device_id) FROM {table}) "
        f"UNION ALL SELECT (SELECT min(device_id) FROM {table} WHERE device_id > ids.id) "
        "FROM ids WHERE ids.id IS NOT NULL) SELECT id FROM ids WHERE id IS NOT NULL)"
    )


def read_base_measures(conn: sqlite3.Connection, start: float, end: float) -> pd.DataFrame:
    """Materialised hourly rows with start <= hour_start < end (`Store.base_measures`)."""
    import pandas as pd

    rows = conn.execute(
        f"SELECT {', '.join(BASE_MEASURE_COLUMNS)} FROM base_measures WHERE device_id IN "
        f"{_devices_of('base_measures')} AND hour_start >= ? AND hour_start < ? "
        "ORDER BY device_id, hour_start",
        (start, end),
    ).fetchall()
    frame = pd.DataFrame.from_records(rows, columns=list(BASE_MEASURE_COLUMNS))
    return frame.astype({"hour_start": np.int64})


def merged_ranges(
    conn: sqlite3.Connection, start: float, end: float, device_id: str | None = None
) -> list[tuple[str, int, int]]:
    """(device_id, first_rowid, last_rowid) covering the samples of [start, end), by device
    and rowid, with overlapping or adjacent ranges of a device merged.

    sample_index keeps one rowid range per device-hour; a batch that mixes two hours of a
    device (samples straddling an hour boundary) gives two overlapping ranges, and reading
    each range over the whole period would return the rows they share twice.
    """
    devices = "(?)" if device_id is not None else _devices_of("sample_index")
    rows = conn.execute(
        f"SELECT device_id, first_rowid, last_rowid FROM sample_index WHERE device_id IN "
        f"{devices} AND hour_start >= ? AND hour_start < ? ORDER BY device_id, first_rowid",
        (*(() if device_id is None else (device_id,)), int(start // HOUR_S) * HOUR_S, end),
    ).fetchall()
    merged: list[tuple[str, int, int]] = []
    for device, first, last in rows:
        if merged and merged[-1][0] == device and first <= merged[-1][2] + 1:
            merged[-1] = (device, merged[-1][1], max(merged[-1][2], last))
        else:
            merged.append((device, first, last))
    return merged
