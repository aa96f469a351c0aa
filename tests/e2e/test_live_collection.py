"""Live collection end to end: the agent runtime against the simulator's real OPC UA and
Modbus servers, checked against the simulator's ground-truth ledger (issue 10).

Figures of one run are printed (`pytest -s`) so they can be quoted.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from asyncua import Client, ua
from live_support import (
    LedgerCounts,
    agent_config,
    boundary_checks,
    count_checks,
    demo_factory,
    demo_server,
    expected_labels,
    link_log,
    measures_so_far,
    read_ledger,
    running_agent,
    stored_intervals,
)

from agent.config import declared_inventory, parse_config
from agent.store import Store
from connectors.base import LinkEvent, SignalBinding
from connectors.config import OpcUaAddress, OpcUaConnection
from connectors.opcua import OpcUaConnector
from connectors.sample import Quality, Sample
from indicators.kpi import compute
from simulator.live import LiveFactory
from simulator.modbus_face import ModbusFaceConfig
from simulator.opcua_face import OpcUaFaceConfig
from simulator.opcua_nodes import synthetic_path
from simulator.opcua_server import OperationLimits
from simulator.server import SimulatorServer
from tests.support.waiting import wait_until_async

LIVE_S = 60.0
LIVE_FRESH_S = 12.0
BOUNDARY_S = 1.0  # the bound between an agent boundary and the ledger's
MODBUS_POLL_S = 0.5
MODBUS_LAG_S = 1.0


@pytest.mark.slow
async def test_a_minute_of_live_collection_matches_the_ledger(tmp_path: Path) -> None:
    """If the agent collects the demo factory (compressed profile) live for 60 s, then
    every state boundary it stored is within 1 s of the ledger's, every state it stored
    is one the ledger shows there, and the piece counters of every device whose link
    never dropped count exactly the ledger's completions over the window it measured.

    Modbus has no timestamps: a change is placed at the poll that sees it, so a 1 Hz
    poll can be 1 s plus the read's latency late (1.08 s measured). The Modbus signals
    are therefore polled every 0.5 s here, which keeps the issue's 1 s bound; OPC UA
    boundaries come from source timestamps and coincide with the ledger's.
    """
    factory = demo_factory()
    ledger_dir = tmp_path / "ledger"
    db = tmp_path / "agent.db"
    sim = demo_server(factory, ledger_dir, modbus=ModbusFaceConfig(tick_s=0.05))
    async with sim:
        raw_config = agent_config(factory, sim)
        for device in raw_config["devices"]:
            if device["connection"] == "sim-modbus":
                for signal in device["signals"]:
                    signal["interval_s"] = MODBUS_POLL_S
        config = parse_config(raw_config)
        async with running_agent(config, db):
            await asyncio.sleep(LIVE_S)
        ledger = read_ledger(sim, ledger_dir)
        assert isinstance(sim.source, LiveFactory)
        counts = LedgerCounts(sim.source, tmp_path / "ledger-at")
        store = Store.open(db, config)
        try:
            intervals = stored_intervals(store)
            deltas = store.deltas(0, 4e9)
            raw = store.raw_samples(0, 4e9)
        finally:
            store.close()
        links = link_log(db)
        dropped = set(links[links["state"] == "disconnected"]["connection"])
        steady = {d.id for d in config.devices if d.connection not in dropped | {"none"}}
        checks = count_checks(factory, config, raw, deltas, counts, MODBUS_LAG_S, steady)

    networked = {d.id for d in factory.devices if d.networked}
    opcua = {d.id for d in config.devices if d.connection == "sim-opcua"}
    # Counts are compared for the devices whose link never dropped (the rule; a
    # drop is not expected here, and counts across one are checked in test_live_faults).
    assert steady & opcua and steady - opcua, f"links dropped: {sorted(dropped)}"

    # State intervals: every boundary within 1 s of the ledger, every state one it shows.
    bounds = boundary_checks(intervals, ledger, expected_labels(factory, config), BOUNDARY_S)
    assert {b.device_id for b in bounds} == networked
    late = {b.device_id: round(b.worst, 3) for b in bounds if b.worst > BOUNDARY_S}
    assert not late, f"boundaries more than {BOUNDARY_S} s from the ledger's: {late}"
    wrong = {b.device_id: b.mislabelled for b in bounds if b.mislabelled}
    assert not wrong, f"states the ledger does not show: {wrong}"
    compared = sum(len(b.agent_boundaries) for b in bounds)
    assert compared >= 5 * len(networked), "too few state changes to prove anything"

    # Counters: exact, per device and counter role.
    assert {c.device_id for c in checks} == steady
    bad = [c for c in checks if not c.ok]
    assert not bad, f"counts differ from the ledger: {bad}"
    pieces = sum(c.ledger for c in checks)
    assert pieces >= 10 * len(steady)

    by_face: dict[str, float] = defaultdict(float)
    for b in bounds:
        face = "opcua" if b.device_id in opcua else "modbus"
        by_face[face] = max(by_face[face], b.worst)
    print(
        f"\nlive {LIVE_S:.0f} s: {len(networked)} devices, {len(raw)} samples, "
        f"{compared} boundaries compared (worst OPC UA {by_face['opcua']:.3f} s, "
        f"Modbus {by_face['modbus']:.3f} s), {len(checks)} counters of {len(steady)} devices "
        f"exact over {pieces} pieces; links dropped: {sorted(dropped) or 'none'}"
    )


@pytest.mark.slow
async def test_a_fresh_agent_on_devices_that_never_change(tmp_path: Path) -> None:
    """If a fresh agent (new data directory) collects the demo factory's OPC UA devices while
    none of their values changes (frozen 700 s before the agent starts, so every source
    timestamp is older than the 600 s clock bound), then within its first hour the data-
    collection and real-time rates are 1.0, every connected device is networked, no sample
    is flagged for a wrong clock, and each signal's first value is stored once (the read
    after subscribing; the subscription's initial notification repeats it)."""
    now = time.time()
    factory = demo_factory()
    source = LiveFactory(factory, profile="compressed", seed=3, start=now - 900)
    for device in factory.devices:
        if device.networked:
            source.freeze(device.id, at=now - 700)
    sim = SimulatorServer(source, control_port=None)
    async with sim:
        raw_config = agent_config(factory, sim)
        raw_config["devices"] = [
            d for d in raw_config["devices"] if d["connection"] == "sim-opcua"
        ]
        raw_config["connections"].pop("sim-modbus")
        config = parse_config(raw_config)
        db = tmp_path / "agent.db"
        async with running_agent(config, db):
            await asyncio.sleep(LIVE_FRESH_S)
        store = Store.open(db, config)
        try:
            base = measures_so_far(store)
            raw = store.raw_samples(0, 4e9)
        finally:
            store.close()
    devices = [d.id for d in config.devices]
    required = sum(s.required for d in config.devices for s in d.signals)
    signals = sum(len(d.signals) for d in config.devices)
    rates = compute(base, declared_inventory(config))
    collection = rates["data_collection_rate"]
    assert collection.value == 1.0, collection
    assert rates["realtime_rate"].value == 1.0, rates["realtime_rate"]
    assert rates["networking_rate"].value == 1.0, rates["networking_rate"]
    assert set(base["device_id"]) == set(devices)
    # Measured up to the runtime's cursor, which trails the clock by the realtime bound.
    measured_s = LIVE_FRESH_S - config.collection.realtime_bound_s - 2
    assert base["samples_expected"].sum() >= required * measured_s
    assert (raw["received_ts"] - raw["source_ts"]).min() > 600  # all older than the bound
    assert set(raw["quality"]) == {0}  # good: none flagged uncertain
    assert len(raw) == signals, raw.groupby(["device_id", "signal_id"]).size().max()
    print(
        f"\nfresh agent, {len(devices)} frozen OPC UA devices, {LIVE_FRESH_S:.0f} s: "
        f"data_collection_rate {collection.value} "
        f"({collection.inputs}), networking_rate {rates['networking_rate'].value}, "
        f"realtime_rate {rates['realtime_rate'].value}; {len(raw)} samples for {signals} signals"
    )


