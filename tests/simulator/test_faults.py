"""Every injected fault, observed from the client side of a real OPC UA / Modbus link."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient

from simulator.control import ControlError, get_status, send_command
from simulator.faults import FaultController, FaultError
from simulator.modbus_face import ModbusFaceConfig
from simulator.opcua_face import OpcUaFaceConfig
from simulator.server import SimulatorServer

LINK_ERRORS = (ConnectionError, OSError, TimeoutError, ua.UaError, asyncio.CancelledError)


@pytest.fixture
async def sim(both_source: Any) -> AsyncIterator[SimulatorServer]:
    server = SimulatorServer(
        both_source, opcua=OpcUaFaceConfig(tick_s=0.05), modbus=ModbusFaceConfig(tick_s=0.05)
    )
    async with server:
        yield server


@pytest.fixture
async def modbus_sim(both_source: Any) -> AsyncIterator[SimulatorServer]:
    """Modbus only: skips the OPC UA server's ~1 s start for Modbus-only faults."""
    async with SimulatorServer(
        both_source, opcua=None, modbus=ModbusFaceConfig(tick_s=0.05)
    ) as server:
        yield server


def _modbus_client(sim: SimulatorServer, **kwargs: Any) -> AsyncModbusTcpClient:
    assert sim.modbus_address is not None
    host, port = sim.modbus_address
    return AsyncModbusTcpClient(host, port=port, timeout=1, retries=0, **kwargs)


def _node(sim: SimulatorServer, client: Client, device: str, signal: str) -> Any:
    assert sim.opcua is not None
    return client.get_node(sim.opcua.node_id(device, signal))


class Notifications:
    def __init__(self) -> None:
        self.values: asyncio.Queue[Any] = asyncio.Queue()

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        self.values.put_nowait(value)


async def test_opcua_face_stops_and_restarts_on_the_same_port(sim: SimulatorServer) -> None:
    """If the OPC UA face is stopped, then connecting fails; after start, a client
    connects to the same endpoint again and the old session is gone."""
    url = sim.opcua_endpoint
    assert url is not None
    old = Client(url, timeout=2)
    await old.connect()
    await sim.faults.stop_face("opcua")
    with pytest.raises(LINK_ERRORS):
        async with Client(url, timeout=2):
            pass
    await sim.faults.start_face("opcua")
    async with Client(url, timeout=2) as fresh:
        assert await _node(sim, fresh, "CNC-01", "state").read_value() == 3
    with pytest.raises(LINK_ERRORS):
        await _node(sim, old, "CNC-01", "state").read_value()
    await old.disconnect()  # only cleans up the client side: the link is already gone


async def test_opcua_fast_restart_drops_sessions_and_is_back_right_after_the_downtime(
    sim: SimulatorServer,
) -> None:
    """If the OPC UA face gets a fast restart (JSON command `restart` with `fast`), then
    while it is down connecting fails, every session and subscription is gone (none keeps
    publishing for a vanished client), and right after the downtime a new client reads on
    the same endpoint; the journal records the stop and the start."""
    url = sim.opcua_endpoint
    assert url is not None and sim.opcua is not None
    old = Client(url, timeout=2)
    await old.connect()
    await old.create_subscription(100, Notifications())
    server = sim.opcua._server
    assert server is not None
    subscriptions = server.iserver.subscription_service.subscriptions
    assert subscriptions
    restart = asyncio.create_task(
        sim.faults.apply({"action": "restart", "face": "opcua", "down_s": 0.5, "fast": True})
    )
    await asyncio.sleep(0.2)
    assert not sim.opcua.running
    with pytest.raises(LINK_ERRORS):
        async with Client(url, timeout=1):
            pass
    started = asyncio.get_running_loop().time()
    assert (await restart)["ok"]
    assert asyncio.get_running_loop().time() - started < 0.6  # no rebuild of seconds
    assert sim.opcua.running and sim.opcua._server is server
    assert not subscriptions and not server.iserver._external_sessions
    async with Client(url, timeout=2) as fresh:
        assert await _node(sim, fresh, "CNC-01", "state").read_value() == 3
    with pytest.raises(LINK_ERRORS):
        await _node(sim, old, "CNC-01", "state").read_value()
    await old.disconnect()
    assert [e.action for e in sim.faults.events[-2:]] == ["stop", "start"]


async def test_modbus_face_stops_and_restarts_on_the_same_port(modbus_sim: SimulatorServer) -> None:
    """If the Modbus face is stopped, then connecting is refused; after start, reads work
    on the same port."""
    client = _modbus_client(modbus_sim)
    await modbus_sim.faults.stop_face("modbus")
    assert not await client.connect()
    await modbus_sim.faults.restart_face("modbus", down_s=0.1)
    assert await client.connect()
    response = await client.read_holding_registers(0, count=1, device_id=3)
    client.close()
    assert response.registers == [2]


