"""Each device's event timeline, generated in vectorised numpy blocks.

A timeline covers wall time [start, end) (float epoch seconds, UTC) and holds:
contiguous state intervals (state, auto flag), cycle completions (time, scrap flag) and
the energy meter (the integral of power by state). Generation works in three coordinates:
interruptions (failures, setups, idle episodes) are placed in *running time*, the calendar's
planned stops are then inserted in *model time*, and model time maps to wall time through
the profile's event scale (identity for the normal profile). Cycles are laid out on the
concatenated running time, so a cycle cut by a stop resumes after it. Each device draws
from its own generators seeded by (seed, device id, stream), so devices are independent
and the result is identical for a given seed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from simulator.device_model import Calendar, Duration, Profile, SimDevice
from simulator.model import SimFactory

STATES: tuple[str, ...] = ("running", "idle", "setup", "planned_stop", "unplanned_stop")
RUNNING, IDLE, SETUP, PLANNED_STOP, UNPLANNED_STOP = range(5)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
B = npt.NDArray[np.bool_]

# Interval boundaries are rounded to the millisecond so the ledger CSV stays readable and
# exact; cycle completions keep full precision (they never appear in a file directly).
_DECIMALS = 3


def device_rng(seed: int, device_id: str, stream: str, chunk: int = 0) -> np.random.Generator:
    """An independent generator per (seed, device, stream, chunk)."""
    digest = hashlib.sha256(f"{device_id}\x00{stream}".encode()).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, chunk, *words])))


def draw(rng: np.random.Generator, duration: Duration, size: int, scale: float = 1.0) -> F64:
    mean = duration.mean_s * scale
    if duration.dist == "fixed":
        return np.full(size, mean)
    if duration.dist == "exponential":
        return rng.exponential(mean, size)
    if duration.dist == "uniform":
        assert duration.min_s is not None and duration.max_s is not None
        return rng.uniform(duration.min_s * scale, duration.max_s * scale, size)
    sigma = float(np.sqrt(np.log1p(duration.cv**2)))
    return mean * rng.lognormal(-sigma * sigma / 2, sigma, size)


def _positions(rng: np.random.Generator, every: Duration, span: float) -> F64:
    """Cumulative running-time positions of episodes until they pass `span`."""
    chunks: list[F64] = []
    total = 0.0
    # Bounded: each round draws at least the expected number of gaps to cover the span.
    for _ in range(64):
        size = int(span / every.mean_s * 1.25) + 16
        gaps = draw(rng, every, size)
        chunks.append(total + np.cumsum(gaps))
        total = float(chunks[-1][-1])
        if total >= span:
            break
    return np.concatenate(chunks)


@lru_cache(maxsize=256)
def planned_stops(calendar: Calendar, time_zone: str, start: float, end: float) -> F64:
    """The calendar's stops overlapping model time [start, end), clipped and merged: (n, 2)."""
    if not calendar.planned_stops:
        return np.empty((0, 2))
    zone = ZoneInfo(time_zone)
    first = datetime.fromtimestamp(start, zone).date() - timedelta(days=1)
    last = datetime.fromtimestamp(end, zone).date()
    spans: list[tuple[float, float]] = []
    day: date = first
    while day <= last:
        for stop in calendar.planned_stops:
            if day.weekday() in stop.weekdays:
                hour, minute = (int(x) for x in stop.start.split(":"))
                begin = datetime.combine(day, time(hour, minute), zone).timestamp()
                spans.append((begin, begin + stop.duration_s))
        day += timedelta(days=1)
    stops = np.array(sorted(spans), dtype=np.float64).reshape(-1, 2)
    stops = stops[(stops[:, 1] > start) & (stops[:, 0] < end)]
    stops = np.clip(stops, start, end)
    merged: list[list[float]] = []
    for begin, finish in stops:
        if merged and begin <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], finish)
        else:
            merged.append([begin, finish])
    result = np.array(merged, dtype=np.float64).reshape(-1, 2)
    result.flags.writeable = False  # cached and shared between devices
    return result


