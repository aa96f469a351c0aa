"""Sums of base measures: over groups, per device and local day, and over everything.

Base measures are additive by contract (`indicators.columns`), so these sums lose nothing the
indicators need. Rows are summed in (device_id, hour_start) order, so float sums are the same
bit for bit whatever order the rows arrived in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from indicators.columns import COUNT_COLUMNS, KEY_COLUMNS, MEASURE_COLUMNS
from indicators.local_days import local_day_index, local_midnight_epoch


def sum_measures(base: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sum every base-measure column over groups `by` (sorted by `by`); additive by contract."""
    missing = [c for c in (*by, *MEASURE_COLUMNS) if c not in base.columns]
    if missing:
        raise ValueError(f"base: missing column(s) {', '.join(missing)}")
    ordered, _, _ = sorted_rows(base)
    summed = ordered.groupby(by, sort=True, observed=True)[list(MEASURE_COLUMNS)].sum()
    for name in COUNT_COLUMNS:
        summed[name] = summed[name].astype(np.int64)
    return summed.reset_index()


def _check_base(base: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in (*KEY_COLUMNS, *MEASURE_COLUMNS) if c not in base.columns]
    if missing:
        raise ValueError(f"base: missing column(s) {', '.join(missing)}")
    return base


def sorted_rows(
    base: pd.DataFrame,
) -> tuple[pd.DataFrame, npt.NDArray[np.int32], npt.NDArray[np.object_]]:
    """`base` in (device_id, hour_start) order, with its rows' device codes and the sorted ids,
    so float sums are the same bit for bit whatever order the rows arrived in. Already-sorted
    input (the store's and base_measures' order) is not copied."""
    codes, names = device_codes(base["device_id"])
    if len(base) < 2:
        return base, codes, names
    hour = base["hour_start"].to_numpy()
    in_order = (codes[1:] > codes[:-1]) | ((codes[1:] == codes[:-1]) & (hour[1:] >= hour[:-1]))
    if bool(in_order.all()):
        return base, codes, names
    order = np.lexsort((hour, codes))
    return base.iloc[order], codes[order], names


def device_codes(
    device: pd.Series,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.object_]]:
    """Integer codes of device ids in sorted-id order, and the sorted ids (as str).

    Categorical columns (used for large frames) are coded without touching every row's string.
    """
    if isinstance(device.dtype, pd.CategoricalDtype):
        names = np.asarray(device.cat.categories.astype(str), dtype=object)
        order = np.argsort(names, kind="stable")
        rank = np.empty(len(order), dtype=np.int32)
        rank[order] = np.arange(len(order), dtype=np.int32)
        raw = device.cat.codes.to_numpy()
        if (raw < 0).any():
            raise ValueError("base.device_id: missing device id")
        return rank[raw], names[order]
    codes, uniques = pd.factorize(device.astype(str), sort=True)
    if (codes < 0).any():
        raise ValueError("base.device_id: missing device id")
    return codes.astype(np.int32), np.asarray(uniques, dtype=object)


def totals(base: pd.DataFrame) -> dict[str, float]:
    """Every measure column summed over all rows, plus pbt_s = pot_s - pdt_s."""
    sums: dict[str, float] = {}
    for name in MEASURE_COLUMNS:
        column = base[name].to_numpy()
        if name in COUNT_COLUMNS:
            sums[name] = float(column.sum(dtype=np.int64))
        else:
            sums[name] = float(column.sum(dtype=np.float64))
    sums["pbt_s"] = sums["pot_s"] - sums["pdt_s"]
    return sums


def daily_measures(base: pd.DataFrame, time_zone: str) -> pd.DataFrame:
    """Sum hourly rows into one row per device and local day; `hour_start` becomes the UTC epoch
    of the local midnight. Additive, so `compute` gives the same indicators on either form.

    Rows are sorted by (device_id, hour_start) first, so each device-day is one contiguous run
    summed in row order: deterministic, and without a float64 copy of the input.
    """
    base, codes, names = sorted_rows(_check_base(base))
    if base.empty:
        return _empty_measures()
    days, day_index = local_day_index(base["hour_start"].to_numpy(np.int64), time_zone)
    new_group = (codes[1:] != codes[:-1]) | (day_index[1:] != day_index[:-1])
    starts = np.flatnonzero(np.concatenate(([True], new_group)))
    del new_group
    frame: dict[str, Any] = {
        "device_id": names[codes[starts]],
        "hour_start": local_midnight_epoch(days, time_zone)[day_index[starts]],
    }
    for name in MEASURE_COLUMNS:
        column = base[name].to_numpy()
        total_dtype = np.int64 if name in COUNT_COLUMNS else np.float64
        frame[name] = np.add.reduceat(column, starts, dtype=total_dtype)
    return pd.DataFrame(frame)


def _empty_measures() -> pd.DataFrame:
    frame: dict[str, pd.Series] = {
        "device_id": pd.Series([], dtype=object),
        "hour_start": pd.Series([], dtype=np.int64),
    }
    for name in MEASURE_COLUMNS:
        dtype = np.int64 if name in COUNT_COLUMNS else np.float64
        frame[name] = pd.Series([], dtype=dtype)
    return pd.DataFrame(frame)