async def test_opcua_bad_and_uncertain_status(sim: SimulatorServer) -> None:
    """If a signal is given BadSensorFailure, then a client reads that status and no value;
    UncertainLastUsableValue keeps the value; clearing restores Good."""
    url = sim.opcua_endpoint
    assert url is not None
    async with Client(url, timeout=2) as client:
        node = _node(sim, client, "CNC-01", "spindle_temp")
        sim.faults.set_opcua_status("CNC-01", "spindle_temp", "BadSensorFailure")
        await asyncio.sleep(0.2)
        bad = await node.read_data_value(raise_on_bad_status=False)
        assert bad.StatusCode.value == ua.StatusCodes.BadSensorFailure
        assert bad.Value.Value is None
        sim.faults.set_opcua_status("CNC-01", "spindle_temp", "UncertainLastUsableValue")
        await asyncio.sleep(0.2)
        uncertain = await node.read_data_value(raise_on_bad_status=False)
        assert uncertain.StatusCode.value == ua.StatusCodes.UncertainLastUsableValue
        assert uncertain.Value.Value == 41.25
        sim.faults.set_opcua_status("CNC-01", "spindle_temp", None)
        await asyncio.sleep(0.2)
        assert (await node.read_data_value()).StatusCode.is_good()
    with pytest.raises(FaultError, match="unknown OPC UA status"):
        sim.faults.set_opcua_status("CNC-01", "spindle_temp", "BadNonsense")


async def test_modbus_exception_for_a_signal(modbus_sim: SimulatorServer) -> None:
    """If a signal is set to answer 0x06 (busy) or 0x02, then reads touching it get that
    exception while other registers still read; clearing restores the value."""
    client = _modbus_client(modbus_sim)
    assert await client.connect()
    modbus_sim.faults.set_modbus_exception("PRESS-01", "good_count", 0x06)
    busy = await client.read_holding_registers(0, count=3, device_id=3)
    assert busy.isError() and busy.exception_code == 0x06
    assert (await client.read_holding_registers(0, count=1, device_id=3)).registers == [2]
    modbus_sim.faults.set_modbus_exception("PRESS-01", "good_count", 0x02)
    illegal = await client.read_holding_registers(2, count=1, device_id=3)
    assert illegal.isError() and illegal.exception_code == 0x02
    modbus_sim.faults.set_modbus_exception("PRESS-01", "good_count", None)
    assert not (await client.read_holding_registers(0, count=3, device_id=3)).isError()
    client.close()


async def test_drop_connections_forces_clients_to_reconnect(sim: SimulatorServer) -> None:
    """If all connections are dropped, then a connected OPC UA client's next request fails
    and a Modbus client sees a disconnect; both can connect again at once."""
    url = sim.opcua_endpoint
    assert url is not None
    opcua = Client(url, timeout=2)
    await opcua.connect()
    links: list[bool] = []
    modbus = _modbus_client(sim, trace_connect=links.append, reconnect_delay=0.1)
    assert await modbus.connect()
    dropped = sim.faults.drop_connections()
    assert dropped == 2
    with pytest.raises(LINK_ERRORS):
        await _node(sim, opcua, "CNC-01", "state").read_value()
    await asyncio.sleep(0.5)
    assert False in links  # the Modbus client saw its link close
    assert not (await modbus.read_holding_registers(0, count=1, device_id=3)).isError()
    modbus.close()
    async with Client(url, timeout=2) as again:
        assert await _node(sim, again, "CNC-01", "state").read_value() == 3


async def test_source_timestamp_skew(sim: SimulatorServer, both_source: Any) -> None:
    """If timestamps are skewed by +2 h, then the next change carries changed_at + 7200 s."""
    url = sim.opcua_endpoint
    assert url is not None
    sim.faults.skew_timestamps(7200.0)
    both_source.set("CNC-01", "state", 5, changed_at=1_780_000_500.0)
    await asyncio.sleep(0.2)
    async with Client(url, timeout=2) as client:
        data = await _node(sim, client, "CNC-01", "state").read_data_value()
    assert data.Value.Value == 5
    assert data.SourceTimestamp.replace(tzinfo=UTC) == datetime.fromtimestamp(1_780_007_700.0, UTC)


async def test_suspended_notifications_keep_the_session(
    sim: SimulatorServer, both_source: Any
) -> None:
    """If notifications are suspended, then a subscriber hears nothing (not even
    keep-alives) while reads on the same session still work; on resume the change arrives."""
    url = sim.opcua_endpoint
    assert url is not None
    async with Client(url, timeout=2) as client:
        handler = Notifications()
        sub = await client.create_subscription(50, handler)
        node = _node(sim, client, "CNC-01", "good_count")
        await sub.subscribe_data_change(node)
        assert await asyncio.wait_for(handler.values.get(), 2) == 4_000_000_000
        await sim.faults.suspend_notifications(True)
        both_source.set("CNC-01", "good_count", 4_000_000_001)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(handler.values.get(), 0.8)
        assert await node.read_value() == 4_000_000_001
        await sim.faults.suspend_notifications(False)
        assert await asyncio.wait_for(handler.values.get(), 2) == 4_000_000_001


