"""Samples as columns: what derivation and backfill work on.

Quality and timestamp origin are small integer codes (history files use the same). The
event time of a sample is its source timestamp, unless there is none or it shows a wrong
source clock (docs/reliability.md C3): then it is the receive time.

A protocol timestamp shows a wrong clock when it is more than `MAX_SOURCE_SKEW_S` away from
the receive time, except that a *held* value (`Sample.held`: read as the signal's current
value, not notified as a change) may be any age: its source timestamp is when the value last
changed, and a value that has not changed for hours legitimately carries an hours-old
timestamp. So:

* ahead of the receive time by more than the bound: always a wrong clock (the future cannot
  have been observed);
* behind by more than the bound: a wrong clock for a change (a subscription notification, or a
  poll that finds a new timestamp), since a value that has just changed cannot be that old;
  not for a held value, whose age is not a clock error.

A clock 2 h behind is therefore not seen on the first read of an unchanged value (nothing can
tell it from a value unchanged for 2 h), but on the first change it reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from indicators.vocabulary import QUALITY_CODES

MAX_SOURCE_SKEW_S = 600.0
O_SOURCE, O_SERVER, O_RECEIVED = 0, 1, 2

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class SampleColumns:
    """One device's samples as parallel arrays (quality as `indicators.vocabulary`'s codes,
    origin as the codes above)."""

    signal_id: npt.NDArray[Any]
    source_ts: FloatArray
    received_ts: FloatArray
    value: npt.NDArray[Any]
    quality: npt.NDArray[np.uint8]
    status: IntArray
    origin: npt.NDArray[np.uint8]
    held: npt.NDArray[np.bool_] | None = None  # `Sample.held`; None: no sample is held

    def __len__(self) -> int:
        return len(self.source_ts)

    def take(self, index: npt.NDArray[Any]) -> SampleColumns:
        return SampleColumns(
            self.signal_id[index], self.source_ts[index], self.received_ts[index],
            self.value[index], self.quality[index], self.status[index], self.origin[index],
            None if self.held is None else self.held[index],
        )

    def held_mask(self) -> npt.NDArray[np.bool_]:
        return np.zeros(len(self), bool) if self.held is None else self.held


def source_skew(cols: SampleColumns) -> FloatArray:
    """source_ts - received_ts where the protocol timestamp shows a wrong source clock (see
    the module docstring: more than MAX_SOURCE_SKEW_S ahead, or behind for a sample that is
    not a held value), else 0."""
    skew = np.where(cols.origin != O_RECEIVED, cols.source_ts - cols.received_ts, 0.0)
    wrong = (skew > MAX_SOURCE_SKEW_S) | ((skew < -MAX_SOURCE_SKEW_S) & ~cols.held_mask())
    return np.where(wrong, skew, 0.0)


def event_times(cols: SampleColumns) -> FloatArray:
    """Source timestamps, or the receive time where there is none or it is skewed."""
    trusted = (cols.origin != O_RECEIVED) & (source_skew(cols) == 0)
    return np.where(trusted, cols.source_ts, cols.received_ts)


def as_float(values: npt.NDArray[Any]) -> FloatArray:
    """Numeric view of sample values: Python's float() of each (bools as 0/1, numeric
    strings read), NaN where there is none (None, other strings, anything else)."""
    if values.dtype != object:
        return values.astype(np.float64)
    try:  # the common case, all numbers (or None): numpy's loop, not Python's
        return values.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        return np.fromiter((_float_or_nan(v) for v in values.tolist()), np.float64,
                           count=len(values))


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def columns_from_samples(samples: Sequence[Any]) -> SampleColumns:
    """Build columns from `connectors.sample.Sample` objects (values kept as objects)."""
    n = len(samples)
    origin_code = {"source": O_SOURCE, "server": O_SERVER, "received": O_RECEIVED}
    values = np.empty(n, dtype=object)
    values[:] = [s.value for s in samples]
    return SampleColumns(
        signal_id=np.array([s.signal_id for s in samples], dtype=object),
        source_ts=np.array([s.source_ts for s in samples], dtype=np.float64),
        received_ts=np.array([s.received_ts for s in samples], dtype=np.float64),
        value=values,
        # Quality and origin are StrEnums: a str lookup is much faster than `.value`.
        quality=np.array([QUALITY_CODES[s.quality] for s in samples], dtype=np.uint8),
        status=np.array([s.status for s in samples], dtype=np.int64),
        origin=np.array([origin_code[s.ts_origin] for s in samples], dtype=np.uint8),
        held=np.array([s.held for s in samples], dtype=bool),
    )
