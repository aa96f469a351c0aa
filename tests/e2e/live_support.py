"""Shared helpers for the live end-to-end tests: the demo factory on the simulator's real
OPC UA and Modbus servers (free loopback ports, security None), the agent configuration
the simulator exports for it, the agent runtime in the test's own event loop, and the
ground truth read back from the simulator's ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agent.config import FactoryConfig
from agent.derive.device_plans import STATE_LABELS
from agent.metrics import AgentMetrics
from agent.runtime import Runtime, build_connectors
from agent.store import Store
from indicators.vocabulary import PRESETS
from simulator.agent_config import export_agent_config
from simulator.ledger import Ledger, load_ledger
from simulator.live import LiveFactory
from simulator.modbus_face import ModbusFaceConfig
from simulator.model import SimFactory, load_factory
from simulator.opcua_face import OpcUaFaceConfig
from simulator.server import SimulatorServer
from simulator.signals import state_code_table
from simulator.timeline import STATES

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "factories" / "demo.yaml"


def demo_factory() -> SimFactory:
    return load_factory(DEMO)


def demo_server(
    factory: SimFactory,
    ledger_dir: Path | None,
    *,
    seed: int = 7,
    opcua: OpcUaFaceConfig | None = None,
    modbus: ModbusFaceConfig | None = None,
) -> SimulatorServer:
    """The demo factory, compressed profile, on free ports with security None."""
    source = LiveFactory(factory, profile="compressed", seed=seed)
    return SimulatorServer(
        source,
        opcua=opcua or OpcUaFaceConfig(),
        modbus=modbus or ModbusFaceConfig(),
        control_port=None,
        ledger_dir=ledger_dir,
    )


def agent_config(
    factory: SimFactory,
    sim: SimulatorServer,
    *,
    opcua: Mapping[str, Any] | None = None,
    modbus: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The simulator's exported agent config (compressed profile) as a dict; `opcua` and
    `modbus` override connection settings (e.g. reconnect_max_s)."""
    assert sim.opcua_endpoint is not None and sim.modbus_address is not None
    host, port = sim.modbus_address
    raw = export_agent_config(factory, sim.opcua_endpoint, host, port, profile="compressed")
    for name, overrides in (("sim-opcua", opcua), ("sim-modbus", modbus)):
        if overrides:
            raw["connections"][name].update(overrides)
    return raw


@contextlib.asynccontextmanager
async def running_agent(
    config: FactoryConfig, db: Path, clock: Callable[[], float] = time.time
) -> AsyncIterator[Runtime]:
    """The agent runtime (real connectors, store, metrics) as a task of this loop; on exit
    it is stopped, flushed and its store closed."""
    store = Store.open(db, config)
    runtime = Runtime(config, store, build_connectors(config), AgentMetrics(), clock=clock)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    try:
        yield runtime
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 20)
        finally:
            store.close()


def stored_intervals(store: Store) -> pd.DataFrame:
    """Every stored interval plus each device's open one, [open_start, cursor), which
    lives in the derivation memory until the state changes or the hour ends."""
    closed = store.intervals(0, 4e9)
    still_open = pd.DataFrame(
        [
            (device_id, carry.open_start, carry.cursor, STATE_LABELS[carry.state],
             bool(carry.auto))
            for device_id, carry in store.deriver.carries.items()
            if carry.cursor > carry.open_start
        ],
        columns=closed.columns,
    )
    frame = pd.concat([closed, still_open], ignore_index=True)
    return frame.sort_values(["device_id", "start"], ignore_index=True)


