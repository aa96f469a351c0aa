"""Slot counting: the vectorised `agent.derive.slots` against the scalar rules in its docstring."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.derive.slots import (
    EPS,
    HOUR_S,
    NO_SLOT,
    SignalGrid,
    SlotCarry,
    SlotRanges,
    count_held,
    count_samples,
)


@dataclass
class ScalarSignal:
    """One signal's memory, walked sample by sample (the oracle)."""

    interval: float
    subscription: bool
    last_slot: int | None = None
    known: bool = False
    known_source: bool = False
    known_on_time: bool = False
    counted: Counter[tuple[int, int, int, int]] = field(default_factory=Counter)

    def add(self, slot: int, on_time: bool, with_source: bool, bad: bool) -> None:
        hour = math.floor(slot * self.interval / HOUR_S + EPS) * HOUR_S
        self.counted[(hour, int(on_time), int(with_source), int(bad))] += 1

    def hold(self, first_slot: int, until: float) -> None:
        if not (self.subscription and self.known):
            return
        previous = NO_SLOT if self.last_slot is None else self.last_slot
        last = math.ceil(until / self.interval - EPS) - 1
        for slot in range(max(previous + 1, first_slot), last + 1):
            self.add(slot, self.known_on_time, self.known_source, False)
        self.last_slot = max(previous, last)

    def sample(self, first_slot: int, ts: float, on_time: bool, source: bool, bad: bool) -> None:
        self.hold(first_slot, ts)
        slot = math.floor(ts / self.interval + EPS)
        if slot >= first_slot and (self.last_slot is None or slot > self.last_slot):
            self.add(slot, on_time, source, bad)
            self.last_slot = slot
        self.known, self.known_source = (not bad) and self.subscription, source
        self.known_on_time = on_time


def _tally(ranges: SlotRanges) -> Counter[tuple[int, int, int, int]]:
    """Per (hour, on_time, with_source, bad) slot counts of vectorised ranges."""
    tally: Counter[tuple[int, int, int, int]] = Counter()
    for i in range(len(ranges.first)):
        interval = float(ranges.interval_s[i])
        for slot in range(int(ranges.first[i]), int(ranges.first[i] + ranges.count[i])):
            hour = math.floor(slot * interval / HOUR_S + EPS) * HOUR_S
            key = (hour, int(ranges.on_time[i]), int(ranges.with_source[i]), int(ranges.bad[i]))
            tally[key] += 1
    return tally


START = 1_700_000_000.0
signal_specs = st.lists(
    st.tuples(st.sampled_from([1.0, 2.5, 10.0, 600.0]), st.booleans()), min_size=1, max_size=4
)
batch = st.lists(
    st.tuples(
        st.integers(0, 3),  # signal
        st.floats(0, 900, allow_nan=False),  # time step
        st.booleans(), st.booleans(), st.booleans(),  # on_time, with_source, bad
        st.booleans(),  # round the time to a whole second (slot boundaries)
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(signal_specs, st.lists(st.tuples(batch, st.booleans()), min_size=1, max_size=5),
       st.floats(-30, 30, allow_nan=False))
def test_vectorised_counts_equal_the_scalar_walk(
    specs: list[tuple[float, bool]], batches: list[tuple[list[Any], bool]], start_offset: float,
) -> None:
    """If batches of samples of several signals (some subscribed, some polled, with gaps,
    bad samples and samples before the measured start) go through `count_samples` and
    `count_held`, then every hour's received / on-time / with-source / bad counts and the
    carried memory equal a sample-by-sample walk of the documented rules."""
    grid = SignalGrid(
        interval_s=np.array([interval for interval, _ in specs]),
        counted=np.ones(len(specs), bool),
        subscription=np.array([sub for _, sub in specs]),
    )
    scalar = [ScalarSignal(interval, sub) for interval, sub in specs]
    carry = SlotCarry.empty(tuple(f"s{i}" for i in range(len(specs))))
    start = START + start_offset
    vector: Counter[tuple[int, int, int, int]] = Counter()
    ts = START
    for samples, then_hold in batches:
        rows = []
        for signal, step, on_time, source, bad, whole in samples:
            ts += step
            ts = float(round(ts)) if whole else ts
            rows.append((signal % len(specs), ts, on_time, source, bad))
        for signal, t, on_time, source, bad in rows:
            first = math.ceil(start / specs[signal][0] - EPS)
            scalar[signal].sample(first, t, on_time, source, bad)
        if rows:
            signal_ix, times, on_times, sources, bads = map(np.array, zip(*rows, strict=True))
            vector += _tally(count_samples(
                grid, carry, start, signal_ix.astype(np.int64), times.astype(np.float64),
                on_times.astype(bool), sources.astype(bool), bads.astype(bool),
            ))
        if then_hold:
            ts += 123.4
            for i, signal in enumerate(scalar):
                signal.hold(math.ceil(start / specs[i][0] - EPS), ts)
            vector += _tally(count_held(grid, carry, start, ts))
    expected: Counter[tuple[int, int, int, int]] = Counter()
    for signal in scalar:
        expected += signal.counted
    assert vector == expected
    for i, signal in enumerate(scalar):
        assert carry.last_slot[i] == (NO_SLOT if signal.last_slot is None else signal.last_slot)
        assert bool(carry.known[i]) == signal.known


def test_ranges_by_hour_split_a_run_across_hours() -> None:
    """If one held run crosses an hour boundary, then `by_hour` splits its slots between the
    two hours and keeps the flags."""
    # One-minute slots: slot s lies in hour s // 60; s % 60 == 50 is 10 minutes before the next.
    start_slot = int(START // 3600) * 60 + 50
    ranges = SlotRanges(
        np.array([start_slot]), np.array([20]), np.array([60.0]), np.array([1]), np.array([1]),
        np.array([0]),
    )
    hours, sums = ranges.by_hour()
    assert hours.tolist() == [(start_slot // 60) * HOUR_S, (start_slot // 60 + 1) * HOUR_S]
    assert sums[0].tolist() == [10, 10] and sums[1].tolist() == [10, 10]
    assert sums[3].tolist() == [0, 0]


def test_carry_realigns_when_signals_change() -> None:
    """If the configuration adds and removes signals between runs, then a restored slot
    memory keeps the surviving signals' values and starts new ones empty."""
    carry = SlotCarry(("a", "b", "c"), np.array([5, 6, 7]), np.array([True, False, True]),
                      np.array([True, True, False]), np.array([False, True, True]))
    again = SlotCarry.from_json(carry.to_json()).aligned(("c", "new", "a"))
    assert again.last_slot.tolist() == [7, NO_SLOT, 5]
    assert again.known.tolist() == [True, False, True]
    assert again.known_source.tolist() == [False, False, True]
    assert again.known_on_time.tolist() == [True, False, False]
