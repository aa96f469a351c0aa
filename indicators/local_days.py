"""The local-day calendar: which day in the factory's time zone each UTC hour belongs to.

Inventory-based rates count device-days and daily rows sum device-days, both over local days.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt
import pandas as pd


def local_day(hour_start: npt.NDArray[np.int64], time_zone: str) -> npt.NDArray[np.int64]:
    """Local calendar day (days since 1970-01-01 in `time_zone`) of each UTC hour start."""
    days, index = local_day_index(hour_start, time_zone)
    return days[index]


def local_day_index(
    hour_start: npt.NDArray[np.int64], time_zone: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    """The sorted distinct local days of `hour_start` and each row's index into them.

    Converts each distinct hour once through a dense table, so a year of rows costs one pass
    and no sort. Only days that hold a row are returned: a day in the span without any row
    (no report that day) is not a day of the period's inventory rates, whichever path ran.
    """
    if len(hour_start) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
    hours = hour_start // 3600
    low, high = int(hours.min()), int(hours.max())
    if high - low > 4 * len(hours) + 1_000_000:
        span = np.unique(hours)
        slot = np.searchsorted(span, hours)
        days, span_index = _span_days(span, time_zone)
        return days.copy(), span_index[slot]
    hours -= low
    span_days, span_index = _dense_span_days(low, high, time_zone)
    row_day = span_index[hours]
    present = np.zeros(len(span_days), dtype=bool)
    present[row_day] = True
    renumber = (np.cumsum(present) - 1).astype(np.int32)
    return span_days[present], renumber[row_day]


@functools.lru_cache(maxsize=64)
def _dense_span_days(
    low: int, high: int, time_zone: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    """`_span_days` of every hour from `low` to `high`, kept: one report asks for the same
    span several times (pandas' time-zone conversion costs about a millisecond a call).
    Callers get copies or fancy-indexed results, never these arrays themselves."""
    return _span_days(np.arange(low, high + 1, dtype=np.int64), time_zone)


def _span_days(
    span: npt.NDArray[np.int64], time_zone: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    """The sorted distinct local days of the UTC hours `span` and each hour's index into them."""
    stamps = pd.to_datetime(span * 3600, unit="s", utc=True).tz_convert(time_zone)
    local = stamps.tz_localize(None).normalize()
    span_days = local.to_numpy().astype("datetime64[D]").astype(np.int64)
    days, span_index = np.unique(span_days, return_inverse=True)
    return days.astype(np.int64), span_index.astype(np.int32)


def local_midnight_epoch(days: npt.NDArray[np.int64], time_zone: str) -> npt.NDArray[np.int64]:
    """The UTC epoch second of each local midnight (`days` since 1970-01-01 in `time_zone`)."""
    if 0 < len(days) <= 4:  # a report's day or two, asked for several times: kept
        return np.array(_few_midnights(tuple(int(day) for day in days), time_zone), np.int64)
    if len(days) <= 400:  # a month or a year of days: the bureau asks for the same ones per
        # factory (the annual evaluation's year and months), so they are kept too
        kept = _kept_midnights(np.asarray(days, dtype=np.int64).tobytes(), time_zone)
        return np.frombuffer(kept, dtype=np.int64).copy()
    return _midnights(days, time_zone)


@functools.lru_cache(maxsize=256)
def _kept_midnights(days: bytes, time_zone: str) -> bytes:
    return _midnights(np.frombuffer(days, dtype=np.int64), time_zone).astype(np.int64).tobytes()


@functools.lru_cache(maxsize=256)
def _few_midnights(days: tuple[int, ...], time_zone: str) -> tuple[int, ...]:
    return tuple(_midnights(np.array(days, dtype=np.int64), time_zone).tolist())


def _midnights(days: npt.NDArray[np.int64], time_zone: str) -> npt.NDArray[np.int64]:
    midnight = pd.to_datetime(days, unit="D").tz_localize(
        time_zone, ambiguous=False, nonexistent="shift_forward"
    )
    return np.asarray(
        midnight.tz_convert("UTC")
        .tz_localize(None)
        .to_numpy()
        .astype("datetime64[s]")
        .astype(np.int64)
    )


@functools.lru_cache(maxsize=32)
def hour_calendar(
    time_zone: str, first_hour: int, hours: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """For each UTC hour from `first_hour` (hours since the epoch) on, its local day (as
    `local_day` gives it) and that day's local midnight (as `local_midnight_epoch` gives it),
    kept: the bureau looks up one day per report, and pandas' conversion costs about a
    millisecond a call."""
    days, index = _span_days(np.arange(first_hour, first_hour + hours, dtype=np.int64), time_zone)
    return days[index], _midnights(days, time_zone)[index]