def measures_so_far(store: Store) -> pd.DataFrame:
    """Hourly base measures of everything the store derived, the open hour included: the
    stored rows plus each device's open interval, whose expected slots are counted when it
    closes (at a state change or the hour's end)."""
    from agent.derive.slots import expected_slots
    from indicators.timemodel import base_measures

    intervals = stored_intervals(store)
    counts = store.sample_counts(0, 4e9)
    still_open = [
        (device_id, int(carry.open_start // 3600 * 3600),
         int(expected_slots(store.deriver.plans[device_id].grid,
                            np.array([carry.open_start]), np.array([carry.cursor]))[0]))
        for device_id, carry in store.deriver.carries.items()
        if carry.cursor > carry.open_start
    ]
    extra = pd.DataFrame(
        [(d, h, n, 0, 0, 0, 0) for d, h, n in still_open], columns=list(counts.columns)
    )
    counts = pd.concat([counts, extra], ignore_index=True)
    counts = counts.groupby(["device_id", "hour_start"], as_index=False).sum()
    ideal = {d.id: d.ideal_cycle_time_s for d in store.config.devices if d.ideal_cycle_time_s}
    return base_measures(
        intervals.assign(auto=intervals["auto"].astype(bool)), store.deltas(0, 4e9), counts,
        ideal,
    )


def read_ledger(sim: SimulatorServer, ledger_dir: Path) -> Ledger:
    sim.flush_ledger()
    return load_ledger(ledger_dir)


# --- the ledger as the agent should see it ---------------------------------------------


def expected_labels(factory: SimFactory, config: FactoryConfig) -> dict[str, dict[str, str]]:
    """Per device: ledger state -> the canonical state the agent maps its wire code to
    (an OPC UA Machinery device shows setup and planned stops as idle)."""
    out: dict[str, dict[str, str]] = {}
    for device in factory.devices:
        if not device.networked:
            continue
        codes = state_code_table(device)
        signal = next(s for s in config.device(device.id).signals if s.role.value == "state")
        assert signal.state_map is not None
        preset = PRESETS[signal.state_map]
        # A state the device's preset cannot express never happens on that device.
        out[device.id] = {
            state: preset[int(code)].value if code >= 0 else f"impossible:{state}"
            for state, code in zip(STATES, codes, strict=True)
        }
    return out


@dataclass(frozen=True)
class Segments:
    """Contiguous [start, end) segments of (state, auto), neighbours with equal labels merged."""

    starts: np.ndarray
    ends: np.ndarray
    states: np.ndarray
    autos: np.ndarray

    @property
    def boundaries(self) -> np.ndarray:
        return self.starts[1:]


def merge_segments(frame: pd.DataFrame) -> Segments:
    """Merge neighbouring rows (sorted by start) whose state and auto are equal."""
    frame = frame.sort_values("start")
    starts = frame["start"].to_numpy(float)
    ends = frame["end"].to_numpy(float)
    states = frame["state"].to_numpy(object)
    autos = frame["auto"].to_numpy(bool)
    if len(starts) == 0:
        return Segments(starts, ends, states, autos)
    new = np.ones(len(starts), bool)
    new[1:] = (states[1:] != states[:-1]) | (autos[1:] != autos[:-1]) | (starts[1:] != ends[:-1])
    first = np.flatnonzero(new)
    last = np.append(first[1:], len(starts)) - 1
    return Segments(starts[first], ends[last], states[first], autos[first])


def ledger_segments(ledger: Ledger, device_id: str, labels: Mapping[str, str]) -> Segments:
    rows = ledger.intervals[ledger.intervals["device_id"] == device_id].copy()
    rows["state"] = rows["state"].map(dict(labels))
    rows["auto"] = rows["auto"].astype(bool)
    return merge_segments(rows)


# --- counts ----------------------------------------------------------------------------

# Which ledger quantity each counter role counts.
LEDGER_COLUMN = {"good_count": "good", "reject_count": "scrap", "total_count": "produced"}
# OPC UA DateTime has 100 ns ticks and the face converts through microseconds, so a
# source timestamp can sit up to ~1 us before the completion it reports; cycles are
# hundreds of ms apart, so "completions up to t" uses t + 1 ms.
TS_TOLERANCE_S = 0.001


class LedgerCounts:
    """Completions up to an instant, read from ledger files the live source writes.

    The ledger counts completions before its `until`, per hour; a ledger written up to
    t + 1 ms and summed over hours is the number of completions at or before t.
    """

    def __init__(self, source: LiveFactory, root: Path) -> None:
        self._source = source
        self._root = root
        self._cache: dict[float, dict[str, dict[str, int]]] = {}

    def at(self, t: float) -> dict[str, dict[str, int]]:
        """device -> {produced, good, scrap} completed at or before t."""
        until = round(t + TS_TOLERANCE_S, 6)
        if until <= self._source.start:
            return {}  # nothing happens before the live factory starts
        counts = self._cache.get(until)
        if counts is None:
            folder = self._source.write_ledger(self._root / f"{len(self._cache):04d}", until)
            hourly = load_ledger(folder).hourly
            counts = {
                str(device_id): {c: int(rows[c].sum()) for c in ("produced", "good", "scrap")}
                for device_id, rows in hourly.groupby("device_id")
            }
            self._cache[until] = counts
        return counts

    def count(self, device_id: str, role: str, t: float) -> int:
        return self.at(t).get(device_id, {}).get(LEDGER_COLUMN[role], 0)


def counter_roles(config: FactoryConfig) -> dict[tuple[str, str], str]:
    """(device, signal) -> role, for the piece counters of every connected device."""
    return {
        (device.id, signal.id): signal.role.value
        for device in config.devices
        for signal in device.signals
        if signal.role.value in LEDGER_COLUMN
    }


def event_time(raw: pd.DataFrame) -> pd.Series:
    """The instant each stored sample describes: its protocol timestamp if it has one
    (origin source/server), else when it was received (Modbus)."""
    has_source = raw["origin"].to_numpy() != 2
    return pd.Series(
        np.where(has_source, raw["source_ts"], raw["received_ts"]), index=raw.index
    )


@dataclass(frozen=True)
class CountCheck:
    """One device's counter over the window the agent measured it."""

    device_id: str
    role: str
    first_ts: float  # event time of the first and last good sample the agent stored
    last_ts: float
    agent: int  # the agent's stored deltas, summed
    ledger: int  # ledger completions between the instants the two samples describe
    instants_found: bool  # both observed values match the ledger at such an instant

    @property
    def ok(self) -> bool:
        return self.instants_found and self.agent == self.ledger


def count_checks(
    factory: SimFactory,
    config: FactoryConfig,
    raw: pd.DataFrame,
    deltas: pd.DataFrame,
    ledger: LedgerCounts,
    modbus_lag_s: float,
    devices: set[str] | None = None,
) -> list[CountCheck]:
    """Per device and counter role: the agent's summed deltas against the ledger's
    completions between the first and the last good counter sample the agent stored.

    A sample's value is the device's count (plus the counter's initial value, modulo its
    width) at the instant the sample describes. For OPC UA that instant is the source
    timestamp, which the simulator sets to the completion it reports. A Modbus sample has
    no timestamp: its value is the face's state at some instant in [received - lag,
    received], and the instant is identified as one where the ledger's count equals the
    value. Between the two instants the ledger completed exactly (last - first) pieces,
    which the agent's deltas must equal: no piece lost, none counted twice.
    """
    roles = counter_roles(config)
    modbus = {d.id for d in config.devices if d.connection == "sim-modbus"}
    raw = raw[raw["quality"] != 2].copy()
    raw["et"] = event_time(raw)
    checks: list[CountCheck] = []
    for (device_id, signal_id), role in sorted(roles.items()):
        if devices is not None and device_id not in devices:
            continue
        rows = raw[(raw["device_id"] == device_id) & (raw["signal_id"] == signal_id)]
        if len(rows) < 2:
            continue
        rows = rows.sort_values("et", kind="stable")
        signal = next(s for s in config.device(device_id).signals if s.id == signal_id)
        modulus = 2 ** (signal.counter_bits or config.collection.counter_bits)
        initial = factory.device(device_id).counter_initial
        lag = modbus_lag_s if device_id in modbus else 0.0
        found = True
        counts: list[int] = []
        for row in (rows.iloc[0], rows.iloc[-1]):
            count = (int(row["value"]) - initial) % modulus
            et = float(row["et"])
            found &= ledger.count(device_id, role, et - lag) <= count
            found &= count <= ledger.count(device_id, role, et)
            counts.append(count)
        picked = deltas[(deltas["device_id"] == device_id) & (deltas["role"] == role)]
        agent = float(picked["delta"].sum())
        assert agent == round(agent), (device_id, role, agent)
        checks.append(CountCheck(
            device_id, role, float(rows["et"].iloc[0]), float(rows["et"].iloc[-1]),
            int(agent), counts[1] - counts[0], found,
        ))
    return checks


def query(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows from agent.db through a read-only connection (safe while the agent writes)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        return conn.execute(sql, params).fetchall()


def link_log(db: Path) -> pd.DataFrame:
    rows = query(db, "SELECT connection, ts, state, reason FROM link_log ORDER BY rowid")
    return pd.DataFrame(rows, columns=["connection", "ts", "state", "reason"])


# --- state intervals ---------------------------------------------------------------------


@dataclass(frozen=True)
class BoundaryCheck:
    device_id: str
    agent_boundaries: np.ndarray  # agent state/auto changes between two known states
    offsets: np.ndarray  # signed distance of each to the nearest ledger boundary
    mislabelled: list[tuple[float, float, str]]  # agent segments the ledger does not show

    @property
    def worst(self) -> float:
        return float(np.max(np.abs(self.offsets))) if len(self.offsets) else 0.0


def boundary_checks(
    intervals: pd.DataFrame, ledger: Ledger, labels: Mapping[str, Mapping[str, str]],
    slack_s: float,
) -> list[BoundaryCheck]:
    """Compare the agent's stored intervals with the ledger, device by device.

    Hour splits are merged away; a boundary next to an `unknown` segment (the start of
    measurement, a link loss) is not a device event and is not compared. Each known
    agent segment's state and auto value must both occur in the ledger within
    [start - slack, end).
    """
    checks: list[BoundaryCheck] = []
    for device_id, rows in intervals.groupby("device_id"):
        agent = merge_segments(rows)
        truth = ledger_segments(ledger, str(device_id), labels[str(device_id)])
        known = agent.states != "unknown"
        both = np.flatnonzero(known[1:] & known[:-1]) + 1
        bounds = agent.starts[both]
        lb = truth.boundaries
        assert len(lb), f"the ledger shows no change of {device_id}"
        offsets = np.array([b - lb[np.argmin(np.abs(lb - b))] for b in bounds])
        mislabelled = []
        for start, end, state, auto in zip(
            agent.starts[known], agent.ends[known], agent.states[known], agent.autos[known],
            strict=True,
        ):
            # State and auto separately: a Modbus device's state and auto registers are
            # read in two requests, so for a moment the agent may hold the new state with
            # the old auto, a combination the device never had.
            seen = (truth.ends > start - slack_s) & (truth.starts < end)
            state_seen = np.any(seen & (truth.states == state))
            if not (state_seen and np.any(seen & (truth.autos == auto))):
                mislabelled.append((float(start), float(end), f"{state}/auto={auto}"))
        checks.append(BoundaryCheck(str(device_id), bounds, offsets, mislabelled))
    return checks
