"""The OPC UA connector's first values (issue 16): stored once, and marked held.

The read after subscribing gives every signal its current value; the subscription's initial
notification repeats it and is dropped. Read values are `held` (their source timestamp is
when the value last changed, possibly long ago); change notifications are not; a poll is
held while the node's source timestamp does not move.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from connector_helpers import Recorder, running
from connector_opcua_server import OpcUaTestServer

from connectors.base import SignalBinding
from connectors.config import OpcUaAddress, OpcUaConnection, OpcUaSubscription
from connectors.opcua import OpcUaConnector
from tests.support.ports import free_port
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.asyncio(loop_scope="module")

OLD = datetime.now(UTC) - timedelta(hours=3)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server() -> AsyncIterator[OpcUaTestServer]:
    async with OpcUaTestServer(free_port(), {"Still": 0, "Moving": 1, "Polled": 5}) as shared:
        for name, value in (("Still", 0), ("Moving", 1), ("Polled", 5)):
            await shared.write(name, value, source_ts=OLD)
        yield shared


def _conn(endpoint: str, **overrides: Any) -> OpcUaConnection:
    settings: dict[str, Any] = {
        "endpoint": endpoint, "poll_interval_s": 0.2, "request_timeout_s": 1.0,
        "reconnect_min_s": 0.1, "reconnect_max_s": 1.0,
        "subscription": OpcUaSubscription(
            publishing_interval_ms=100, sampling_interval_ms=50, keepalive_count=5
        ),
    }
    settings.update(overrides)
    return OpcUaConnection(**settings)


def _bind(server: OpcUaTestServer, signal: str) -> SignalBinding:
    return SignalBinding("CNC-01", signal, 1.0, opcua=OpcUaAddress(node=server.node_id(signal)))


async def test_the_first_value_is_stored_once_and_held(server: OpcUaTestServer) -> None:
    """If the connector subscribes to values unchanged for 3 h, then each arrives once (the
    read; the initial notification with the same DataValue is dropped), marked held with its
    3 h old source timestamp; a later change arrives as a change, not held."""
    recorder = Recorder()
    connector = OpcUaConnector(
        "cnc", _conn(server.endpoint), [_bind(server, "Still"), _bind(server, "Moving")]
    )
    async with running(connector, recorder):
        await wait_until_async(lambda: recorder.latest("Moving") is not None, 5)
        await wait_until_async(lambda: connector.stats.notifications >= 2, 5)
        await asyncio.sleep(0.5)  # time for a duplicate to show up, if there were one
        await server.write("Moving", 2)
        await wait_until_async(lambda: recorder.latest("Moving").value == 2, 3)  # type: ignore[union-attr]
    still, moving = recorder.of("Still"), recorder.of("Moving")
    assert len(still) == 1 and still[0].held and still[0].source_ts == OLD.timestamp()
    assert [(s.value, s.held) for s in moving] == [(1, True), (2, False)]


async def test_a_poll_is_held_while_the_timestamp_stays(server: OpcUaTestServer) -> None:
    """If a node is polled, then its samples are held while its source timestamp does not
    move; the poll that finds a new timestamp (a change) is not held, the next ones are."""
    recorder = Recorder()
    connector = OpcUaConnector(
        "cnc", _conn(server.endpoint, mode="poll"), [_bind(server, "Polled")]
    )
    async with running(connector, recorder):
        await wait_until_async(lambda: len(recorder.of("Polled")) >= 3, 5)
        await server.write("Polled", 6)
        await wait_until_async(
            lambda: sum(s.value == 6 for s in recorder.of("Polled")) >= 3, 5
        )
    polled = recorder.of("Polled")
    before = [s for s in polled if s.value == 5]
    after = [s for s in polled if s.value == 6]
    assert all(s.held for s in before)
    assert not after[0].held and all(s.held for s in after[1:])
