"""Stateful derivation: raw samples -> state intervals, counter/energy deltas, slot counts.

One code path serves live ingest (small batches every ~200 ms) and history backfill
(months of samples per call): `Deriver.feed` takes one device's samples as columns and
works on numpy arrays. Everything the derivation remembers between calls lives in a
`DeviceCarry`, which the store persists in the same transaction as the samples, so a
restart continues exactly where the last commit stopped.

Rules (documented here because reports depend on them):

* Event time of a sample = its source timestamp when it has one that does not show a
  wrong source clock, else the receive time (`agent.derive.sample_columns`: more than
  `MAX_SOURCE_SKEW_S` ahead of the receive time, or behind it for a change; a held value,
  read as the current one, may be any age). Event times never go backwards per device: an
  earlier one is clamped to the device's cursor, so intervals are never negative.
* State intervals are [start, end), split at every UTC hour boundary, labelled with a
  canonical state or `unknown`. The state is `unknown` until a state sample arrives,
  after a link loss, after a bad-quality state sample and across agent downtime;
  `offline` when the device itself is reported unreachable (a bad state sample whose
  status is in `UNREACHABLE_STATUS`) or the state code maps to offline. Never running.
* Counters (good/reject/total) and the energy meter give deltas over (previous, now].
  A drop is a wrap when the previous value was in the top quarter of the counter range
  and the new one is in the bottom quarter (modulus 2**bits x Modbus scale); any other
  drop is a reset and its delta is the new value. The first value ever seen is a
  baseline, and the last value persists across restarts, so nothing is counted twice.
* Ideal time (PRI x PQ) where the device maps an `ideal_cycle_time_s` signal: every produced
  delta (total_count, else good and reject) gives an `ideal_time_s` delta, its pieces times
  the signal's last good value at the delta's end (a product mix changes it); before the
  signal's first good value, the device's `ideal_cycle_time_s` field, if any. Without the
  signal, the time model uses the field x PQ.
* Unplanned stops are counted by the time model from these intervals: a stop counts when
  the last known state before it is another state, so a stop already in progress when the
  device's state is first known (a fresh start), or one that continues a stop known before
  a restart or a link loss, is not a new stop (indicators.timemodel).
* Sample counts (required signals only), on a grid of slots k x interval (epoch based):
  expected = slot starts inside the measured time (the union of the intervals);
  received, on_time, with_source_ts and bad as `agent.derive.slots` counts them (a
  subscription value is held, received in every slot, from the sample that brought it). A
  change is on time when it has a protocol timestamp within the realtime bound of its receive
  time, on either side: a source clock ahead of the gateway is as wrong as one behind it. A
  held value (`Sample.held`: the read after subscribing, a poll of an unchanged value) was
  current when it was read, so it is on time unless its timestamp is more than the bound
  ahead of the receive time; its age is how long the value has not changed, not a delay. A
  sample whose timestamp shows a wrong clock is never on time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.derive.carry import Derived, DeviceCarry
from agent.derive.counters import IdealTimes, counter_deltas, hour_of_end, ideal_time_deltas
from agent.derive.device_plans import OFFLINE, STATE_LABELS, UNKNOWN, DevicePlan, SignalPlan
from agent.derive.issues import IssueJudge, IssueKey, unmapped_states
from agent.derive.sample_columns import (
    O_RECEIVED,
    SampleColumns,
    as_float,
    event_times,
    source_skew,
)
from agent.derive.slots import (
    HOUR_S,
    SlotCarry,
    SlotRanges,
    count_held,
    count_samples,
    expected_slots,
    hour_of_start,
)
from indicators.vocabulary import COUNTER_ROLES, IDEAL_TIME, Q_BAD, Role

# Status codes meaning "the device is unreachable" rather than "no data": OPC UA
# BadNotConnected, BadDeviceFailure, BadCommunicationError, BadServerNotConnected,
# BadNoCommunication, BadOutOfService; Modbus gateway exceptions 0x0A and 0x0B.
UNREACHABLE_STATUS = frozenset(
    {0x808A0000, 0x808B0000, 0x80050000, 0x800D0000, 0x80310000, 0x808D0000, 0x0A, 0x0B}
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _ffill(values: npt.NDArray[np.int8], initial: int) -> npt.NDArray[np.int64]:
    """Forward-fill -1 entries (no change) starting from `initial`."""
    filled = np.concatenate([[initial], values]).astype(np.int64)
    index = np.where(filled >= 0, np.arange(len(filled)), 0)
    np.maximum.accumulate(index, out=index)
    return filled[index][1:]


class Deriver:
    """Derives rows per device; feeds must come in event-time order per device."""

    def __init__(self, plans: Mapping[str, DevicePlan], realtime_bound_s: float) -> None:
        self.plans = plans
        self.realtime_bound_s = realtime_bound_s
        self.carries: dict[str, DeviceCarry] = {}
        self.out = Derived()
        self.changed: set[str] = set()  # devices whose carry changed since `take_changed`
        self.judge = IssueJudge()  # signal health: bad statuses, values out of range

    # --- lifecycle ---------------------------------------------------------------------

    def begin(self, device_id: str, ts: float) -> None:
        """Start measuring a device that has no history yet."""
        slots = SlotCarry.empty(self.plans[device_id].signal_ids)
        self.carries[device_id] = DeviceCarry(start=ts, cursor=ts, open_start=ts, slots=slots)
        self.changed.add(device_id)

    def restore(self, device_id: str, data: Mapping[str, Any]) -> None:
        """Load a device's persisted carry (ignored for a device no longer configured)."""
        plan = self.plans.get(device_id)
        if plan is None:
            return
        carry = DeviceCarry.from_json(data)
        carry.slots = carry.slots.aligned(plan.signal_ids)
        self.carries[device_id] = carry

    def take_changed(self) -> dict[str, DeviceCarry]:
        """The carries changed since the last call (what a commit must persist)."""
        changed = {d: self.carries[d] for d in sorted(self.changed) if d in self.carries}
        self.changed = set()
        return changed

    def resume(self, ts: float) -> None:
        """After an agent (re)start: begin new devices, mark downtime of known ones unknown."""
        for device_id in self.plans:
            carry = self.carries.get(device_id)
            if carry is None:
                self.begin(device_id, ts)
            elif ts > carry.cursor:
                self._link_down(device_id, carry.cursor)
                self.advance(device_id, ts)

    def take(self) -> Derived:
        out, self.out = self.out, Derived()
        return out

    # --- inputs ------------------------------------------------------------------------

    def link_down(self, connection: str, ts: float) -> None:
        for plan in self.plans.values():
            if plan.connection == connection and plan.device_id in self.carries:
                self._link_down(plan.device_id, ts)

    def link_up(self, connection: str, ts: float) -> None:
        """A link is (re)established at `ts`: its devices keep their state (unknown after a
        loss) up to `ts`. Without this the cursor lags by the realtime bound, and the first
        sample of a new session, whose source timestamp is usually older than the outage,
        would be clamped to a cursor inside the outage and claim part of it."""
        for plan in self.plans.values():
            if plan.connection == connection and plan.device_id in self.carries:
                self.advance(plan.device_id, ts)

    def advance(self, device_id: str, until: float) -> None:
        """Extend the device's derived time to `until` with the current state."""
        plan, carry = self.plans[device_id], self.carries[device_id]
        if until <= carry.cursor:
            return  # every call that moved the cursor already derived up to it
        ev_ts, state_ev, auto_ev = self._with_expiry(
            plan, carry, np.empty(0), np.empty(0, np.int8), np.empty(0, np.int8), until
        )
        self._timeline(device_id, ev_ts, state_ev, auto_ev, until)

    def _hold_s(self, plan: DevicePlan, signal_id: str | None) -> float | None:
        """How long a polled value stays valid without a new sample (None: subscription)."""
        signal = plan.signals.get(signal_id) if signal_id else None
        if signal is None or signal.subscription:
            return None
        return 2 * signal.interval_s + self.realtime_bound_s

    def _with_expiry(
        self, plan: DevicePlan, carry: DeviceCarry, ev_ts: FloatArray,
        state_ev: npt.NDArray[np.int8], auto_ev: npt.NDArray[np.int8], until: float | None = None,
    ) -> tuple[FloatArray, npt.NDArray[np.int8], npt.NDArray[np.int8]]:
        """Add `unknown` / auto-off events where a polled state or auto value went stale."""
        extra_ts: list[float] = []
        extra_state: list[int] = []
        extra_auto: list[int] = []
        end = until if until is not None else (float(ev_ts[-1]) if len(ev_ts) else carry.cursor)
        for signal_id, events, attr, off in (
            (plan.state_signal, state_ev, "state_seen", UNKNOWN),
            (plan.auto_signal, auto_ev, "auto_seen", 0),
        ):
            hold = self._hold_s(plan, signal_id)
            if hold is None:
                continue
            seen_ts = ev_ts[events >= 0]
            last: float | None = getattr(carry, attr)
            times = np.concatenate([[last], seen_ts]) if last is not None else seen_ts
            if len(times) == 0:
                continue
            gaps = np.flatnonzero(np.diff(times) > hold)
            stale = (times[gaps] + hold).tolist()
            if times[-1] + hold <= end:
                stale.append(float(times[-1]) + hold)
                setattr(carry, attr, None)
            else:
                setattr(carry, attr, float(times[-1]))
            for ts in stale:
                extra_ts.append(max(ts, carry.cursor))
                extra_state.append(off if attr == "state_seen" else -1)
                extra_auto.append(off if attr == "auto_seen" else -1)
        if not extra_ts:
            return ev_ts, state_ev, auto_ev
        # Expiries go first so that a sample at the same instant wins the tie.
        all_ts = np.concatenate([extra_ts, ev_ts])
        order = np.argsort(all_ts, kind="stable")
        return (
            all_ts[order],
            np.concatenate([np.array(extra_state, np.int8), state_ev])[order],
            np.concatenate([np.array(extra_auto, np.int8), auto_ev])[order],
        )

    def feed(self, device_id: str, cols: SampleColumns, count_until: float | None = None) -> None:
        """Derive from one device's samples (any order; unknown signals are ignored).

        Samples at or after `count_until` still move counters and states but fill no slot
        (backfill: the history's end is outside its measured period).
        """
        plan = self.plans.get(device_id)
        carry = self.carries.get(device_id)
        if plan is None or carry is None or len(cols) == 0:
            return
        unclamped = event_times(cols)
        et = np.maximum(unclamped, carry.cursor)
        order = np.argsort(et, kind="stable")
        et, unclamped = et[order], unclamped[order]
        cols = cols.take(order)
        get = plan.positions.get
        position = np.array([get(name, -1) for name in cols.signal_id.tolist()], np.int64)
        state_ev = np.full(len(et), -1, np.int8)
        auto_ev = np.full(len(et), -1, np.int8)
        ideal = self._ideal_values(plan, carry, position, cols, et, unclamped)
        # Counters, state and auto mode: a few signals per device, one at a time.
        for signal_position in plan.special_positions:
            signal = plan.signals[plan.signal_ids[signal_position]]
            index = self._in_order(
                carry, signal.signal_id, np.flatnonzero(position == signal_position), unclamped
            )
            if len(index) == 0:
                continue
            sub, sub_et = cols.take(index), et[index]
            if signal.role in COUNTER_ROLES:
                produced = ideal is not None and signal.role in plan.produced_roles
                self._counter(device_id, signal, carry, sub, sub_et, ideal if produced else None)
            elif signal.role == Role.STATE:
                state_ev[index] = self._state_labels(device_id, signal, sub, sub_et)
            else:
                auto_ev[index] = self._auto_values(sub)
        self.judge.statuses_and_ranges(self.out.issues, device_id, plan, position, cols, et)
        counted = position >= 0
        counted[counted] = plan.grid.counted[position[counted]]
        if count_until is not None:
            counted &= et < count_until
        if counted.any():
            self._count_samples(device_id, plan, carry, position, cols, et, counted)
        ev_ts, state_ev, auto_ev = self._with_expiry(plan, carry, et, state_ev, auto_ev)
        self._timeline(device_id, ev_ts, state_ev, auto_ev, float(et[-1]))

    # --- derivations -------------------------------------------------------------------

    @staticmethod
    def _in_order(
        carry: DeviceCarry, signal_id: str, index: IntArray, unclamped: FloatArray
    ) -> IntArray:
        """The samples of a counter / state / auto signal that are not older than one
        already seen. A server can deliver an older value after a newer one (a queued
        notification after a reconnect's initial value); as a counter it would read as a
        reset and count the pieces again, as a state it would flip back for an instant.
        Skipping it loses nothing: counters are cumulative, the next sample has it all."""
        if len(index) == 0:
            return index
        times = unclamped[index]
        latest = carry.latest.get(signal_id, -math.inf)
        before = np.maximum.accumulate(np.concatenate([[latest], times]))[:-1]
        carry.latest[signal_id] = max(latest, float(times.max()))
        return index[times >= before]

    def _ideal_values(
        self, plan: DevicePlan, carry: DeviceCarry, position: IntArray, cols: SampleColumns,
        et: FloatArray, unclamped: FloatArray,
    ) -> IdealTimes | None:
        """The ideal cycle time in effect through this feed, for a device with an ideal-cycle-
        time signal: (event times and good positive values of its samples, the value before
        them: the signal's last good value, else the device field). Updates the carry."""
        if plan.ideal_signal is None:
            return None
        index = self._in_order(
            carry, plan.ideal_signal,
            np.flatnonzero(position == plan.positions[plan.ideal_signal]), unclamped,
        )
        sub = cols.take(index)
        values = as_float(sub.value)
        good = (sub.quality != Q_BAD) & np.isfinite(values) & (values > 0)
        before = carry.ideal_s if carry.ideal_s is not None else plan.ideal_field
        times, values = et[index][good], values[good]
        if len(values):
            carry.ideal_s = float(values[-1])
        return times, values, before

    def _counter(
        self, device_id: str, signal: SignalPlan, device: DeviceCarry,
        cols: SampleColumns, et: FloatArray, ideal: IdealTimes | None = None,
    ) -> None:
        deltas = counter_deltas(signal, device, cols, et)
        if deltas is None:
            return
        self.out.issues.record(
            IssueKey(device_id, signal.signal_id, "counter_reset"), deltas.resets, deltas.judged_ts
        )
        starts, ends, amounts = deltas.starts, deltas.ends, deltas.amounts
        self._deltas(device_id, signal.role.value, starts, ends, amounts)
        if ideal is not None:
            known, ideal_s = ideal_time_deltas(ideal, ends, amounts)
            self._deltas(device_id, IDEAL_TIME, starts[known], ends[known], ideal_s)

    def _deltas(
        self, device_id: str, role: str, starts: FloatArray, ends: FloatArray, amounts: FloatArray
    ) -> None:
        """Consecutive deltas of one hour are merged into one row: hourly sums are all that
        base measures use, and the raw samples keep the detail."""
        if len(amounts) == 0:
            return
        hours = hour_of_end(ends)
        uniq, first = np.unique(hours, return_index=True)
        last = np.concatenate([first[1:], [len(hours)]]) - 1
        sums = np.add.reduceat(amounts, first)
        self.out.deltas.extend(
            (device_id, role, s, e, d)
            for s, e, d in zip(
                starts[first].tolist(), ends[last].tolist(), sums.tolist(), strict=True
            )
        )
        self._touch(device_id, uniq)

    def _state_labels(
        self, device_id: str, signal: SignalPlan, cols: SampleColumns, et: FloatArray
    ) -> npt.NDArray[np.int8]:
        mapping = signal.state_map or {}
        values = as_float(cols.value)
        integral = np.isfinite(values) & (values == np.floor(values)) & (np.abs(values) < 2**62)
        codes = np.where(integral, values, -(2**62)).astype(np.int64)
        labels: npt.NDArray[np.int8] = np.full(len(codes), UNKNOWN, np.int8)
        if len(codes):
            lookup = dict(mapping)
            labels[:] = [lookup.get(code, UNKNOWN) for code in codes.tolist()]
        bad = cols.quality == Q_BAD
        unreachable = np.isin(cols.status, list(UNREACHABLE_STATUS))
        labels[bad] = np.where(unreachable[bad], OFFLINE, UNKNOWN)
        # A good sample whose code the map does not know reads as `unknown`: say so.
        unmapped_states(self.out.issues, device_id, signal.signal_id, mapping, codes,
                        cols.value, ~bad, et)
        return labels

    @staticmethod
    def _auto_values(cols: SampleColumns) -> npt.NDArray[np.int8]:
        values = as_float(cols.value)
        on = np.isfinite(values) & (values != 0)
        return (on & (cols.quality != Q_BAD)).astype(np.int8)

    def _count_samples(
        self, device_id: str, plan: DevicePlan, carry: DeviceCarry, position: IntArray,
        cols: SampleColumns, et: FloatArray, counted: npt.NDArray[np.bool_],
    ) -> None:
        with_source = cols.origin[counted] != O_RECEIVED
        latency = cols.received_ts[counted] - cols.source_ts[counted]
        held = cols.held_mask()[counted]
        bound = self.realtime_bound_s
        # A held value was current when read, however old its timestamp; it is late only
        # when its timestamp is ahead (a wrong clock). A change is on time within the bound.
        on_time = with_source & (source_skew(cols)[counted] == 0) & np.where(
            held, latency >= -bound, np.abs(latency) <= bound
        )
        ranges = count_samples(
            plan.grid, carry.slots, carry.start, position[counted], et[counted],
            on_time, with_source, cols.quality[counted] == Q_BAD,
        )
        self._add_ranges(device_id, ranges)

    def _add_ranges(self, device_id: str, ranges: SlotRanges) -> None:
        hours, sums = ranges.by_hour()
        if len(hours):
            self.out.add_counts(device_id, hours, (1, 2, 3, 4), tuple(sums))
            self._touch(device_id, hours.tolist())

    def _fill_all_held(self, device_id: str, carry: DeviceCarry, until: float) -> None:
        grid = self.plans[device_id].grid
        self._add_ranges(device_id, count_held(grid, carry.slots, carry.start, until))

    def _link_down(self, device_id: str, ts: float) -> None:
        carry = self.carries[device_id]
        ts = max(ts, carry.cursor)
        self._fill_all_held(device_id, carry, ts)
        carry.slots.known[:] = False
        carry.state_seen = carry.auto_seen = None
        self._timeline(
            device_id, np.array([ts]), np.array([UNKNOWN], np.int8), np.array([0], np.int8), ts
        )

    def _timeline(
        self, device_id: str, ev_ts: FloatArray, ev_state: npt.NDArray[np.int8],
        ev_auto: npt.NDArray[np.int8], until: float,
    ) -> None:
        """Apply state/auto events (sorted, >= cursor) and close intervals up to `until`."""
        carry = self.carries[device_id]
        self.changed.add(device_id)
        end = max(until, carry.cursor)
        if (
            math.floor(end / HOUR_S) <= math.floor(carry.open_start / HOUR_S)
            and bool(((ev_state < 0) | (ev_state == carry.state)).all())
            and bool(((ev_auto < 0) | (ev_auto == carry.auto)).all())
        ):
            # Live ingest of unchanged states inside the open interval's hour: nothing closes.
            self._fill_all_held(device_id, carry, end)
            carry.cursor = end
            return
        states = _ffill(ev_state, carry.state)
        autos = _ffill(ev_auto, carry.auto)
        prev_states = np.concatenate([[carry.state], states])[:-1]
        prev_autos = np.concatenate([[carry.auto], autos])[:-1]
        change = (states != prev_states) | (autos != prev_autos)
        cp_ts, cp_s, cp_a = ev_ts[change], states[change], autos[change]
        first_hour = math.floor(carry.open_start / HOUR_S) + 1
        boundaries = np.arange(first_hour, math.floor(end / HOUR_S) + 1, dtype=np.float64) * HOUR_S
        at = np.searchsorted(cp_ts, boundaries, side="right") - 1
        hb_s = np.where(at >= 0, cp_s[np.maximum(at, 0)] if len(cp_s) else 0, carry.state)
        hb_a = np.where(at >= 0, cp_a[np.maximum(at, 0)] if len(cp_a) else 0, carry.auto)
        bp_ts = np.concatenate([cp_ts, boundaries])
        bp_s = np.concatenate([cp_s, hb_s]).astype(np.int64)
        bp_a = np.concatenate([cp_a, hb_a]).astype(np.int64)
        order = np.argsort(bp_ts, kind="stable")
        bp_ts, bp_s, bp_a = bp_ts[order], bp_s[order], bp_a[order]
        # Several breakpoints at one instant: the last one holds from there on.
        last_at_ts = np.concatenate([bp_ts[1:] != bp_ts[:-1], [True]])[: len(bp_ts)]
        bp_ts, bp_s, bp_a = bp_ts[last_at_ts], bp_s[last_at_ts], bp_a[last_at_ts]
        starts = np.concatenate([[carry.open_start], bp_ts])
        ends = np.concatenate([bp_ts, [end]])
        labels = np.concatenate([[carry.state], bp_s])
        autos_all = np.concatenate([[carry.auto], bp_a])
        closed = slice(0, len(starts) - 1)
        c_start, c_end = starts[closed], ends[closed]
        c_label, c_auto = labels[closed], autos_all[closed]
        nonzero = c_end > c_start
        if nonzero.any():
            self._emit_intervals(
                device_id, c_start[nonzero], c_end[nonzero], c_label[nonzero], c_auto[nonzero]
            )
        carry.open_start = float(starts[-1])
        carry.state, carry.auto = int(labels[-1]), int(autos_all[-1])
        self._fill_all_held(device_id, carry, end)
        carry.cursor = end

    def _emit_intervals(
        self, device_id: str, starts: FloatArray, ends: FloatArray,
        labels: npt.NDArray[np.int64], autos: npt.NDArray[np.int64],
    ) -> None:
        names = [STATE_LABELS[i] for i in labels.tolist()]
        self.out.intervals.extend(
            zip([device_id] * len(starts), starts.tolist(), ends.tolist(), names,
                autos.tolist(), strict=True)
        )
        hours = hour_of_start(starts)
        self.out.add_counts(
            device_id, hours, (0,), (expected_slots(self.plans[device_id].grid, starts, ends),)
        )
        self._touch(device_id, np.unique(hours).tolist())

    def _touch(self, device_id: str, hours: Iterable[int]) -> None:
        self.carries[device_id].dirty_hours.update(int(h) for h in hours)

    def closed_dirty_hours(self, device_id: str) -> list[int]:
        """Touched hours that are complete (their end is at or before the cursor)."""
        carry = self.carries[device_id]
        return sorted(h for h in carry.dirty_hours if h + HOUR_S <= carry.cursor)
