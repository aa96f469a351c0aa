"""Materialising closed hours: the `base_measures` rows of a device's hours, from its
intervals, deltas and sample counts (indicators.timemodel), inside the store's transaction.

The time model is written with pandas. A process that only collects (`tieragent run`) does
not load pandas: it would stay in its memory for good (about 40 MB) for a fraction of a
second of work per hour. There `Store` hands the hours' rows, read inside its transaction,
to a short-lived child process (`python -m agent.store.base_rows`, pickles over stdin and
stdout) and writes the rows it answers, in the same transaction. Everywhere else (backfill,
reports, tests) the same function runs in-process. If the child cannot run, the rows are
computed in-process after all: a correct hour matters more than the memory.
"""

from __future__ import annotations

import logging
import pickle
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.child_env import child_env
from agent.derive.carry import COUNT_FIELDS

log = logging.getLogger(__name__)

Row = tuple[Any, ...]
CHILD_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class HourInputs:
    """What the base measures of one device's hours [start, end) are computed from."""

    device_id: str
    start: int
    end: int
    intervals: list[Row]  # INTERVAL_COLUMNS, from the last known state before `start` on
    deltas: list[Row]  # DELTA_COLUMNS
    counts: list[Row]  # device_id, hour_start, *COUNT_FIELDS
    ideal_cycle_time_s: float | None
    min_failure_s: float


def read_inputs(conn: sqlite3.Connection, device_id: str, start: int, end: int,
                ideal_cycle_time_s: float | None, min_failure_s: float) -> HourInputs:
    # From the last known state before the window on: a stop or an offline spell that
    # crosses into the window is judged by the state before it (timemodel; its hours
    # before the window are dropped in `base_measure_rows`).
    known_before = conn.execute(
        "SELECT start FROM intervals WHERE device_id = ? AND start < ? "
        "AND state NOT IN ('unknown', 'offline') ORDER BY start DESC LIMIT 1",
        (device_id, start),
    ).fetchone()
    intervals = conn.execute(
        'SELECT device_id, start, "end", state, auto FROM intervals '
        "WHERE device_id = ? AND start >= ? AND start < ? ORDER BY start",
        (device_id, known_before[0] if known_before else start, end),
    ).fetchall()
    deltas = conn.execute(
        'SELECT device_id, role, start, "end", delta FROM deltas '
        'WHERE device_id = ? AND "end" > ? AND "end" <= ? ORDER BY "end"',
        (device_id, start, end),
    ).fetchall()
    counts = conn.execute(
        "SELECT device_id, hour_start, " + ", ".join(COUNT_FIELDS) + " FROM sample_counts "
        "WHERE device_id = ? AND hour_start >= ? AND hour_start < ?",
        (device_id, start, end),
    ).fetchall()
    return HourInputs(device_id, start, end, intervals, deltas, counts, ideal_cycle_time_s,
                      min_failure_s)


def base_measure_rows(inputs: Sequence[HourInputs]) -> list[Row]:
    """The base-measure rows (BASE_MEASURE_COLUMNS, Python values) of every input's hours."""
    import pandas as pd

    from indicators.columns import BASE_MEASURE_COLUMNS, DELTA_COLUMNS, INTERVAL_COLUMNS
    from indicators.timemodel import base_measures

    out: list[Row] = []
    for item in inputs:
        intervals = pd.DataFrame.from_records(item.intervals, columns=list(INTERVAL_COLUMNS))
        intervals["auto"] = intervals["auto"].astype(bool)
        deltas = pd.DataFrame.from_records(item.deltas, columns=list(DELTA_COLUMNS))
        counts = pd.DataFrame.from_records(
            item.counts, columns=["device_id", "hour_start", *COUNT_FIELDS])
        ideal = {item.device_id: item.ideal_cycle_time_s} if item.ideal_cycle_time_s else {}
        rows = base_measures(intervals, deltas, counts, ideal, min_failure_s=item.min_failure_s)
        rows = rows[(rows["hour_start"] >= item.start) & (rows["hour_start"] < item.end)]
        frame = rows.loc[:, list(BASE_MEASURE_COLUMNS)].astype(object)
        out.extend(frame.itertuples(index=False, name=None))
    return out


def base_measure_rows_in_child(inputs: Sequence[HourInputs]) -> list[Row]:
    """`base_measure_rows` in a short-lived child process; in-process if that fails."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "agent.store.base_rows"], env=child_env(),
            input=pickle.dumps(list(inputs), pickle.HIGHEST_PROTOCOL), capture_output=True,
            timeout=CHILD_TIMEOUT_S, check=True,
        )
        rows: list[Row] = pickle.loads(done.stdout)
        return rows
    except (OSError, subprocess.SubprocessError, pickle.UnpicklingError, EOFError) as error:
        stderr = getattr(error, "stderr", None) or b""
        log.warning("Closing the hour in a child process failed (%s%s); closing it in this "
                    "process instead.", error, f": {stderr.decode(errors='replace')[-500:]}"
                    if stderr else "")
        return base_measure_rows(inputs)


if __name__ == "__main__":
    answer = base_measure_rows(pickle.load(sys.stdin.buffer))
    sys.stdout.buffer.write(pickle.dumps(answer, pickle.HIGHEST_PROTOCOL))
