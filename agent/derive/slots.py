"""Sample-slot counting for one device, vectorised across all of its signals.

Each required signal has a grid of slots k x interval (epoch based). A slot counts as
received when a sample of the signal lands in it; the first sample of a slot decides its
flags (on time, with a protocol timestamp, bad). A subscription signal (OPC UA subscribe
mode) is notified on change only, so while its connection is up and its last sample was not
bad, the slots it holds its value through count as received too, with the flags of that last
sample (never bad): on time and with a protocol timestamp as that sample was. A value is
held from the sample that brought it, even when that sample's own slot is not counted (it
starts before the measured time, e.g. the initial read of a value older than the agent's
start, clamped to the start): a signal that never changes is received in every slot from
the first one of the measured time on.

The rules, per signal, walking its samples in time order, are those of this scalar loop
(tests/agent/test_agent_slots.py checks the vectorised form against it):

    for sample in samples:
        if subscription and known:                                  # held value
            count slots max(last_slot + 1, first_slot) .. ceil(ts / interval) - 1
                with on_time = known_on_time, with_source = known_source, not bad
            last_slot = max(last_slot, ceil(ts / interval) - 1)     # (None counts as -1)
        slot = floor(ts / interval)
        if slot >= first_slot and (last_slot is None or slot > last_slot):
            count slot with the sample's flags; last_slot = slot
        known = subscription and not bad
        known_source, known_on_time = has protocol timestamp, on time

`count_held` (no new sample up to `until`) is the held-value step alone, with `until` as ts.

Whole batches are done at once: `last_slot` after each sample is a running maximum of
per-sample candidates, so it is one grouped `maximum.accumulate`, not a Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from indicators.columns import HOUR_S

EPS = 1e-9  # float slack when a timestamp sits exactly on a slot or hour boundary
NO_SLOT = -1  # "no slot yet"; real slots are >= 0 (event times after 1970)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(slots=True)
class SlotCarry:
    """Per-signal slot memory of one device; arrays aligned with the device's signal ids."""

    signal_ids: tuple[str, ...]
    last_slot: IntArray
    known: BoolArray  # subscription value held (link up, last sample not bad)
    known_source: BoolArray  # the held value's sample had a protocol timestamp
    known_on_time: BoolArray  # the held value's sample was on time

    @classmethod
    def empty(cls, signal_ids: tuple[str, ...]) -> SlotCarry:
        n = len(signal_ids)
        return cls(
            signal_ids, np.full(n, NO_SLOT, np.int64), np.zeros(n, bool), np.zeros(n, bool),
            np.zeros(n, bool),
        )

    def copy(self) -> SlotCarry:
        return SlotCarry(
            self.signal_ids, self.last_slot.copy(), self.known.copy(), self.known_source.copy(),
            self.known_on_time.copy(),
        )

    def aligned(self, signal_ids: tuple[str, ...]) -> SlotCarry:
        """The same memory for another signal order (config changed between runs): signals
        that are new start empty, signals that are gone are dropped."""
        if signal_ids == self.signal_ids:
            return self
        out = SlotCarry.empty(signal_ids)
        position = {signal_id: i for i, signal_id in enumerate(self.signal_ids)}
        for i, signal_id in enumerate(signal_ids):
            j = position.get(signal_id)
            if j is not None:
                out.last_slot[i] = self.last_slot[j]
                out.known[i], out.known_source[i] = self.known[j], self.known_source[j]
                out.known_on_time[i] = self.known_on_time[j]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "ids": list(self.signal_ids), "last_slot": self.last_slot.tolist(),
            "known": self.known.tolist(), "known_source": self.known_source.tolist(),
            "known_on_time": self.known_on_time.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SlotCarry:
        known_source = np.array(data["known_source"], bool).reshape(-1)
        return cls(
            tuple(data["ids"]), np.array(data["last_slot"], np.int64).reshape(-1),
            np.array(data["known"], bool).reshape(-1), known_source,
            # Memory written before on-time was carried: held slots were on time with a source.
            np.array(data.get("known_on_time", known_source), bool).reshape(-1),
        )


@dataclass(frozen=True, slots=True)
class SignalGrid:
    """Static per-signal slot settings of one device, aligned with its signal ids."""

    interval_s: FloatArray
    counted: BoolArray  # required signals: the only ones whose slots are counted
    subscription: BoolArray

    def first_slots(self, start: float) -> IntArray:
        """The first slot of each signal that starts inside the measured time."""
        return np.ceil(start / self.interval_s - EPS).astype(np.int64)


@dataclass(frozen=True, slots=True)
class SlotRanges:
    """Runs of counted slots: `count` slots from `first` on, all with the same flags."""

    first: IntArray
    count: IntArray
    interval_s: FloatArray
    on_time: IntArray
    with_source: IntArray
    bad: IntArray

    @staticmethod
    def concat(parts: list[SlotRanges]) -> SlotRanges:
        if not parts:
            none = np.empty(0, np.int64)
            return SlotRanges(none, none, np.empty(0, np.float64), none, none, none)
        return SlotRanges(*(np.concatenate([getattr(p, f) for p in parts]) for f in _RANGE_FIELDS))

    def by_hour(self) -> tuple[IntArray, IntArray]:
        """(hour starts, per-hour sums of [received, on_time, with_source, bad] as 4 x H)."""
        count = self.count
        total = int(count.sum())
        if total == 0:
            return np.empty(0, np.int64), np.empty((4, 0), np.int64)
        run = np.repeat(np.arange(len(count)), count)
        offset = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
        slot = self.first[run] + offset
        hours = hour_of_start(slot * self.interval_s[run])
        flags = np.stack([
            np.ones(total, np.int64), self.on_time[run], self.with_source[run], self.bad[run]
        ])
        if bool((hours == hours[0]).all()):  # live ingest: one hour per batch
            return hours[:1], flags.sum(axis=1, keepdims=True)
        uniq, inverse = np.unique(hours, return_inverse=True)
        sums = np.zeros((4, len(uniq)), np.int64)
        for row in range(4):
            sums[row] = np.bincount(inverse, weights=flags[row], minlength=len(uniq))
        return uniq, sums


