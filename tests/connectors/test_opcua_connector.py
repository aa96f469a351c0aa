"""The OPC UA connector against real asyncua servers: subscribe, poll, limits, recovery.

Most tests share one module-wide server (building an asyncua address space takes about a
second); each test uses its own variables on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua
from connector_helpers import Recorder, running
from connector_opcua_server import OpcUaTestServer

from connectors.base import LinkState, SignalBinding
from connectors.config import OpcUaAddress, OpcUaConnection, OpcUaSubscription
from connectors.opcua import OpcUaConnector
from connectors.sample import Quality, TimestampOrigin
from tests.support.fault_proxy import FaultProxy
from tests.support.ports import free_port
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.asyncio(loop_scope="module")

MANY = {f"Many/M{i:04d}": float(i) for i in range(1000)}
VARIABLES: dict[str, Any] = {
    "State": 1,
    "Speed": 12.5,
    "Name": "CNC",
    "Count": 3,
    "Polled": 3,
    "Good": 1.0,
    "Uncertain": 2.0,
    "Bad": 3.0,
    "Temp": 20.0,
    "Frozen": 1,
    **MANY,
}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server() -> AsyncIterator[OpcUaTestServer]:
    async with OpcUaTestServer(free_port(), VARIABLES) as shared:
        yield shared


def _conn(endpoint: str, **overrides: Any) -> OpcUaConnection:
    settings: dict[str, Any] = {
        "endpoint": endpoint,
        "poll_interval_s": 0.2,
        "request_timeout_s": 1.0,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 1.0,
        "subscription": OpcUaSubscription(
            publishing_interval_ms=100, sampling_interval_ms=50, keepalive_count=5
        ),
    }
    settings.update(overrides)
    return OpcUaConnection(**settings)


def _bind(signal: str, node: str) -> SignalBinding:
    return SignalBinding("CNC-01", signal, 1.0, opcua=OpcUaAddress(node=node))


async def test_subscription_streams_initial_and_changed_values(server: OpcUaTestServer) -> None:
    """If the connector subscribes, then every signal gets a fresh sample at once and each
    change on the server arrives with its source timestamp."""
    recorder = Recorder()
    requested = server.subscriptions_requested
    bindings = [_bind(name, server.node_id(name)) for name in ("State", "Speed", "Name")]
    connector = OpcUaConnector("cnc", _conn(server.endpoint), bindings)
    async with running(connector, recorder):
        await wait_until_async(
            lambda: all(recorder.latest(s) for s in ("State", "Speed", "Name")), 5
        )
        assert connector.mode_in_use == "subscribe"
        source = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
        await server.write("State", 6, source_ts=source)
        await wait_until_async(lambda: recorder.latest("State").value == 6, 3)  # type: ignore[union-attr]
    state = recorder.latest("State")
    assert state is not None and state.quality == Quality.GOOD and state.status == 0
    assert state.source_ts == source.timestamp() and state.ts_origin == TimestampOrigin.SOURCE
    assert recorder.latest("Speed").value == 12.5  # type: ignore[union-attr]
    assert recorder.latest("Name").value == "CNC"  # type: ignore[union-attr]
    assert recorder.states() == [LinkState.CONNECTING, LinkState.CONNECTED]
    assert server.subscriptions_requested == requested + 1


async def test_poll_mode_reads_at_the_interval(server: OpcUaTestServer) -> None:
    """If the connection is set to poll, then no subscription is made and values still flow."""
    recorder = Recorder()
    requested = server.subscriptions_requested
    connector = OpcUaConnector(
        "cnc", _conn(server.endpoint, mode="poll"), [_bind("Polled", server.node_id("Polled"))]
    )
    async with running(connector, recorder):
        await wait_until_async(lambda: len(recorder.of("Polled")) >= 3, 5)
        assert connector.mode_in_use == "poll"
        await server.write("Polled", 4)
        await wait_until_async(lambda: recorder.latest("Polled").value == 4, 3)  # type: ignore[union-attr]
    assert server.subscriptions_requested == requested
    stamps = [s.received_ts for s in recorder.of("Polled")]
    # Polls fall on wall-clock multiples of 0.2 s (after the first, immediate one).
    assert all(abs(t / 0.2 - round(t / 0.2)) < 0.25 for t in stamps[1:])


async def test_refused_subscription_falls_back_to_polling() -> None:
    """If the server refuses CreateSubscription, then the connector polls instead."""
    server = OpcUaTestServer(free_port(), {"Count": 3}, refuse_subscriptions=True)
    recorder = Recorder()
    async with server:
        connector = OpcUaConnector(
            "cnc", _conn(server.endpoint), [_bind("Count", server.node_id("Count"))]
        )
        async with running(connector, recorder):
            await wait_until_async(lambda: len(recorder.of("Count")) >= 3, 5)
            assert connector.mode_in_use == "poll"
    assert connector.stats.subscription_refusals == 1 and server.subscriptions_requested == 1
    assert recorder.states() == [LinkState.CONNECTING, LinkState.CONNECTED]


@pytest.mark.parametrize("mode", ["subscribe", "poll"])
async def test_thousand_nodes_on_a_server_with_small_limits(
    server: OpcUaTestServer, mode: str
) -> None:
    """If a server allows 100 reads and (unadvertised) 64 monitored items per call, then all
    1,000 signals are collected and no request ever exceeds what the server accepts."""
    recorder = Recorder()
    await server.set_limits({"read": 100, "monitored": 0}, {"read": 100, "monitored": 64})
    try:
        bindings = [_bind(p.split("/")[1], server.node_id(p)) for p in MANY]
        connector = OpcUaConnector("cnc", _conn(server.endpoint, mode=mode), bindings)
        async with running(connector, recorder):
            await wait_until_async(lambda: len({s.signal_id for s in recorder.samples}) == 1000, 20)
        sizes = {kind: list(counts) for kind, counts in server.sizes.items()}
    finally:
        await server.set_limits({}, {})
    assert {s.signal_id: s.value for s in recorder.samples} == {
        p.split("/")[1]: v for p, v in MANY.items()
    }
    assert all(s.quality == Quality.GOOD for s in recorder.samples)
    big_reads = [n for n in sizes["read"] if n > 3]  # the connector's own reads
    assert big_reads and max(big_reads) <= 100
    if mode == "subscribe":
        accepted = [n for n in sizes["monitored"] if n <= 64]
        assert sum(accepted) == 1000
        assert max(sizes["monitored"]) == 1000  # tried the default batch, was refused


async def test_status_codes_map_to_quality(server: OpcUaTestServer) -> None:
    """If the server reports good, uncertain and bad values, then quality follows the status
    severity, the full status code is kept and a bad sample carries no value."""
    recorder = Recorder()
    await server.write("Uncertain", 2.5, status=ua.StatusCodes.UncertainLastUsableValue)
    await server.write("Bad", 3.5, status=ua.StatusCodes.BadSensorFailure)
    bindings = [_bind(n, server.node_id(n)) for n in ("Good", "Uncertain", "Bad")]
    bindings.append(_bind("Missing", f"ns={server.index};s=Factory/Nope"))
    connector = OpcUaConnector("cnc", _conn(server.endpoint), bindings)
    async with running(connector, recorder):
        await wait_until_async(lambda: len({s.signal_id for s in recorder.samples}) == 4, 5)
    good, uncertain, bad = (recorder.latest(n) for n in ("Good", "Uncertain", "Bad"))
    missing = recorder.latest("Missing")
    assert good is not None and good.quality == Quality.GOOD and good.status == 0
    assert uncertain is not None and uncertain.quality == Quality.UNCERTAIN
    assert uncertain.status == ua.StatusCodes.UncertainLastUsableValue and uncertain.value == 2.5
    assert bad is not None and bad.quality == Quality.BAD and bad.value is None
    assert bad.status == ua.StatusCodes.BadSensorFailure
    assert missing is not None and missing.quality == Quality.BAD
    assert missing.status == ua.StatusCodes.BadNodeIdUnknown


async def test_missing_source_timestamp_falls_back_to_server_time(
    server: OpcUaTestServer,
) -> None:
    """If a value has no source timestamp, then the server timestamp is used and recorded."""
    recorder = Recorder()
    server_time = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    await server.write("Temp", 21.0, source_ts=None, server_ts=server_time)
    connector = OpcUaConnector(
        "cnc", _conn(server.endpoint, mode="poll"), [_bind("Temp", server.node_id("Temp"))]
    )
    async with running(connector, recorder):
        await wait_until_async(lambda: recorder.latest("Temp") is not None, 5)
    sample = recorder.latest("Temp")
    assert sample is not None and sample.value == 21.0
    assert sample.ts_origin in (TimestampOrigin.SERVER, TimestampOrigin.RECEIVED)
    if sample.ts_origin == TimestampOrigin.SERVER:
        assert sample.source_ts != sample.received_ts
    else:
        assert sample.source_ts == sample.received_ts


async def test_server_restart_resubscribes_with_fresh_node_ids() -> None:
    """If the server goes away for 5 s and comes back on the same port with its namespace at
    another index, then the connector re-resolves the node ids, subscribes again and data
    flows within 5 s of the server's return, without restarting the connector."""
    port = free_port()
    first = OpcUaTestServer(port, {"State": 1})
    second = OpcUaTestServer(port, {"State": 2}, namespaces_before=3)
    recorder = Recorder()
    await first.start()
    await second.prepare()
    assert first.index != second.index
    connector = OpcUaConnector(
        "cnc",
        _conn(first.endpoint, reconnect_max_s=2.0),
        [_bind("State", OpcUaTestServer.nsu_id("State"))],
    )
    try:
        async with running(connector, recorder):
            await wait_until_async(lambda: recorder.latest("State") is not None, 5)
            await first.stop()
            await wait_until_async(lambda: LinkState.DISCONNECTED in recorder.states(), 5)
            await asyncio.sleep(5.0)
            await second.start()
            took = await wait_until_async(lambda: recorder.latest("State").value == 2, 5)  # type: ignore[union-attr]
            await second.write("State", 3)
            await wait_until_async(lambda: recorder.latest("State").value == 3, 3)  # type: ignore[union-attr]
    finally:
        await first.stop()
        await second.stop()
    assert took < 5
    assert recorder.states()[-2:] == [LinkState.DISCONNECTED, LinkState.CONNECTED]
    assert connector.stats.sessions >= 2


