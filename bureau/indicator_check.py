"""The bureau's check that a report's signed indicators are what its base measures give,
without pandas on the common path.

`recompute_indicators` (agent.protocol.report) builds DataFrames and runs `indicators.kpi`:
about 10-27 ms a report, which capped verification at 36 reports/s. A daily report's rows
all fall in one local day, so its indicators depend only on per-device sums of the day.
`day_sums` computes those sums with numpy, exactly as `indicators.measures.daily_measures`
does (rows in (device, hour) order, one `np.add.reduceat` run per device), and
`recompute_fast` feeds them to the same indicator functions `indicators.kpi.compute` uses
(`efficiency`, `data_rates`, `inventory_rates.rates_from_counts`). Same functions on the same
numbers: the same values, reasons, inputs and flags.

Anything else (a month or year report, rows spanning two local days, rows out of order, no
rows) returns None from `day_sums`, and the caller uses `recompute_indicators`.

The per-device day sums are also what the bureau keeps in columns for the annual evaluation
(bureau.measures_table), so the receiver stores what this check computed.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from agent.protocol.report import inventory_from_rows
from indicators.catalog import INDICATORS, NO_INVENTORY, IndicatorValue, Params, undefined
from indicators.columns import COUNT_COLUMNS, INVENTORY_COLUMNS, MEASURE_COLUMNS
from indicators.data_rates import data_rates
from indicators.efficiency import efficiency
from indicators.inventory_rates import (
    RATE_IDS,
    InventoryFacts,
    inventory_facts,
    rates_from_counts,
)
from indicators.local_days import hour_calendar

_COUNTS = frozenset(COUNT_COLUMNS)


@dataclass(frozen=True)
class DaySums:
    """One local day's base measures summed per device, devices in sorted order: the rows
    `daily_measures` gives for a daily report."""

    day_start: int  # UTC epoch second of the local midnight
    device_ids: tuple[str, ...]
    columns: dict[str, npt.NDArray[Any]]  # MEASURE_COLUMNS -> one value per device

    def rows(self) -> list[tuple[Any, ...]]:
        """(device_id, day_start, *measures) per device, as Python numbers."""
        values = [self.columns[name].tolist() for name in MEASURE_COLUMNS]
        return [
            (device, self.day_start, *(column[i] for column in values))
            for i, device in enumerate(self.device_ids)
        ]


def day_sums(report: Mapping[str, Any]) -> DaySums | None:
    """Per-device sums of a daily report's rows, or None when the fast path does not apply."""
    period = report.get("period") or {}
    member = report.get("base_measures") or {}
    rows = member.get("rows")
    if period.get("kind") != "day" or member.get("granularity") != "hour" or not rows:
        return None
    columns = list(zip(*rows, strict=True))
    devices: Sequence[str] = columns[0]
    hours = np.array(columns[1], dtype=np.int64)
    # Rows must already be in (device_id, hour_start) order, as reports are built.
    same = np.array([a == b for a, b in zip(devices[1:], devices[:-1], strict=True)], dtype=bool)
    rising = np.array([a > b for a, b in zip(devices[1:], devices[:-1], strict=True)], dtype=bool)
    if len(rows) > 1 and not bool((rising | (same & (hours[1:] > hours[:-1]))).all()):
        return None
    first, midnight = _local_day(int(hours.min()), str(period["time_zone"]))
    if _local_day(int(hours.max()), str(period["time_zone"]))[0] != first:
        return None
    starts = np.flatnonzero(np.concatenate(([True], ~same))) if len(rows) > 1 else np.zeros(1, int)
    sums: dict[str, npt.NDArray[Any]] = {}
    for offset, name in enumerate(MEASURE_COLUMNS, start=2):
        dtype = np.int64 if name in _COUNTS else np.float64
        sums[name] = np.add.reduceat(np.array(columns[offset], dtype=dtype), starts, dtype=dtype)
    return DaySums(midnight, tuple(str(devices[int(i)]) for i in starts), sums)


def recompute_fast(report: Mapping[str, Any], sums: DaySums) -> dict[str, Any]:
    """`default_indicators` of the report (indicator id -> JSON form) from its day sums."""
    params = Params(**report["params"])
    totals: dict[str, float] = {}
    for name in MEASURE_COLUMNS:
        column = sums.columns[name]
        dtype = np.int64 if name in _COUNTS else np.float64
        totals[name] = float(column.sum(dtype=dtype))
    totals["pbt_s"] = totals["pot_s"] - totals["pdt_s"]
    values: dict[str, IndicatorValue] = {}
    for item in efficiency(totals, params):
        values[item.id] = item
    for item in _inventory_values(report["inventory"], sums, params):
        values[item.id] = item
    for item in data_rates(totals):
        values[item.id] = item
    ordered = {key: values[key] for key in INDICATORS if key in values}
    return {key: ordered[key].to_json() for key in sorted(ordered)}


def _inventory_values(
    rows: Sequence[Mapping[str, Any]], sums: DaySums, params: Params
) -> list[IndicatorValue]:
    facts = _facts(tuple(tuple(row[c] for c in INVENTORY_COLUMNS) for row in rows))
    if not facts.device_ids:
        return [undefined(key, NO_INVENTORY, {}) for key in RATE_IDS]
    # One local day: a device-day per known device, counted as `_device_days` counts it.
    index = {d: i for i, d in enumerate(facts.device_ids)}
    networked = np.zeros(len(facts.device_ids), dtype=np.int64)
    auto = np.zeros(len(facts.device_ids), dtype=np.int64)
    expected = sums.columns["samples_expected"].astype(np.float64)
    received = sums.columns["samples_received"].astype(np.float64)
    apt, auto_apt = sums.columns["apt_s"], sums.columns["auto_apt_s"]
    for row, device in enumerate(sums.device_ids):
        at = index.get(device)
        if at is None:
            continue
        is_networked = expected[row] > 0 and received[row] >= (
            params.networked_completeness * expected[row]
        )
        is_auto = auto_apt[row] > 0 and auto_apt[row] >= params.min_auto_share * apt[row]
        networked[at] = int(is_networked)
        auto[at] = int(is_networked and is_auto)
    key_sums: tuple[float, float] | None = None
    if facts.key_ids:
        rows_mask = np.array([d in facts.key_ids for d in sums.device_ids], dtype=bool)
        key_sums = (
            float(auto_apt[rows_mask].sum(dtype=np.float64)),
            float(apt[rows_mask].sum(dtype=np.float64)),
        )
    return rates_from_counts(facts, 1, networked, auto, key_sums, params)


_CALENDAR_HOURS = 366 * 24


def _local_day(hour_start: int, time_zone: str) -> tuple[int, int]:
    """The local day of a UTC hour start and its local midnight's epoch second, from a cached
    calendar of the surrounding ~year (the same conversion `daily_measures` makes)."""
    hour = hour_start // 3600
    first = hour - hour % _CALENDAR_HOURS
    days, midnights = hour_calendar(time_zone, first, _CALENDAR_HOURS)
    return int(days[hour - first]), int(midnights[hour - first])


@functools.lru_cache(maxsize=4096)
def _facts(rows: tuple[tuple[Any, ...], ...]) -> InventoryFacts:
    """Inventory facts, kept: a factory sends the same inventory day after day."""
    frame: pd.DataFrame = inventory_from_rows(
        [dict(zip(INVENTORY_COLUMNS, row, strict=True)) for row in rows]
    )
    return inventory_facts(frame)
