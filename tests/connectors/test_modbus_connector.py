"""The Modbus connector against a real pymodbus server: values, coalescing, faults."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest
from connector_helpers import ModbusTestServer, Recorder, running
from pymodbus.client import AsyncModbusTcpClient

from connectors.base import LinkState, SignalBinding
from connectors.config import ModbusAddress, ModbusConnection, ModbusTable, ModbusType
from connectors.modbus import ModbusConnector
from connectors.sample import Quality, TimestampOrigin
from tests.support.fault_proxy import FaultProxy
from tests.support.ports import free_port
from tests.support.waiting import wait_until_async

DT = AsyncModbusTcpClient.DATATYPE


def _conn(port: int, **overrides: Any) -> ModbusConnection:
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "timeout_s": 0.3,
        "retries": 1,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.3,
    }
    settings.update(overrides)
    return ModbusConnection(**settings)


def _bind(signal: str, interval: float = 0.2, unit: int = 1, **address: Any) -> SignalBinding:
    return SignalBinding(
        device_id="PLC-1",
        signal_id=signal,
        interval_s=interval,
        modbus=ModbusAddress(**address),
        unit_id=unit,
    )


def _regs(value: Any, datatype: Any, word_order: str = "big") -> list[int]:
    return AsyncModbusTcpClient.convert_to_registers(value, datatype, word_order=word_order)  # type: ignore[arg-type]


def _swap_bytes(registers: list[int]) -> list[int]:
    return [((r & 0xFF) << 8) | (r >> 8) for r in registers]


def _place(table: dict[int, int], at: int, registers: list[int]) -> None:
    for offset, register in enumerate(registers):
        table[at + offset] = register


# (signal, address settings, registers at that address, expected value)
H = ModbusTable.HOLDING
TYPE_CASES: list[tuple[str, dict[str, Any], list[int], Any]] = [
    ("i16", {"type": ModbusType.INT16}, _regs(-1234, DT.INT16), -1234),
    ("u16", {"type": ModbusType.UINT16}, [65000], 65000),
    ("i32", {"type": ModbusType.INT32}, _regs(-70000, DT.INT32), -70000),
    ("u32_cdab", {"type": ModbusType.UINT32, "word_order": "little"},
     _regs(3_000_000_000, DT.UINT32, "little"), 3_000_000_000),
    ("i64", {"type": ModbusType.INT64}, _regs(-(2**40), DT.INT64), -(2**40)),
    ("u64_dcba", {"type": ModbusType.UINT64, "word_order": "little", "byte_order": "little"},
     _swap_bytes(_regs(2**63 + 5, DT.UINT64, "little")), 2**63 + 5),
    ("f32_badc", {"type": ModbusType.FLOAT32, "byte_order": "little"},
     _swap_bytes(_regs(12.5, DT.FLOAT32)), 12.5),
    ("f64", {"type": ModbusType.FLOAT64}, _regs(-0.125, DT.FLOAT64), -0.125),
    ("text", {"type": ModbusType.STRING, "length": 4}, [*_regs("CNC-01", DT.STRING), 0], "CNC-01"),
    ("flag", {"type": ModbusType.BOOL}, [1], True),
    ("temp", {"type": ModbusType.INT16, "scale": 0.1, "offset": -40.0}, [655], 25.5),
]  # fmt: skip


async def test_all_types_orders_and_tables_decode() -> None:
    """If a server holds every supported type in every order and table, then each signal's
    sample carries the exact value, good quality and the receive time as timestamp."""
    holding: dict[int, int] = {}
    bindings = []
    address = 0
    for signal, settings, registers, _ in TYPE_CASES:
        _place(holding, address, registers)
        bindings.append(_bind(signal, table=H, address=address, **settings))
        address += len(registers) + 1  # one invalid register between values
    bindings += [
        _bind("ir", table=ModbusTable.INPUT, address=7, type=ModbusType.UINT16),
        _bind("coil", table=ModbusTable.COIL, address=2, type=ModbusType.BOOL),
        _bind("di", table=ModbusTable.DISCRETE_INPUT, address=1, type=ModbusType.BOOL),
    ]
    expected = {signal: value for signal, _, _, value in TYPE_CASES}
    expected.update({"ir": 4242, "coil": True, "di": True})
    port = free_port()
    server = ModbusTestServer(
        port,
        holding=holding,
        input_registers={7: 4242},
        coils={0: False, 1: False, 2: True},
        discrete_inputs={0: False, 1: True},
    )
    connector = ModbusConnector("plc", _conn(port, max_gap=0), bindings)
    recorder = Recorder()
    async with server, running(connector, recorder):
        await wait_until_async(lambda: all(recorder.latest(s) for s in expected), 5)
    for signal, value in expected.items():
        sample = recorder.latest(signal)
        assert sample is not None and sample.quality == Quality.GOOD, signal
        assert (
            sample.value == pytest.approx(value)
            if isinstance(value, float)
            else sample.value == value
        )
        assert sample.ts_origin == TimestampOrigin.RECEIVED and sample.status == 0
    assert recorder.states()[:2] == [LinkState.CONNECTING, LinkState.CONNECTED]


async def test_server_sees_exactly_the_planned_requests() -> None:
    """If 60 signals are polled once, then the server receives exactly the planner's requests:
    the minimum number allowed by max_registers_per_read and max_gap."""
    holding = {a: a for a in range(0, 300)}
    bindings = [
        _bind(f"s{i}", interval=3600.0, table=H, address=i * 5, type=ModbusType.UINT32)
        for i in range(60)
    ]
    port = free_port()
    connector = ModbusConnector("plc", _conn(port, max_registers_per_read=50, max_gap=3), bindings)
    plan = connector.plan(3600.0)
    assert len(plan) == math.ceil(300 / 50)  # 60 values, 5 registers apart, 50 per read
    recorder = Recorder()
    async with ModbusTestServer(port, holding=holding) as server, running(connector, recorder):
        await wait_until_async(lambda: len(recorder.samples) >= 60, 5)
        await asyncio.sleep(0.1)
    assert server.requests == [(3, block.start, block.count) for block in plan]
    assert all(s.quality == Quality.GOOD for s in recorder.samples)
    assert recorder.latest("s7") is not None and recorder.latest("s7").value == (35 << 16) | 36  # type: ignore[union-attr]


async def test_exception_reply_isolates_the_bad_address() -> None:
    """If one bound address is invalid on the device, then only that signal is bad (with the
    exception code) and, from the next poll on, the others are read with no exception."""
    holding = {a: 100 + a for a in range(12) if a != 5}  # address 5 does not exist
    bindings = [_bind(f"r{a}", table=H, address=a, type=ModbusType.UINT16) for a in range(12)]
    port = free_port()
    connector = ModbusConnector("plc", _conn(port), bindings)
    recorder = Recorder()
    async with ModbusTestServer(port, holding=holding) as server, running(connector, recorder):
        await wait_until_async(lambda: len(recorder.batches) >= 3, 5)
    first, *later = recorder.batches[:3]
    by_signal = {s.signal_id: s for s in first}
    assert by_signal["r5"].quality == Quality.BAD and by_signal["r5"].status == 2
    assert by_signal["r5"].value is None
    for a in range(12):
        if a != 5:
            assert by_signal[f"r{a}"].quality == Quality.GOOD
            assert by_signal[f"r{a}"].value == 100 + a
    # Later polls: the bad signal alone, the others in blocks that avoid it.
    plan = connector.plan(0.2)
    assert sorted((b.start, b.count) for b in plan) == [(0, 5), (5, 1), (6, 6)]
    assert len(later) == 2 and all(len(batch) == 12 for batch in later)
    assert server.requests[-3:] == [(3, 0, 5), (3, 6, 6), (3, 5, 1)]


async def test_invalid_gap_is_learned_and_avoided() -> None:
    """If an unused address bridged by coalescing is invalid, then after one bisection the
    reads are split there and every later poll is free of exception replies."""
    holding = {0: 1, 1: 2, 4: 5, 5: 6}  # 2 and 3 are unused and invalid
    bindings = [_bind(f"r{a}", table=H, address=a) for a in (0, 1, 4, 5)]
    port = free_port()
    connector = ModbusConnector("plc", _conn(port, max_gap=4), bindings)
    assert len(connector.plan(0.2)) == 1
    recorder = Recorder()
    async with ModbusTestServer(port, holding=holding), running(connector, recorder):
        await wait_until_async(lambda: len(recorder.batches) >= 3, 5)
    assert all(s.quality == Quality.GOOD for s in recorder.samples)
    assert [(b.start, b.count) for b in connector.plan(0.2)] == [(0, 2), (4, 2)]
    assert connector.stats.exception_replies == 1


async def test_F4_rst_and_restart_resume_within_reconnect_max_plus_1_s_without_busy_loop(
) -> None:
    """If the link is reset and later the server restarts, then the connector reports the gap,
    uses under 5 % of a core while the server is down (no busy loop, pymodbus #1794), and
    reconnects by itself: good samples flow again within reconnect_max_s + 1 s of the
    server's return."""
    port = free_port()
    server = ModbusTestServer(port, holding={0: 7})
    recorder = Recorder()
    await server.start()
    async with FaultProxy("127.0.0.1", port) as proxy:
        connector = ModbusConnector("plc", _conn(proxy.port), [_bind("v", table=H, address=0)])
        async with running(connector, recorder):
            await wait_until_async(lambda: len(recorder.samples) >= 2, 5)
            proxy.reset()
            # The retry runs on a fresh connection, so a single reset costs no poll.
            await wait_until_async(lambda: connector.stats.connects >= 2, 5)
            count = len(recorder.samples)
            await wait_until_async(lambda: len(recorder.samples) > count + 1, 5)
            await server.stop()
            await wait_until_async(lambda: LinkState.DISCONNECTED in recorder.states(), 5)
            cpu_before, wall_before = time.process_time(), time.monotonic()
            await asyncio.sleep(3.0)
            down_cpu = (time.process_time() - cpu_before) / (time.monotonic() - wall_before)
            stopped_at = len(recorder.samples)
            await server.start()
            took = await wait_until_async(lambda: len(recorder.samples) > stopped_at, 5)
    await server.stop()
    assert down_cpu < 0.05, down_cpu
    assert took <= _conn(port).reconnect_max_s + 1.0, took
    assert recorder.states()[-2:] == [LinkState.DISCONNECTED, LinkState.CONNECTED]
    assert "Modbus server" in recorder.links[-2].reason or "read of" in recorder.links[-2].reason
    assert all(s.value == 7 and s.quality == Quality.GOOD for s in recorder.samples)


async def test_F5_late_replies_are_never_used() -> None:
    """If replies arrive after the timeout, then they are never taken as the answer to a later
    request: every good sample carries its own address's value (F5)."""
    port = free_port()
    holding = {0: 111, 50: 222}
    bindings = [_bind("a", table=H, address=0), _bind("b", table=H, address=50)]
    recorder = Recorder()
    async with ModbusTestServer(port, holding=holding), FaultProxy("127.0.0.1", port) as proxy:
        connector = ModbusConnector("plc", _conn(proxy.port, max_gap=0), bindings)
        proxy.delay(0.2)  # round trip 0.4 s > timeout 0.3 s
        async with running(connector, recorder):
            await wait_until_async(lambda: connector.stats.timeouts >= 4, 5)
            proxy.delay(0.0)
            await wait_until_async(
                lambda: len(recorder.of("a")) >= 2 and len(recorder.of("b")) >= 2, 5
            )
    good = [s for s in recorder.samples if s.quality == Quality.GOOD]
    assert good and all(s.value == {"a": 111, "b": 222}[s.signal_id] for s in good)


def _rewrite_reply(new_tid: int) -> Any:
    def rewrite(chunk: bytes) -> bytes:
        frame = bytearray(chunk)
        frame[0:2] = new_tid.to_bytes(2, "big")
        if len(frame) > 9 and frame[7] in (3, 4):
            frame[9:] = b"\xde\xad" * ((len(frame) - 9) // 2)  # poison the values too
        return bytes(frame)

    return rewrite


@pytest.mark.parametrize("new_tid", [0, 4242], ids=["tid-zero", "tid-other"])
async def test_F6_rewritten_transaction_ids_are_never_used(new_tid: int) -> None:
    """If a reply carries another transaction id (even 0, which pymodbus itself accepts), then
    its values are never used; once replies are honest again, good values flow (F6)."""
    port = free_port()
    recorder = Recorder()
    async with ModbusTestServer(port, holding={0: 7}), FaultProxy("127.0.0.1", port) as proxy:
        connector = ModbusConnector("plc", _conn(proxy.port), [_bind("v", table=H, address=0)])
        proxy.rewrite("downstream", _rewrite_reply(new_tid))
        async with running(connector, recorder):
            await wait_until_async(
                lambda: connector.stats.mismatched_replies + connector.stats.timeouts >= 3, 5
            )
            assert recorder.samples == []
            proxy.rewrite("downstream", None)
            await wait_until_async(lambda: len(recorder.samples) >= 2, 5)
    assert all(s.value == 7 and s.quality == Quality.GOOD for s in recorder.samples)
    if new_tid == 0:
        assert connector.stats.mismatched_replies >= 1


def test_bad_configuration_is_refused_at_construction() -> None:
    """If a binding cannot be read (no unit id, value wider than a read), then the connector
    refuses to start with a sentence naming the signal or the limit."""
    with pytest.raises(ValueError, match="PLC-1/v has no Modbus unit id"):
        ModbusConnector(
            "plc",
            _conn(1502),
            [SignalBinding("PLC-1", "v", 1.0, modbus=ModbusAddress(table=H, address=0))],
        )
    wide = _bind("s", table=H, address=0, type=ModbusType.STRING, length=20)
    with pytest.raises(ValueError, match="exceeds the per-read limit of 10"):
        ModbusConnector("plc", _conn(1502, max_registers_per_read=10), [wide])