@dataclass(frozen=True, eq=False)
class DeviceTimeline:
    """What one device did over [start, end). Arrays are read-only by convention."""

    device_id: str
    start: float
    end: float
    starts: F64  # interval starts; interval i is [starts[i], ends[i])
    ends: F64
    states: I8  # index into STATES
    autos: B
    state_since: F64  # when the current state began (auto changes do not count)
    auto_since: F64
    power_kw: F64
    energy_start: F64  # kWh on the meter at each interval start
    cycle_times: F64  # completion times, sorted
    scrap: B
    cum_scrap: I64  # scrap completions up to and including each completion
    ideal_cycle_time_s: float

    # --- queries (scalar) ---------------------------------------------------------------

    def index_at(self, t: float) -> int:
        i = int(np.searchsorted(self.starts, t, side="right")) - 1
        return min(max(i, 0), len(self.starts) - 1)

    def state_at(self, t: float) -> tuple[str, bool, float]:
        """(state, auto, when that state began) at time t."""
        i = self.index_at(t)
        return STATES[int(self.states[i])], bool(self.autos[i]), float(self.state_since[i])

    def counts_at(self, t: float) -> tuple[int, int, int]:
        """(produced, good, scrap) over completions with time <= t."""
        k = int(np.searchsorted(self.cycle_times, t, side="right"))
        scrap = int(self.cum_scrap[k - 1]) if k else 0
        return k, k - scrap, scrap

    def energy_at(self, t: float) -> float:
        """kWh on the meter at t (continuous, 0 at `start`)."""
        i = self.index_at(t)
        span = min(max(t, self.start), self.end) - float(self.starts[i])
        return float(self.energy_start[i] + self.power_kw[i] * max(span, 0.0) / 3600.0)

    # --- queries (vectorised) -----------------------------------------------------------

    def indices_at(self, ts: F64) -> npt.NDArray[np.intp]:
        i = np.searchsorted(self.starts, ts, side="right") - 1
        return np.clip(i, 0, len(self.starts) - 1)

    def counts_many(self, ts: F64) -> tuple[I64, I64]:
        """(produced, scrap) at each t, counting completions with time <= t."""
        k = np.searchsorted(self.cycle_times, ts, side="right").astype(np.int64)
        padded = np.concatenate([np.zeros(1, np.int64), self.cum_scrap])
        return k, padded[k]

    def energy_many(self, ts: F64) -> F64:
        i = self.indices_at(ts)
        span = np.clip(np.clip(ts, self.start, self.end) - self.starts[i], 0.0, None)
        return self.energy_start[i] + self.power_kw[i] * span / 3600.0

    @property
    def total_energy(self) -> float:
        return self.energy_at(self.end)

    # --- composition --------------------------------------------------------------------

    def truncate(self, until: float) -> DeviceTimeline:
        """The same history cut at `until` (start < until <= end)."""
        until = min(max(until, self.start), self.end)
        n = max(int(np.searchsorted(self.starts, until, side="left")), 1)
        k = int(np.searchsorted(self.cycle_times, until, side="left"))
        ends = self.ends[:n].copy()
        ends[-1] = until
        return replace(
            self,
            end=until,
            starts=self.starts[:n],
            ends=ends,
            states=self.states[:n],
            autos=self.autos[:n],
            state_since=self.state_since[:n],
            auto_since=self.auto_since[:n],
            power_kw=self.power_kw[:n],
            energy_start=self.energy_start[:n],
            cycle_times=self.cycle_times[:k],
            scrap=self.scrap[:k],
            cum_scrap=self.cum_scrap[:k],
        )

    def extend(self, later: DeviceTimeline) -> DeviceTimeline:
        """This timeline followed by `later`, which must start where this one ends."""
        if later.start != self.end:
            raise ValueError("timelines must be contiguous")
        return _assemble(
            self.device_id,
            self.start,
            later.end,
            np.concatenate([self.starts, later.starts]),
            np.concatenate([self.states, later.states]),
            np.concatenate([self.autos, later.autos]),
            np.concatenate([self.power_kw, later.power_kw]),
            np.concatenate([self.cycle_times, later.cycle_times]),
            np.concatenate([self.scrap, later.scrap]),
            self.ideal_cycle_time_s,
        )