_RANGE_FIELDS = ("first", "count", "interval_s", "on_time", "with_source", "bad")


def hour_of_start(ts: FloatArray) -> IntArray:
    return (np.floor(ts / HOUR_S + EPS) * HOUR_S).astype(np.int64)


def _group_cummax(values: IntArray, group: IntArray) -> IntArray:
    """Running maximum of `values` that restarts with each group (groups are consecutive,
    numbered 0, 1, ... in order): shifting each group above the previous one lets one
    global running maximum do it."""
    low = int(values.min())
    span = int(values.max()) - low + 1
    shifted = (values - low) + group * span
    return np.asarray(np.maximum.accumulate(shifted) - group * span + low, np.int64)


def _previous_in_group(values: npt.NDArray[Any], group_start: BoolArray, first: Any) -> Any:
    """Each element's predecessor within its group; `first` where there is none."""
    shifted = np.empty_like(values)
    shifted[1:] = values[:-1]
    return np.where(group_start, first, shifted)


def count_samples(
    grid: SignalGrid, carry: SlotCarry, start: float, signal: IntArray, ts: FloatArray,
    on_time: BoolArray, with_source: BoolArray, bad: BoolArray,
) -> SlotRanges:
    """Counted slot runs for samples of counted signals (`signal` = index into the grid, in
    event-time order, `ts` = event times); updates `carry`."""
    if len(signal) == 0:
        return SlotRanges.concat([])
    order = np.argsort(signal, kind="stable")  # group by signal, time order kept
    signal, ts = signal[order], ts[order]
    on_time, with_source, bad = on_time[order], with_source[order], bad[order]
    group_start = np.ones(len(signal), bool)
    group_start[1:] = signal[1:] != signal[:-1]
    group = np.cumsum(group_start) - 1
    group_last = np.ones(len(signal), bool)
    group_last[:-1] = group_start[1:]

    interval = grid.interval_s[signal]
    first_slot = grid.first_slots(start)[signal]
    slot = np.floor(ts / interval + EPS).astype(np.int64)
    held_end = np.ceil(ts / interval - EPS).astype(np.int64) - 1  # last slot starting before ts
    initial = carry.last_slot[signal]
    known_before = _previous_in_group(~bad, group_start, carry.known[signal])
    source_before = _previous_in_group(with_source, group_start, carry.known_source[signal])
    on_time_before = _previous_in_group(on_time, group_start, carry.known_on_time[signal])

    own = slot >= first_slot
    held = grid.subscription[signal] & known_before
    candidate = np.maximum(np.where(held, held_end, NO_SLOT), np.where(own, slot, NO_SLOT))
    running = _group_cummax(candidate, group)
    last_before = np.maximum(initial, _previous_in_group(running, group_start, NO_SLOT))

    held_first = np.maximum(last_before + 1, first_slot)
    held_count = np.where(held, np.maximum(held_end - held_first + 1, 0), 0)
    after_held = np.where(held, np.maximum(last_before, held_end), last_before)
    own_counted = own & (slot > after_held)

    ends = signal[group_last]
    carry.last_slot[ends] = np.maximum(initial[group_last], running[group_last])
    carry.known[ends] = ~bad[group_last] & grid.subscription[ends]
    carry.known_source[ends] = with_source[group_last]
    carry.known_on_time[ends] = on_time[group_last]

    fills = held_count > 0
    source_held = source_before[fills].astype(np.int64)
    on_time_held = on_time_before[fills].astype(np.int64)
    return SlotRanges.concat([
        SlotRanges(
            slot[own_counted], np.ones(int(own_counted.sum()), np.int64), interval[own_counted],
            on_time[own_counted].astype(np.int64), with_source[own_counted].astype(np.int64),
            bad[own_counted].astype(np.int64),
        ),
        SlotRanges(
            held_first[fills], held_count[fills], interval[fills], on_time_held, source_held,
            np.zeros(len(source_held), np.int64),
        ),
    ])


def count_held(grid: SignalGrid, carry: SlotCarry, start: float, until: float) -> SlotRanges:
    """Slots starting before `until` through which subscription values were held (no new
    sample); updates `carry`."""
    active = np.flatnonzero(grid.counted & grid.subscription & carry.known)
    interval = grid.interval_s[active]
    last = np.ceil(until / interval - EPS).astype(np.int64) - 1
    first = np.maximum(carry.last_slot[active] + 1, grid.first_slots(start)[active])
    count = last - first + 1
    carry.last_slot[active] = np.maximum(carry.last_slot[active], last)
    keep = count > 0
    active, interval, first, count = active[keep], interval[keep], first[keep], count[keep]
    source = carry.known_source[active].astype(np.int64)
    on_time = carry.known_on_time[active].astype(np.int64)
    return SlotRanges(first, count, interval, on_time, source, np.zeros(len(active), np.int64))


def expected_slots(grid: SignalGrid, starts: FloatArray, ends: FloatArray) -> IntArray:
    """Slots of counted signals starting inside each [start, end) (summed over signals)."""
    total = np.zeros(len(starts), np.int64)
    intervals, multiplicity = np.unique(grid.interval_s[grid.counted], return_counts=True)
    for interval, signals in zip(intervals.tolist(), multiplicity.tolist(), strict=True):
        slots = np.ceil(ends / interval - EPS) - np.ceil(starts / interval - EPS)
        total += signals * slots.astype(np.int64)
    return total