@pytest.mark.parametrize("run", range(3))  # bench/soak.py runs the matrix's 100
async def test_F2_blackholed_link_is_detected_within_5_s_and_recovered(run: int) -> None:
    """If the link goes silent without closing (blackholed), then the connector notices it
    within 5 s (watchdog + request timeout), reports the link down, and after the link heals
    it reconnects and data flows again."""
    server = OpcUaTestServer(free_port(), {"Count": 1})
    recorder = Recorder()
    async with server, FaultProxy("127.0.0.1", server.port) as proxy:
        endpoint = f"opc.tcp://127.0.0.1:{proxy.port}/"
        connector = OpcUaConnector(
            "cnc", _conn(endpoint), [_bind("Count", server.node_id("Count"))]
        )
        async with running(connector, recorder):
            await wait_until_async(lambda: recorder.latest("Count") is not None, 5)
            paused_at = time.time()
            proxy.pause()
            await wait_until_async(lambda: LinkState.DISCONNECTED in recorder.states(), 10)
            down = next(e for e in recorder.links if e.state == LinkState.DISCONNECTED)
            assert down.ts - paused_at <= 5.0, down.ts - paused_at
            proxy.reset()
            proxy.resume()
            await server.write("Count", 2)
            await wait_until_async(lambda: recorder.latest("Count").value == 2, 8)  # type: ignore[union-attr]
    assert recorder.states()[-1] == LinkState.CONNECTED
    assert connector.stats.sessions >= 2
    # The first disconnect is the detection of the frozen link; later ones may be refused
    # reconnect attempts while the proxy resets (seen under load).
    detected = next(e for e in recorder.links if e.state == LinkState.DISCONNECTED)
    assert "lost" in detected.reason or "No data" in detected.reason


async def test_malformed_node_id_is_refused_at_construction() -> None:
    """If a node id cannot be parsed, then construction fails naming the text."""
    with pytest.raises(ValueError, match="'ns=2;x=oops' is not an OPC UA node id"):
        OpcUaConnector("cnc", _conn("opc.tcp://127.0.0.1:4840/"), [_bind("x", "ns=2;x=oops")])
