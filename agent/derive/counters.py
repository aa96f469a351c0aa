"""Counter and energy-meter deltas, and the ideal time of the pieces they count.

The rules are those of `agent.derive.engine` (its docstring): a counter gives deltas over
(previous, now]; a drop is a wrap when the previous value was in the top quarter of the
counter range and the new one is in the bottom quarter, any other drop a reset whose delta
is the new value; the first value ever seen is a baseline. `Deriver` feeds one signal's
samples here and keeps the deltas.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from agent.derive.carry import CounterCarry, DeviceCarry
from agent.derive.device_plans import SignalPlan
from agent.derive.sample_columns import SampleColumns, as_float
from agent.derive.slots import EPS, HOUR_S
from indicators.vocabulary import Q_BAD

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
# An ideal cycle time through one feed: (sample event times, values, the value before them).
IdealTimes = tuple[FloatArray, FloatArray, float | None]


def hour_of_end(ts: FloatArray) -> IntArray:
    """A delta observed at `end` belongs to the hour h with h < end <= h + 1h."""
    return ((np.ceil(ts / HOUR_S - EPS) - 1) * HOUR_S).astype(np.int64)


class CounterDeltas(NamedTuple):
    starts: FloatArray
    ends: FloatArray
    amounts: FloatArray  # positive deltas only
    # Per good finite sample, in order: True where the counter went back without a wrap
    # (a reset, counted as the new value); with `judged_ts`, for signal health.
    resets: BoolArray
    judged_ts: FloatArray


def counter_deltas(
    signal: SignalPlan, device: DeviceCarry, cols: SampleColumns, et: FloatArray
) -> CounterDeltas | None:
    """The positive deltas of one counter signal's samples, and where it was reset, or None
    when there is no good finite value. Updates the signal's last value in `device`."""
    good = cols.quality != Q_BAD
    values = as_float(cols.value[good])
    ts = et[good]
    finite = np.isfinite(values)
    values, ts = values[finite], ts[finite]
    if len(values) == 0:
        return None
    carry = device.counters.get(signal.signal_id)
    if carry is None:
        prev_v, prev_t = values[:-1], ts[:-1]
        cur_v, cur_t = values[1:], ts[1:]
    else:
        prev_v = np.concatenate([[carry.last_value], values[:-1]])
        prev_t = np.concatenate([[carry.last_ts], ts[:-1]])
        cur_v, cur_t = values, ts
    delta = cur_v - prev_v
    drop = delta < 0
    resets = np.zeros(len(delta), bool)
    if drop.any():
        m = signal.modulus
        wrap = drop & (prev_v >= 0.75 * m) & (cur_v < 0.25 * m)
        resets = drop & ~wrap
        delta = np.where(wrap, cur_v + m - prev_v, np.where(drop, cur_v, delta))
    keep = delta > 0
    device.counters[signal.signal_id] = CounterCarry(float(values[-1]), float(ts[-1]))
    return CounterDeltas(prev_t[keep], cur_t[keep], delta[keep], resets, cur_t)


def ideal_time_deltas(
    ideal: IdealTimes, ends: FloatArray, amounts: FloatArray
) -> tuple[BoolArray, FloatArray]:
    """Σ PRI x PQ, each piece with the ideal cycle time in effect when it completed: the
    deltas whose ideal cycle time is known (mask over `ends`), and their ideal times."""
    times, values, before = ideal
    at = np.searchsorted(times, ends, side="right") - 1
    prior = np.nan if before is None else before
    pri = np.where(at >= 0, values[np.maximum(at, 0)] if len(values) else prior, prior)
    known = np.isfinite(pri)
    return known, amounts[known] * pri[known]
