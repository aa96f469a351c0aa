"""The live factory: the model running against the wall clock, for the protocol faces.

`LiveFactory` implements `simulator.api.LiveSource`. Its timeline starts at a given wall
time and is generated in chunks of `horizon_s` (chunk k has its own random streams), the
next chunk being added lazily when a query passes the end, so a run may last any time.
Value-level faults change only what the wire shows, never the ground truth: `freeze`
holds a device's values, `reset_counters` restarts its counters from 0. Energy and
process values are quantised to `value_step_s` so a value and its source timestamp
(`changed_at`) always agree exactly.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simulator.api import SignalSpec, SignalValue
from simulator.device_model import COUNT_ROLES, SignalDef, SimDevice
from simulator.ledger import write_ledger
from simulator.model import SimFactory
from simulator.signals import signal_specs, state_code_table
from simulator.timeline import (
    UNPLANNED_STOP,
    DeviceTimeline,
    generate_device_timeline,
)


@dataclass(frozen=True, slots=True)
class _CounterReset:
    at: float
    produced: int
    scrap: int


@dataclass
class _DeviceRun:
    device: SimDevice
    signals: tuple[SignalDef, ...]
    codes: list[int]
    timeline: DeviceTimeline
    alarm_since: np.ndarray
    frozen_at: float | None = None
    resets: list[_CounterReset] = field(default_factory=list)


def _alarm_since(tl: DeviceTimeline) -> np.ndarray:
    alarm = tl.states == UNPLANNED_STOP
    changed = np.ones(len(alarm), dtype=bool)
    changed[1:] = alarm[1:] != alarm[:-1]
    run = np.maximum.accumulate(np.where(changed, np.arange(len(alarm)), 0))
    return tl.starts[run]


class LiveFactory:
    """Every device's timeline from `start` on, read at wall time by the faces.

    Thread-safe: faces, the control endpoint and tests may call it from different threads.
    """

    def __init__(
        self,
        factory: SimFactory,
        *,
        start: float | None = None,
        seed: int = 0,
        profile: str = "normal",
        horizon_s: float = 86400.0,
        value_step_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if horizon_s <= 0 or value_step_s <= 0:
            raise ValueError("horizon_s and value_step_s must be positive")
        self.factory = factory
        self.seed = seed
        self.profile = profile
        self.horizon_s = horizon_s
        self.value_step_s = value_step_s
        self._clock = clock
        self.start = float(clock() if start is None else start)
        self._profile = factory.profile(profile)
        self._lock = threading.Lock()
        self._chunks = 1
        self._specs = signal_specs(factory)
        self._runs: dict[str, _DeviceRun] = {}
        end = self.start + horizon_s
        for device in factory.devices:
            tl = self._chunk(device, 0)
            self._runs[device.id] = _DeviceRun(
                device=device,
                signals=factory.signals_of(device),
                codes=[int(c) for c in state_code_table(device)],
                timeline=tl,
                alarm_since=_alarm_since(tl),
            )
        self._end = end

    # --- LiveSource ---------------------------------------------------------------------

    def signal_specs(self) -> list[SignalSpec]:
        return list(self._specs)

    def values_at(self, t: float) -> dict[tuple[str, str], SignalValue]:
        out: dict[tuple[str, str], SignalValue] = {}
        with self._lock:
            self._ensure(t)
            for run in self._runs.values():
                if run.device.networked:
                    self._device_values(run, t, out)
        return out

    # --- faults -------------------------------------------------------------------------

    def freeze(self, device_id: str, frozen: bool = True, at: float | None = None) -> None:
        """Hold (or release) the device's wire values as they were at `at` (default now)."""
        with self._lock:
            run = self._run(device_id)
            if frozen:
                if run.frozen_at is None:
                    run.frozen_at = self._clock() if at is None else at
            else:
                run.frozen_at = None

    def reset_counters(self, device_id: str, at: float | None = None) -> None:
        """From `at` (default now) the device's counters read 0 plus what it makes after."""
        with self._lock:
            run = self._run(device_id)
            when = self._clock() if at is None else at
            self._ensure(when)
            produced, _, scrap = run.timeline.counts_at(when)
            run.resets.append(_CounterReset(when, produced, scrap))
            run.resets.sort(key=lambda r: r.at)

    def is_frozen(self, device_id: str) -> bool:
        with self._lock:
            return self._run(device_id).frozen_at is not None

    # --- ground truth -------------------------------------------------------------------

    def timeline(self, device_id: str, until: float | None = None) -> DeviceTimeline:
        """The device's true timeline from `start`, extended to cover `until` if given."""
        with self._lock:
            if until is not None:
                self._ensure(until)
            return self._run(device_id).timeline

    def write_ledger(self, out_dir: Path, until: float | None = None) -> Path:
        """The ledger of [start, until) (default now); faults do not change it."""
        until = self._clock() if until is None else until
        if until <= self.start:
            raise ValueError("nothing to write yet: `until` is not after the start")
        with self._lock:
            self._ensure(until)
            timelines = {d: r.timeline.truncate(until) for d, r in self._runs.items()}
            resets = [[d, r.at] for d, run in self._runs.items() for r in run.resets]
        return write_ledger(
            Path(out_dir),
            self.factory,
            timelines,
            start=self.start,
            end=until,
            seed=self.seed,
            profile=self.profile,
            extra_meta={"live": True, "horizon_s": self.horizon_s, "counter_resets": resets},
        )

    # --- internals ----------------------------------------------------------------------

    def _run(self, device_id: str) -> _DeviceRun:
        try:
            return self._runs[device_id]
        except KeyError:
            raise KeyError(f"unknown device {device_id!r}") from None

    def _chunk(self, device: SimDevice, index: int) -> DeviceTimeline:
        begin = self.start + index * self.horizon_s
        return generate_device_timeline(
            self.factory,
            device,
            begin,
            begin + self.horizon_s,
            self.seed,
            self._profile,
            origin=self.start,
            chunk=index,
        )

    def _ensure(self, t: float) -> None:
        """Extend every timeline until it covers t (caller holds the lock)."""
        while t >= self._end:
            for run in self._runs.values():
                run.timeline = run.timeline.extend(self._chunk(run.device, self._chunks))
                run.alarm_since = _alarm_since(run.timeline)
            self._chunks += 1
            self._end = self.start + self._chunks * self.horizon_s

    def _device_values(
        self, run: _DeviceRun, t: float, out: dict[tuple[str, str], SignalValue]
    ) -> None:
        tl = run.timeline
        now = max(t if run.frozen_at is None else min(t, run.frozen_at), self.start)
        i = tl.index_at(now)
        state = int(tl.states[i])
        k = int(np.searchsorted(tl.cycle_times, now, side="right"))
        produced = k
        scrap = int(tl.cum_scrap[k - 1]) if k else 0
        counted_since = tl.cycle_times[k - 1] if k else self.start
        initial = run.device.counter_initial
        reset = next((r for r in reversed(run.resets) if r.at <= now), None)
        if reset is not None:
            produced -= reset.produced
            scrap -= reset.scrap
            initial = 0
            counted_since = max(counted_since, reset.at)
        step = self.value_step_s
        quantised = max(math.floor(now / step) * step, self.start)
        device_id = run.device.id
        for signal in run.signals:
            role = signal.role
            value: bool | int | float
            if role == "state":
                value, since = run.codes[state], float(tl.state_since[i])
            elif role == "auto_mode":
                value, since = bool(tl.autos[i]), float(tl.auto_since[i])
            elif role == "alarm":
                value, since = state == UNPLANNED_STOP, float(run.alarm_since[i])
            elif role in COUNT_ROLES:
                count = {
                    "total_count": produced,
                    "good_count": produced - scrap,
                    "reject_count": scrap,
                }[role]
                bits = self.factory.counter_bits(run.device, signal)
                value = (count + initial) % (1 << bits)
                since = float(counted_since)
            elif role == "energy_kwh":
                value, since = tl.energy_at(quantised), quantised
            elif role == "ideal_cycle_time_s":
                value, since = tl.ideal_cycle_time_s, self.start
            else:
                assert signal.process is not None
                p = signal.process
                value = p.base + p.amplitude * math.sin(
                    2 * math.pi * quantised / p.period_s + p.phase
                )
                since = quantised
            out[(device_id, signal.id)] = SignalValue(value=value, changed_at=since)
