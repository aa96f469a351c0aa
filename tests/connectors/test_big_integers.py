"""64-bit integers and non-finite floats from real servers into the store, exactly.

Issue 16 item 5: a uint64 at or above 2^63 used to kill the store at its first commit.
Here the extremes travel the real way: a simulator face (or the connector tests' asyncua
server, for the types the simulator does not serve) -> connector -> `Store.ingest` ->
`Store.raw_samples`, and must come back unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asyncua import ua
from connector_helpers import Recorder, running
from connector_opcua_server import OpcUaTestServer

from agent.config import FactoryConfig, parse_config
from agent.metrics import AgentMetrics
from agent.runtime import Runtime, build_connectors
from agent.store import Store
from connectors.base import SignalBinding
from connectors.config import ModbusConnection, OpcUaConnection
from connectors.modbus import ModbusConnector
from connectors.opcua import OpcUaConnector
from connectors.sample import Quality, Sample
from simulator.api import ModbusSpec, SignalSpec, SignalValue
from simulator.modbus_face import ModbusFace, ModbusFaceConfig
from simulator.opcua_face import OpcUaFace, OpcUaFaceConfig
from tests.support.ports import free_port
from tests.support.waiting import wait_until_async

U64_MAX = 2**64 - 1
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1


class FixedSource:
    """A simulator LiveSource whose signals hold fixed values (the faces' real protocol
    encoding is what is under test, not the factory model)."""

    def __init__(self, values: Mapping[SignalSpec, int | float]) -> None:
        self._values = values
        self._since = time.time()

    def signal_specs(self) -> list[SignalSpec]:
        return list(self._values)

    def values_at(self, t: float) -> dict[tuple[str, str], SignalValue]:
        return {
            (spec.device_id, spec.signal_id): SignalValue(value, self._since)
            for spec, value in self._values.items()
        }


def _config(connection: dict[str, Any], signals: list[dict[str, Any]]) -> FactoryConfig:
    """One device D1 on one connection, every signal a `process` signal."""
    return parse_config({
        "schema": "tieragent/config/v1",
        "factory": {"enterprise_id": "E1", "factory_id": "f-1", "industry_code": "C3484"},
        "collection": {"default_interval_s": 0.2},
        "connections": {"link": connection},
        "devices": [{
            "id": "D1", "line": "L1", "process_step": "mill", "kind": "cnc", "digital": True,
            "connection": "link", "unit_id": 1,
            "signals": [{"role": "process", "required": False, **s} for s in signals],
        }],
    })


def _bindings(config: FactoryConfig) -> list[SignalBinding]:
    device = config.devices[0]
    return [
        SignalBinding(device.id, signal.id, config.interval_of(signal), opcua=signal.opcua,
                      modbus=signal.modbus, unit_id=device.unit_id)
        for signal in device.signals
    ]


def _stored(tmp_path: Path, config: FactoryConfig, samples: list[Sample]) -> dict[str, Any]:
    """Ingest the samples into a fresh store, reopen it (a restart) and read the last value
    of every signal back; asserts every stored sample is good."""
    store = Store.open(tmp_path / "agent.db", config)
    store.resume(min(s.received_ts for s in samples))
    result = store.ingest(samples)
    assert result.error is None and result.stored == len(samples)
    assert result.unstorable_by_device == {}
    store.close()
    store = Store.open(tmp_path / "agent.db", config)
    try:
        raw = store.raw_samples(0, 4e9)
    finally:
        store.close()
    assert len(raw) == len(samples)
    assert (raw["quality"] == 0).all()
    return {str(signal): group["value"].iloc[-1] for signal, group in raw.groupby("signal_id")}


def _same(got: Any, expected: int | float) -> bool:
    """Exactly equal, type included (an int must not come back as a rounded float)."""
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(got, float) and math.isnan(got)
    return type(got) is type(expected) and got == expected


async def test_modbus_64_bit_register_extremes_are_stored_exactly(tmp_path: Path) -> None:
    """If the simulator's Modbus face serves uint64 2^64-1 and int64 -2^63 / 2^63-1 in
    4-register values (both word orders), then the store keeps and returns them exactly."""
    cases: dict[str, tuple[int, str, str]] = {  # signal: (value, type, word order)
        "u64_max": (U64_MAX, "uint64", "big"),
        "u64_max_le": (U64_MAX, "uint64", "little"),
        "u64_top_bit": (2**63, "uint64", "big"),
        "i64_min": (I64_MIN, "int64", "big"),
        "i64_max": (I64_MAX, "int64", "little"),
    }
    specs = {
        SignalSpec("D1", "L1", name, "process", "int", "modbus",
                   modbus=ModbusSpec("holding", 4 * index, kind, word_order=order),  # type: ignore[arg-type]
                   unit_id=1): value
        for index, (name, (value, kind, order)) in enumerate(cases.items())
    }
    async with ModbusFace(FixedSource(specs), ModbusFaceConfig(tick_s=0.1)) as face:
        config = _config(
            {"protocol": "modbus", "host": face.host, "port": face.port},
            [{"id": name, "modbus": {"table": "holding", "address": 4 * index, "type": kind,
                                     "word_order": order}}
             for index, (name, (_, kind, order)) in enumerate(cases.items())],
        )
        connection = config.connections["link"]
        assert isinstance(connection, ModbusConnection)
        recorder = Recorder()
        connector = ModbusConnector("link", connection.model_copy(update={"timeout_s": 1.0}),
                                    _bindings(config))
        async with running(connector, recorder):
            await wait_until_async(lambda: all(recorder.latest(name) for name in cases), 10)
    assert all(s.quality == Quality.GOOD for s in recorder.samples)
    stored = _stored(tmp_path, config, recorder.samples)
    for name, (value, _, _) in cases.items():
        assert _same(stored[name], value), (name, stored[name], value)


async def test_opcua_uint64_counter_from_the_simulator_is_stored_exactly(tmp_path: Path) -> None:
    """If the simulator's OPC UA face serves a 64-bit counter (UInt64) at 2^64-1, then the
    store keeps and returns it exactly."""
    spec = SignalSpec("D1", "L1", "count", "good_count", "int", "opcua",
                      opcua_path="Factory/L1/D1/count", counter_bits=64)
    async with OpcUaFace(FixedSource({spec: U64_MAX}), OpcUaFaceConfig(tick_s=0.1)) as face:
        config = _config(
            {"protocol": "opcua", "endpoint": face.endpoint_url},
            [{"id": "count", "opcua": {"node": face.node_id("D1", "count")}}],
        )
        recorder = Recorder()
        connection = config.connections["link"]
        assert isinstance(connection, OpcUaConnection)
        async with running(OpcUaConnector("link", connection, _bindings(config)), recorder):
            await wait_until_async(lambda: recorder.latest("count") is not None, 10)
    assert [s.value for s in recorder.samples] == [U64_MAX] * len(recorder.samples)
    assert _same(_stored(tmp_path, config, recorder.samples)["count"], U64_MAX)


async def test_opcua_int64_uint64_and_non_finite_doubles_are_stored_exactly(
    tmp_path: Path,
) -> None:
    """If a real asyncua server has Int64 -2^63 / 2^63-1, UInt64 2^64-1 and Double NaN,
    +Inf, -Inf and -0.0 variables (the simulator serves no Int64), then the store keeps and
    returns each exactly (NaN as a NaN, not as a missing value)."""
    values: dict[str, tuple[int | float, ua.VariantType]] = {
        "i64_min": (I64_MIN, ua.VariantType.Int64),
        "i64_max": (I64_MAX, ua.VariantType.Int64),
        "u64_max": (U64_MAX, ua.VariantType.UInt64),
        "nan": (math.nan, ua.VariantType.Double),
        "inf": (math.inf, ua.VariantType.Double),
        "minus_inf": (-math.inf, ua.VariantType.Double),
        "minus_zero": (-0.0, ua.VariantType.Double),
    }
    server = OpcUaTestServer(free_port(), {"Seed": 0})
    await server.prepare()  # then add typed variables the helper's int/float guess cannot make
    assert server.server is not None
    for name, (value, variant) in values.items():
        await server.server.nodes.objects.add_variable(
            ua.NodeId.from_string(server.node_id(f"Big/{name}")),
            ua.QualifiedName(name, server.index),
            value, varianttype=variant,
        )
    async with server:
        config = _config(
            {"protocol": "opcua", "endpoint": server.endpoint},
            [{"id": name, "opcua": {"node": server.node_id(f"Big/{name}")}} for name in values],
        )
        recorder = Recorder()
        connection = config.connections["link"]
        assert isinstance(connection, OpcUaConnection)
        async with running(OpcUaConnector("link", connection, _bindings(config)), recorder):
            await wait_until_async(lambda: all(recorder.latest(name) for name in values), 10)
    assert all(s.quality == Quality.GOOD for s in recorder.samples)
    stored = _stored(tmp_path, config, recorder.samples)
    for name, (value, _) in values.items():
        assert _same(stored[name], value), (name, stored[name], value)
    assert math.copysign(1.0, stored["minus_zero"]) == -1.0


async def test_the_agent_runtime_keeps_collecting_a_uint64_register_above_2_63(
    tmp_path: Path,
) -> None:
    """If `tieragent run`'s runtime polls a uint64 register holding 2^64-1 (its first commit
    used to raise OverflowError and stop every device), then the store writer stays alive,
    commits keep coming, and the value and its neighbour are stored exactly."""
    specs = {
        SignalSpec("D1", "L1", "u64", "process", "int", "modbus",
                   modbus=ModbusSpec("holding", 0, "uint64"), unit_id=1): U64_MAX,
        SignalSpec("D1", "L1", "small", "process", "int", "modbus",
                   modbus=ModbusSpec("holding", 4, "uint16"), unit_id=1): 7,
    }
    async with ModbusFace(FixedSource(specs), ModbusFaceConfig(tick_s=0.1)) as face:
        config = _config(
            {"protocol": "modbus", "host": face.host, "port": face.port, "timeout_s": 1.0},
            [{"id": "u64", "modbus": {"table": "holding", "address": 0, "type": "uint64"}},
             {"id": "small", "modbus": {"table": "holding", "address": 4, "type": "uint16"}}],
        )
        store = Store.open(tmp_path / "agent.db", config)
        runtime = Runtime(config, store, build_connectors(config), AgentMetrics())
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run(stop))
        try:
            def committed() -> int:
                # Its own connection: the store belongs to the runtime's writer thread.
                with contextlib.closing(sqlite3.connect(tmp_path / "agent.db")) as db:
                    rows: int = db.execute("SELECT count(*) FROM samples").fetchone()[0]
                return rows

            await wait_until_async(lambda: committed() >= 6, 10)
            assert runtime.state.writer_alive and not task.done()
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
        raw = store.raw_samples(0, 4e9)
        store.close()
    by_signal = raw.groupby("signal_id")["value"].agg(list).to_dict()
    assert by_signal["u64"] and all(_same(v, U64_MAX) for v in by_signal["u64"])
    assert by_signal["small"] and all(_same(v, 7) for v in by_signal["small"])
    assert (raw["quality"] == 0).all()
