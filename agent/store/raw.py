"""Raw samples in agent.db: the exact insert (with its value-by-value retry), the
sample_index it keeps, the exact read-back and the expiry.

Values go through agent.store.values. `Store` calls these inside its transactions; nothing
here commits.
"""

from __future__ import annotations

import dataclasses
import math
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from agent.derive.sample_columns import SampleColumns
from agent.derive.slots import HOUR_S
from agent.store.report_reads import merged_ranges
from agent.store.sealed import segment_times
from agent.store.sqlite import StoreError
from agent.store.values import (
    BIND_ERRORS,
    UNSTORABLE,
    read_value,
    stored_column,
    stored_value,
)
from indicators.vocabulary import Q_BAD

if TYPE_CHECKING:
    import pandas as pd

_SAMPLE_INSERT = (
    "INSERT INTO samples (device_id, signal_id, source_ts, received_ts, value, quality, status, "
    "origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# A batch with a sample keyed by another time than its source time (agent.store.sealed).
_SAMPLE_INSERT_SEG = (
    "INSERT INTO samples (device_id, signal_id, source_ts, received_ts, value, quality, status, "
    "origin, seg_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

# Told which samples of a batch cannot be stored: (device ids, columns, mask).
UnstorableHook = Callable[[list[str], SampleColumns, npt.NDArray[np.bool_]], None]


def insert_raw(
    conn: sqlite3.Connection, path: Path, device_ids: list[str], cols: SampleColumns,
    quality: npt.NDArray[np.uint8], on_unstorable: UnstorableHook,
) -> npt.NDArray[np.bool_] | None:
    """Append raw samples (with `quality` as stored) and record each device-hour's
    rowid range in sample_index, by the hour of each sample's segment time (the source time,
    or the receive time where agent.store.sealed says so: kept in `seg_ts`).

    Values are stored exactly (agent.store.values). Returns None, or, if some value
    cannot be stored, the mask of those samples: they are stored BAD without value, and
    `on_unstorable` is told before they are.
    """
    if len(device_ids) == 0:
        return None

    keyed, segment_ts = segment_times(conn, cols)
    # Usually None: then seg_ts is left to its default, NULL (a column less to bind per row).
    insert = _SAMPLE_INSERT if segment_ts is None else _SAMPLE_INSERT_SEG
    extra = [] if segment_ts is None else [segment_ts]

    def rows(values: list[Any], stored_quality: npt.NDArray[np.uint8]) -> Iterable[Any]:
        return zip(
            device_ids, cols.signal_id.tolist(), cols.source_ts.tolist(),
            cols.received_ts.tolist(), values, stored_quality.tolist(),
            cols.status.tolist(), cols.origin.tolist(), *extra, strict=True,
        )

    base = conn.execute("SELECT coalesce(max(rowid), 0) FROM samples").fetchone()[0]
    unstorable: npt.NDArray[np.bool_] | None = None
    try:
        # The fast path: plain ints and floats go to SQLite as they are.
        conn.executemany(insert, rows(stored_column(cols.value), quality))
    except (*BIND_ERRORS, sqlite3.ProgrammingError):
        # SQLite refused a value: an int in [2^63, 2^64) (kept as a tagged BLOB), or one
        # the store cannot hold (an int beyond uint64 / below int64, a non-UTF-8 str, an
        # unsupported type). Rare: undo this batch's rows and store it value by value,
        # the unstorable ones as BAD samples, instead of losing the whole batch. If the
        # retry fails too, the problem was not a value and the error propagates.
        conn.execute("DELETE FROM samples WHERE rowid > ?", (base,))
        values = [stored_value(value) for value in cols.value.tolist()]
        mask = np.fromiter(
            (value is UNSTORABLE for value in values), dtype=bool, count=len(values)
        )
        if mask.any():
            unstorable = mask
            on_unstorable(device_ids, cols, mask)
            values = [None if value is UNSTORABLE else value for value in values]
            quality = np.where(mask, Q_BAD, quality).astype(np.uint8)
        conn.executemany(insert, rows(values, quality))
    top = conn.execute("SELECT max(rowid) FROM samples").fetchone()[0]
    if top != base + len(device_ids):
        raise StoreError(f"{path}: sample rowids are not consecutive; refusing to index")
    hours = (np.floor(keyed / HOUR_S) * HOUR_S).astype(np.int64).tolist()
    # The rowids are consecutive in batch order: a (device, hour)'s first and last.
    ranges: dict[tuple[str, int], list[int]] = {}
    for rowid, key in enumerate(zip(device_ids, hours, strict=True), start=base + 1):
        span = ranges.get(key)
        if span is None:
            ranges[key] = [rowid, rowid]
        else:
            span[1] = rowid
    conn.executemany(
        "INSERT INTO sample_index (device_id, hour_start, first_rowid, last_rowid) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (device_id, hour_start) DO UPDATE SET "
        "first_rowid = min(first_rowid, excluded.first_rowid), "
        "last_rowid = max(last_rowid, excluded.last_rowid)",
        ((d, h, lo, hi) for (d, h), (lo, hi) in ranges.items()),
    )
    return unstorable


def as_bad(cols: SampleColumns, unstorable: npt.NDArray[np.bool_]) -> SampleColumns:
    """`cols` with the unstorable samples as BAD without value (as they are stored)."""
    value = cols.value.astype(object)  # a copy: the caller's columns stay as they were
    value[unstorable] = None
    quality = np.where(unstorable, Q_BAD, cols.quality).astype(np.uint8)
    return dataclasses.replace(cols, value=value, quality=quality)


def read_raw(
    conn: sqlite3.Connection, start: float, end: float, device_id: str | None = None
) -> pd.DataFrame:
    """Raw samples with start <= segment time < end (agent.store.sealed: the source time
    unless `seg_ts` says otherwise), ordered by device and insertion, values exactly as
    ingested (what `Store.raw_samples` returns; see there)."""
    columns = ("device_id", "signal_id", "source_ts", "received_ts", "value", "quality",
               "status", "origin")
    ranges = merged_ranges(conn, start, end, device_id)  # no row twice (see there)
    where = (
        "rowid BETWEEN ? AND ? AND device_id = ? AND coalesce(seg_ts, source_ts) >= ? "
        "AND coalesce(seg_ts, source_ts) < ?"
    )
    params = [(first, last, device, start, end) for device, first, last in ranges]
    # A value needing Python work: a tagged BLOB to decode (1) or an integer that a
    # float64 column would round (2). A scan in SQLite finds out whether there is any
    # (about 5x cheaper than an extra column per row); only then is `kind` fetched.
    special = any(
        conn.execute(
            f"SELECT EXISTS (SELECT 1 FROM samples WHERE {where} AND {_SPECIAL} != 0)",
            range_params,
        ).fetchone()[0]
        for range_params in params
    )
    import pandas as pd

    select = ", ".join(columns) + (f", {_SPECIAL}" if special else "")
    rows: list[tuple[object, ...]] = []
    for range_params in params:
        rows.extend(conn.execute(
            f"SELECT {select} FROM samples WHERE {where} ORDER BY rowid", range_params
        ).fetchall())
    if not special:
        return pd.DataFrame.from_records(rows, columns=list(columns))
    frame = pd.DataFrame.from_records(rows, columns=[*columns, "kind"])
    kinds = frame.pop("kind").to_numpy(np.int64)
    frame["value"] = _exact_values(rows, kinds)
    return frame


def delete_raw_before(conn: sqlite3.Connection, cutoff: float) -> int:
    """Delete the raw samples of hours that end at or before `cutoff`, and their
    sample_index rows; returns how many samples went."""
    deleted = 0
    ranges = conn.execute(
        "SELECT device_id, hour_start, first_rowid, last_rowid FROM sample_index "
        "WHERE hour_start + 3600 <= ?", (cutoff,),
    ).fetchall()
    for device_id, hour, first, last in ranges:
        deleted += conn.execute(
            "DELETE FROM samples WHERE rowid BETWEEN ? AND ? AND device_id = ? "
            "AND coalesce(seg_ts, source_ts) < ?", (first, last, device_id, hour + HOUR_S),
        ).rowcount
        conn.execute(
            "DELETE FROM sample_index WHERE device_id = ? AND hour_start = ?",
            (device_id, hour),
        )
    return deleted


# Integers up to 2^53 in magnitude are exact as float64.
_FLOAT_EXACT = 2**53
# Per raw row, in SQL: 1 for a tagged BLOB (agent.store.values), 2 for an integer that a
# float64 column would round, 0 for a value pandas reads as it is.
_SPECIAL = (
    "(CASE WHEN typeof(value) = 'blob' THEN 1 WHEN typeof(value) = 'integer' AND "
    f"(value > {_FLOAT_EXACT} OR value < -{_FLOAT_EXACT}) THEN 2 ELSE 0 END)"
)


def _exact_values(rows: Sequence[tuple[Any, ...]], kinds: npt.NDArray[np.int64]) -> pd.Series:
    """The value column (index 4 of `rows`) with tagged BLOBs decoded and nothing rounded.

    pandas' inference decides the column as it would have for values SQLite held natively,
    so the reporter's Merkle segments hash exactly as before this column could hold such
    values: a missing value in a numbers-only column reads as NaN, and a NaN among floats
    reads as before (when SQLite stored it as NULL). Only where that inference would round
    an integer beyond 2^53 into a float64 does the column keep Python objects instead.
    """
    import pandas as pd

    values = np.empty(len(rows), dtype=object)
    values[:] = [row[4] for row in rows]
    big = bool((kinds == 2).any())
    for index in np.flatnonzero(kinds == 1).tolist():
        value = read_value(values[index])
        values[index] = value
        big = big or isinstance(value, int)
    inferred = pd.Series(list(values))
    if not big or inferred.dtype == object:
        return inferred
    if inferred.dtype.kind == "f":
        # Numbers and missing values only: missing reads as NaN, as pandas would have it.
        missing = np.fromiter((value is None for value in values), dtype=bool, count=len(values))
        values[missing] = math.nan
    return pd.Series(values, dtype=object)