def _assemble(
    device_id: str,
    start: float,
    end: float,
    starts: F64,
    states: I8,
    autos: B,
    power_kw: F64,
    cycle_times: F64,
    scrap: B,
    ideal_cycle_time_s: float,
) -> DeviceTimeline:
    """Drop empty intervals, merge equal neighbours and derive the running sums."""
    nxt = np.append(starts[1:], end)
    keep = nxt > starts
    starts, states, autos, power_kw = starts[keep], states[keep], autos[keep], power_kw[keep]
    first = np.ones(len(starts), dtype=bool)
    first[1:] = (states[1:] != states[:-1]) | (autos[1:] != autos[:-1])
    starts, states, autos, power_kw = starts[first], states[first], autos[first], power_kw[first]
    ends = np.append(starts[1:], end)
    energy = power_kw * (ends - starts) / 3600.0
    energy_start = np.concatenate([[0.0], np.cumsum(energy)[:-1]])
    return DeviceTimeline(
        device_id=device_id,
        start=start,
        end=end,
        starts=starts,
        ends=ends,
        states=states,
        autos=autos,
        state_since=_since(starts, states),
        auto_since=_since(starts, autos),
        power_kw=power_kw,
        energy_start=energy_start,
        cycle_times=cycle_times,
        scrap=scrap,
        cum_scrap=np.cumsum(scrap, dtype=np.int64),
        ideal_cycle_time_s=ideal_cycle_time_s,
    )


def _since(starts: F64, values: npt.NDArray[np.generic]) -> F64:
    """For each interval, the start of the run of equal `values` it belongs to."""
    changed = np.ones(len(starts), dtype=bool)
    changed[1:] = values[1:] != values[:-1]
    run_index = np.maximum.accumulate(np.where(changed, np.arange(len(starts)), 0))
    return starts[run_index]


def _interruptions(
    device: SimDevice, seed: int, chunk: int, available: float
) -> tuple[F64, F64, I8]:
    """Interruptions in running time: (position, duration, state), sorted by position."""
    kinds = (("failures", UNPLANNED_STOP), ("setups", SETUP), ("starved", IDLE))
    positions: list[F64] = []
    durations: list[F64] = []
    states: list[I8] = []
    for name, state in kinds:
        spec = getattr(device, name)
        if spec is None:
            continue
        if name == "failures":
            every, duration = spec.mtbf, spec.mttr
        else:
            every, duration = spec.every, spec.duration
        rng = device_rng(seed, device.id, name, chunk)
        # Running time is at most the available time, so positions up to it suffice.
        pos = _positions(rng, every, available)
        positions.append(pos)
        durations.append(draw(rng, duration, len(pos)))
        states.append(np.full(len(pos), state, dtype=np.int8))
    if not positions:
        return np.empty(0), np.empty(0), np.empty(0, dtype=np.int8)
    pos_all = np.concatenate(positions)
    order = np.argsort(pos_all, kind="stable")
    return pos_all[order], np.concatenate(durations)[order], np.concatenate(states)[order]