async def test_freeze_and_counter_reset_are_delegated_to_the_model(
    sim: SimulatorServer, both_source: Any
) -> None:
    """If a device is frozen or its counters reset, then the model is told and the client
    reads the reset counter; unknown devices are refused with their name."""
    sim.faults.freeze("CNC-01")
    assert both_source.frozen == {"CNC-01"}
    sim.faults.reset_counters("PRESS-01")
    await asyncio.sleep(0.2)
    client = _modbus_client(sim)
    assert await client.connect()
    counter = await client.read_holding_registers(1, count=2, device_id=3)
    client.close()
    assert counter.registers == [0, 0]
    await sim.faults.clear()
    assert both_source.frozen == set()
    with pytest.raises(FaultError, match="unknown device 'NOPE'"):
        sim.faults.freeze("NOPE")


async def test_control_endpoint_applies_faults_and_reports_errors(sim: SimulatorServer) -> None:
    """If a fault is sent as JSON to the control endpoint, then the client sees it; a bad
    command comes back as a readable error; /status lists the endpoints."""
    url = sim.control_url
    assert url is not None and sim.opcua_endpoint is not None
    reply = await asyncio.to_thread(
        send_command,
        url,
        {
            "action": "opcua_status",
            "device": "CNC-01",
            "signal": "state",
            "status": "BadSensorFailure",
        },
    )
    assert reply == {"ok": True, "action": "opcua_status"}
    await asyncio.sleep(0.2)
    async with Client(sim.opcua_endpoint, timeout=2) as client:
        data = await _node(sim, client, "CNC-01", "state").read_data_value(
            raise_on_bad_status=False
        )
    assert data.StatusCode.value == ua.StatusCodes.BadSensorFailure
    with pytest.raises(ControlError, match="unknown action 'explode'"):
        await asyncio.to_thread(send_command, url, {"action": "explode"})
    with pytest.raises(ControlError, match="bad freeze command"):
        await asyncio.to_thread(send_command, url, {"action": "freeze"})
    dropped = await asyncio.to_thread(send_command, url, {"action": "drop_connections"})
    assert dropped["dropped"] == 0
    status = await asyncio.to_thread(get_status, url)
    assert status["opcua_endpoint"] == sim.opcua_endpoint
    assert status["faults"]["faces"]["modbus"]["running"] is True


async def test_journal_records_each_fault_with_its_time(both_source: Any, tmp_path: Path) -> None:
    """If faults are applied, then each is appended to the journal as one JSON line."""
    journal = tmp_path / "faults.jsonl"
    controller = FaultController(both_source, journal=journal)
    controller.freeze("CNC-01")
    controller.reset_counters("CNC-01")
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [line["action"] for line in lines] == ["freeze", "reset_counters"]
    assert lines[0]["device"] == "CNC-01" and lines[0]["on"] is True
    assert lines[0]["at"] <= lines[1]["at"]
    with pytest.raises(FaultError, match="no 'opcua' face"):
        controller.skew_timestamps(5)


async def test_counter_reset_on_the_demo_factory_is_seen_and_kept_in_the_ledger(
    demo_live: Any, tmp_path: Path
) -> None:
    """If a demo device's counters are reset, then a Modbus client reads them restart near
    0, and the ledger written on stop records the reset and the fault journal."""
    ledger = tmp_path / "ledger"
    async with SimulatorServer(
        demo_live,
        opcua=None,
        modbus=ModbusFaceConfig(tick_s=0.05),
        control_port=None,
        ledger_dir=ledger,
        ledger_interval_s=0.5,
    ) as sim:
        assert sim.modbus is not None
        initial = {d.id: d.counter_initial for d in demo_live.factory.devices}
        spec = next(
            s for s in sim.modbus.specs if s.counter_bits == 32 and initial[s.device_id] > 1000
        )
        assert spec.modbus is not None and spec.modbus.type == "uint32"
        client = _modbus_client(sim)
        assert await client.connect()

        async def counter() -> int:
            assert spec.modbus is not None and spec.unit_id is not None
            words = (
                await client.read_holding_registers(
                    spec.modbus.address, count=2, device_id=spec.unit_id
                )
            ).registers
            value = client.convert_from_registers(
                words, client.DATATYPE.UINT32, word_order=spec.modbus.word_order
            )
            assert isinstance(value, int)
            return value

        before = await counter()
        sim.faults.reset_counters(spec.device_id)
        await asyncio.sleep(0.2)
        after = await counter()
        client.close()
        await asyncio.sleep(0.6)
        assert sim.ledger_writes >= 1  # the periodic flush ran while serving
    assert before > 1000 and after <= 2
    meta = json.loads((ledger / "meta.json").read_text())
    assert [device for device, _ in meta["counter_resets"]] == [spec.device_id]
    journal = [json.loads(line) for line in (ledger / "faults.jsonl").read_text().splitlines()]
    assert journal[-1]["action"] == "reset_counters"