class _Recorder:
    def __init__(self) -> None:
        self.samples: list[Sample] = []

    async def sink(self, batch: Sequence[Sample]) -> None:
        self.samples.extend(batch)

    def link(self, event: LinkEvent) -> None:
        pass


async def _collect(
    connection: OpcUaConnection, bindings: list[SignalBinding],
    done: Callable[[list[Sample]], bool],
) -> tuple[_Recorder, OpcUaConnector, float]:
    """Run one connector until `done(samples)` (at most 20 s), then cancel it."""
    recorder = _Recorder()
    connector = OpcUaConnector("big", connection, bindings)
    task = asyncio.create_task(connector.run(recorder.sink, recorder.link))
    try:
        waited = await wait_until_async(lambda: done(recorder.samples), 20)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return recorder, connector, waited


@pytest.mark.slow
async def test_a_thousand_nodes_within_small_operation_limits() -> None:
    """If the server allows 50 nodes per read and 100 monitored items per call, then all
    1,000 nodes of one device are still collected, by subscription and by polling."""
    limits = OperationLimits(
        max_nodes_per_read=50, max_monitored_items_per_call=100, max_nodes_per_browse=50
    )
    source = LiveFactory(demo_factory(), profile="compressed", seed=1)
    sim = SimulatorServer(
        source, opcua=OpcUaFaceConfig(limits=limits, scale_tags=1000), modbus=None,
        control_port=None,
    )
    tags = [synthetic_path(i) for i in range(1000)]
    bindings = [
        SignalBinding("SYN-01", f"tag{i:04d}", 1.0, opcua=OpcUaAddress(node=f"ns=2;s={path}"))
        for i, path in enumerate(tags)
    ]
    keys = {b.signal_id for b in bindings}
    async with sim:
        assert sim.opcua_endpoint is not None
        # The limits are enforced, not only advertised: 51 nodes in one read are refused.
        async with Client(sim.opcua_endpoint) as client:
            nodes = [client.get_node(f"ns=2;s={path}") for path in tags[:51]]
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await client.read_values(nodes)
            assert refused.value.code == ua.StatusCodes.BadTooManyOperations
            assert len(await client.read_values(nodes[:50])) == 50

        fast = {"reconnect_min_s": 0.2, "reconnect_max_s": 1.0}
        subscribe = OpcUaConnection(endpoint=sim.opcua_endpoint, mode="subscribe", **fast)

        def changed_everywhere(samples: list[Sample]) -> bool:
            # Two different good values per node: the first comes from the read after
            # subscribing, so a second one proves that node's monitored item reports.
            values: dict[str, set[object]] = defaultdict(set)
            for s in samples:
                if s.quality == Quality.GOOD:
                    values[s.signal_id].add(s.value)
            return len(values) == len(keys) and all(len(v) >= 2 for v in values.values())

        started = time.monotonic()
        sub, sub_connector, sub_waited = await _collect(subscribe, bindings, changed_everywhere)
        assert sub_connector.stats.sessions == 1
        assert not [s for s in sub.samples if s.quality != Quality.GOOD]
        assert sub_connector.stats.notifications >= 1000

        poll = subscribe.model_copy(update={"mode": "poll", "poll_interval_s": 1.0})

        def polled_twice(samples: list[Sample]) -> bool:
            seen: dict[str, int] = defaultdict(int)
            for s in samples:
                if s.quality == Quality.GOOD:
                    seen[s.signal_id] += 1
            return len(seen) == len(keys) and min(seen.values()) >= 2

        polled, poll_connector, poll_waited = await _collect(poll, bindings, polled_twice)
        assert poll_connector.stats.sessions == 1 and poll_connector.stats.polls >= 2
        assert not [s for s in polled.samples if s.quality != Quality.GOOD]
    print(
        f"\n1,000 nodes, 50 per read, 100 monitored items per call: every node changing by "
        f"subscription after {sub_waited:.1f} s, polled twice after {poll_waited:.1f} s "
        f"({time.monotonic() - started:.1f} s in all)"
    )