def generate_device_timeline(
    factory: SimFactory,
    device: SimDevice,
    start: float,
    end: float,
    seed: int,
    profile: Profile | None = None,
    *,
    origin: float | None = None,
    chunk: int = 0,
) -> DeviceTimeline:
    """One device's timeline over wall time [start, end).

    `origin` anchors the profile's event scale (model time = origin + (t - origin) /
    event_time_scale), so consecutive chunks of a live run share one calendar; `chunk`
    selects independent random streams for each chunk.
    """
    if not end > start:
        raise ValueError("end must be after start")
    profile = profile or Profile()
    origin = start if origin is None else origin
    scale = profile.event_time_scale
    m0 = origin + (start - origin) / scale
    m1 = origin + (end - origin) / scale
    # Calendar stops live in model time; durations of episodes stay in model seconds here.
    stops = planned_stops(factory.calendars[device.calendar], factory.identity.time_zone, m0, m1)
    stop_len = stops[:, 1] - stops[:, 0]
    available = (m1 - m0) - float(stop_len.sum())

    pos, dur, kind = _interruptions(device, seed, chunk, available)
    gone = np.concatenate([[0.0], np.cumsum(dur)])  # interruption time before event k
    ev_start = pos + gone[:-1]
    ev_end = ev_start + dur
    run_start = np.concatenate([[0.0], ev_end])
    auto_rng = device_rng(seed, device.id, "auto", chunk)
    run_auto = auto_rng.random(len(run_start)) >= device.manual_share
    # Interleave running k, interruption k; an interruption keeps the mode of the run before.
    av_starts = np.empty(2 * len(pos) + 1)
    av_starts[0::2] = run_start
    av_starts[1::2] = ev_start
    av_states = np.full(len(av_starts), RUNNING, dtype=np.int8)
    av_states[1::2] = kind
    av_autos = np.repeat(run_auto, 2)[: len(av_starts)]
    inside = av_starts < available
    av_starts, av_states, av_autos = av_starts[inside], av_states[inside], av_autos[inside]

    # Insert planned stops: cut at each stop's position in available time, then shift.
    cut = (stops[:, 0] - m0) - np.concatenate([[0.0], np.cumsum(stop_len)[:-1]])
    pieces = np.union1d(av_starts, cut[cut < available])
    owner = np.searchsorted(av_starts, pieces, side="right") - 1
    shift = np.concatenate([[0.0], np.cumsum(stop_len)])[np.searchsorted(cut, pieces, "right")]
    m_starts = np.concatenate([m0 + pieces + shift, stops[:, 0]])
    m_states = np.concatenate([av_states[owner], np.full(len(stops), PLANNED_STOP, np.int8)])
    piece_autos = av_autos[owner]
    if len(piece_autos):
        stop_owner = np.clip(np.searchsorted(pieces, cut, side="left") - 1, 0, None)
        stop_autos = piece_autos[stop_owner]
    else:  # the whole span is planned downtime
        stop_autos = np.full(len(stops), bool(run_auto[0]))
    m_autos = np.concatenate([piece_autos, stop_autos])
    order = np.argsort(m_starts, kind="stable")
    m_starts, m_states, m_autos = m_starts[order], m_states[order], m_autos[order]

    starts = np.round(origin + (m_starts - origin) * scale, _DECIMALS)
    starts[0] = start
    keep = starts < end
    starts, states, autos = starts[keep], m_states[keep], m_autos[keep]
    power = np.array([getattr(device.power_kw, s) for s in STATES])[states]
    ideal = device.ideal_cycle_time_s * profile.cycle_time_scale
    shaped = _assemble(
        device.id, start, end, starts, states, autos, power, np.empty(0), np.zeros(0, bool), ideal
    )
    cycles, scrap = _cycles(device, seed, chunk, shaped, ideal)
    return replace(
        shaped, cycle_times=cycles, scrap=scrap, cum_scrap=np.cumsum(scrap, dtype=np.int64)
    )


def _cycles(
    device: SimDevice, seed: int, chunk: int, shaped: DeviceTimeline, ideal: float
) -> tuple[F64, B]:
    running = shaped.states == RUNNING
    run_starts, run_ends = shaped.starts[running], shaped.ends[running]
    lengths = run_ends - run_starts
    total = float(lengths.sum())
    rng = device_rng(seed, device.id, "cycles", chunk)
    if total <= 0:
        return np.empty(0), np.zeros(0, dtype=bool)
    spread = Duration(
        dist="lognormal",
        mean_s=ideal * device.cycle_time_factor,
        cv=max(device.cycle_time_cv, 1e-9),
    )
    blocks: list[F64] = []
    done = 0.0
    for _ in range(64):
        size = int((total - done) / spread.mean_s * 1.1) + 64
        durations = np.maximum(draw(rng, spread, size), ideal)
        blocks.append(done + np.cumsum(durations))
        done = float(blocks[-1][-1])
        if done >= total:
            break
    completions = np.concatenate(blocks)
    completions = completions[completions < total]
    cumulative = np.cumsum(lengths)
    j = np.searchsorted(cumulative, completions, side="left")
    before = np.concatenate([[0.0], cumulative])[j]
    times = np.clip(run_starts[j] + (completions - before), run_starts[j], run_ends[j])
    times = np.maximum.accumulate(times)  # rounding at a boundary must not reorder
    scrap = device_rng(seed, device.id, "scrap", chunk).random(len(times))
    return times, scrap < device.scrap_probability


def generate_timeline(
    factory: SimFactory, start: float, end: float, seed: int, profile: str = "normal"
) -> dict[str, DeviceTimeline]:
    """Timelines of every device (networked or not) over [start, end)."""
    chosen = factory.profile(profile)
    return {
        device.id: generate_device_timeline(factory, device, start, end, seed, chosen)
        for device in factory.devices
    }
