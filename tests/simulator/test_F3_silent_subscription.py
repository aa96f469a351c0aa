"""Fault matrix row F3 (docs/reliability.md §c): the OPC UA server stops publishing but keeps
the session. The simulator's real OPC UA server suspends every subscription (no data, no
keep-alive; reads still work), and the agent's real OPC UA connector runs against it.

The connector's liveness limit is `2 × publishing_interval × keepalive_count` of silence (a
server must send a keep-alive every `publishing_interval × keepalive_count`), checked every
`_WAIT_STEP_S`; the figure asserted is detection within that limit plus one check step, then
a new session and subscription within the reconnect schedule's first (immediate) retry.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from connectors.base import LinkState, SignalBinding
from connectors.config import OpcUaAddress, OpcUaConnection, OpcUaSubscription
from connectors.opcua import _WAIT_STEP_S, OpcUaConnector
from simulator.opcua_face import OpcUaFaceConfig
from simulator.server import SimulatorServer
from tests.support.waiting import wait_until_async

sys.path.insert(0, str(Path(__file__).parents[1] / "connectors"))
from connector_helpers import Recorder, running

PUBLISHING_MS = 100
KEEPALIVE_COUNT = 5
LIMIT_S = max(2 * PUBLISHING_MS / 1000 * KEEPALIVE_COUNT, 1.0)


async def test_F3_a_silent_subscription_is_detected_and_recreated(both_source: Any) -> None:
    """If the server keeps the session but stops publishing, then the connector reports the
    link down ("No data nor keepalive") and has a new session and subscription within the
    liveness limit plus one check step of the last notification (while the server stays
    silent it keeps doing so, one session per limit at most: no busy loop), and once
    publishing resumes, the value changed during the silence arrives."""
    async with SimulatorServer(both_source, opcua=OpcUaFaceConfig(tick_s=0.05),
                               modbus=None) as sim:
        assert sim.opcua is not None and sim.opcua_endpoint is not None
        conn = OpcUaConnection(
            endpoint=sim.opcua_endpoint, poll_interval_s=0.2, request_timeout_s=1.0,
            reconnect_min_s=0.1, reconnect_max_s=1.0,
            subscription=OpcUaSubscription(publishing_interval_ms=PUBLISHING_MS,
                                           sampling_interval_ms=50,
                                           keepalive_count=KEEPALIVE_COUNT),
        )
        node = sim.opcua.node_id("CNC-01", "good_count")
        binding = SignalBinding("CNC-01", "good_count", 1.0, opcua=OpcUaAddress(node=node))
        connector = OpcUaConnector("cnc", conn, [binding])
        recorder = Recorder()
        async with running(connector, recorder):
            await wait_until_async(lambda: recorder.latest("good_count") is not None, 10)
            sessions_before = connector.stats.sessions
            last_notification = time.time()
            await sim.faults.suspend_notifications(True)
            both_source.set("CNC-01", "good_count", 4_000_000_123)
            await wait_until_async(lambda: any(
                e.state == LinkState.DISCONNECTED and "No data" in e.reason
                for e in recorder.links), LIMIT_S + 5)
            detected = next(e for e in recorder.links
                            if e.state == LinkState.DISCONNECTED and "No data" in e.reason)
            # A notification already on its way when the server stopped publishing (seen
            # once under load) is the last one: the silence starts there.
            arrived = [s.received_ts for s in recorder.samples if s.received_ts < detected.ts]
            last_notification = max([last_notification, *arrived])
            await wait_until_async(lambda: recorder.links[-1].state == LinkState.CONNECTED
                                   and connector.stats.sessions > sessions_before, 5)
            recreated = recorder.links[-1].ts
            await asyncio.sleep(3 * LIMIT_S)  # still silent: the connector keeps recreating
            silent_sessions = connector.stats.sessions - sessions_before
            await sim.faults.suspend_notifications(False)
            await wait_until_async(lambda: getattr(recorder.latest("good_count"), "value", None)
                                   == 4_000_000_123, 10)
    # The row's figure: recreated within 2 × publishing_interval × keepalive_count of the
    # last notification, plus the one check step of the connector's loop.
    assert recreated - last_notification <= LIMIT_S + _WAIT_STEP_S, (
        detected.ts - last_notification, recreated - detected.ts)
    # One new session per silent limit at most (and the reconnect schedule's pauses): no
    # hot loop while the server stays silent.
    print(f"detected after {detected.ts - last_notification:.2f} s, recreated "
          f"{recreated - detected.ts:.2f} s later, {silent_sessions} sessions while silent")
    assert 1 <= silent_sessions <= 6, silent_sessions
