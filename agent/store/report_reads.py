"""Reads for report building: base measures, and raw samples as the columns segment
digests need (without a DataFrame), and the rowid ranges both raw reads walk.

Functions of a connection, so that report-building worker processes (agent.report_inputs)
read exactly as `Store` does, over their own read-only connection.

`Store.raw_samples` (agent.store.raw.read_raw) returns every column as a DataFrame, with
pandas' type inference on the value column; building a daily report only needs
(device, signal, source_ts, received_ts, value, quality) per row, and reading those as
plain columns costs about half as much. Nothing here writes.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from agent.derive.slots import HOUR_S
from indicators.columns import BASE_MEASURE_COLUMNS


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


@dataclass(frozen=True)
class RawColumns:
    """One period's raw samples as columns, rows by device then insertion (rowid)."""

    device_names: list[str]  # one per device present, in reading order
    device_rows: list[int]  # how many rows each of them has
    signal_id: list[str]
    source_ts: npt.NDArray[np.float64]
    received_ts: npt.NDArray[np.float64]
    value: list[Any]  # as SQLite gives them (tagged BLOBs undecoded)
    quality: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.signal_id)


def read_raw_columns(conn: sqlite3.Connection, start: float, end: float) -> RawColumns:
    """The raw samples with start <= source_ts < end, in `Store.raw_samples`' row order."""
    names: list[str] = []
    counts: list[int] = []
    rows: list[tuple[Any, ...]] = []
    for device, first, last in merged_ranges(conn, start, end):
        found = conn.execute(
            "SELECT signal_id, source_ts, received_ts, value, quality FROM samples "
            "WHERE rowid BETWEEN ? AND ? AND device_id = ? AND source_ts >= ? "
            "AND source_ts < ? ORDER BY rowid",
            (first, last, device, start, end),
        ).fetchall()
        if not found:
            continue
        if names and names[-1] == device:
            counts[-1] += len(found)
        else:
            names.append(device)
            counts.append(len(found))
        rows.extend(found)
    if not rows:
        empty = np.zeros(0, dtype=np.float64)
        return RawColumns([], [], [], empty, empty, [], np.zeros(0, dtype=np.int64))
    signal, source, received, value, quality = zip(*rows, strict=True)
    return RawColumns(
        device_names=names,
        device_rows=counts,
        signal_id=list(signal),
        source_ts=np.array(source, dtype=np.float64),
        received_ts=np.array(received, dtype=np.float64),
        value=list(value),
        quality=np.array(quality, dtype=np.int64),
    )
