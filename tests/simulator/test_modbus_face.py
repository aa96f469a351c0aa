"""The Modbus face, seen by an independent pymodbus client over real TCP on loopback."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from simulator.api import ModbusSpec, SignalSpec
from simulator.modbus_face import ModbusFace, ModbusFaceConfig, encode_registers, register_width
from tests.support.waiting import wait_until_async

DT = AsyncModbusTcpClient.DATATYPE
PYMODBUS_TYPE = {
    "int16": DT.INT16,
    "uint16": DT.UINT16,
    "int32": DT.INT32,
    "uint32": DT.UINT32,
    "int64": DT.INT64,
    "uint64": DT.UINT64,
    "float32": DT.FLOAT32,
    "float64": DT.FLOAT64,
    "string": DT.STRING,
}


def decode(spec: ModbusSpec, words: list[int]) -> Any:
    """Decode with pymodbus' own converter (independent of the face's encoder)."""
    if spec.byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    if spec.type == "bool":
        return bool(words[0])
    raw = AsyncModbusTcpClient.convert_from_registers(
        words, PYMODBUS_TYPE[spec.type], word_order=spec.word_order
    )
    if spec.type == "string":
        return str(raw).rstrip("\0")
    if spec.scale != 1.0 or spec.offset != 0.0:
        return float(raw) * spec.scale + spec.offset  # type: ignore[arg-type]
    return raw


@pytest.fixture
async def face(modbus_source: Any) -> AsyncIterator[ModbusFace]:
    async with ModbusFace(modbus_source, ModbusFaceConfig(tick_s=0.05)) as running:
        yield running


@pytest.fixture
async def client(face: ModbusFace) -> AsyncIterator[AsyncModbusTcpClient]:
    modbus = AsyncModbusTcpClient("127.0.0.1", port=face.port, timeout=2, retries=0)
    assert await modbus.connect()
    yield modbus
    modbus.close()


async def read(client: AsyncModbusTcpClient, spec: SignalSpec, count: int | None = None) -> Any:
    assert spec.modbus is not None
    assert spec.unit_id is not None
    address, unit = spec.modbus.address, spec.unit_id
    width = count or register_width(spec.modbus)
    readers = {
        "coil": client.read_coils,
        "discrete_input": client.read_discrete_inputs,
        "holding": client.read_holding_registers,
        "input": client.read_input_registers,
    }
    return await readers[spec.modbus.table](address, count=width, device_id=unit)


@pytest.mark.parametrize(
    ("spec", "value"),
    [
        (ModbusSpec("holding", 0, "int16"), -2),
        (ModbusSpec("holding", 0, "uint32", word_order="little"), 0x12345678),
        (ModbusSpec("holding", 0, "int64", byte_order="little"), -(2**50) + 3),
        (ModbusSpec("holding", 0, "uint64", word_order="little", byte_order="little"), 2**63 + 11),
        (ModbusSpec("holding", 0, "float32", word_order="little"), 1.5),
        (ModbusSpec("input", 0, "float64"), -123.456),
        (ModbusSpec("holding", 0, "uint16", scale=0.1), 12.3),
        (ModbusSpec("holding", 0, "int32", scale=0.01, offset=100.0), 42.42),
        (ModbusSpec("holding", 0, "string", length=3), "OP-9"),
        (ModbusSpec("holding", 0, "string", length=2, word_order="little"), "ABCD"),
    ],
    ids=lambda v: (
        v.type + "/" + v.word_order + "/" + v.byte_order if isinstance(v, ModbusSpec) else ""
    ),
)
def test_encoding_round_trips_through_pymodbus_decoding(spec: ModbusSpec, value: Any) -> None:
    """If a value is encoded for a register spec, then pymodbus' decoder (with the same
    word order, bytes swapped for byte_order little) gives the value back."""
    words = encode_registers(spec, value)
    assert len(words) == register_width(spec)
    assert all(0 <= w <= 0xFFFF for w in words)
    decoded = decode(spec, words)
    if isinstance(value, float):
        assert decoded == pytest.approx(value, rel=1e-6, abs=1e-6)
    else:
        assert decoded == value


def test_byte_order_little_swaps_bytes_within_each_word() -> None:
    """If byte_order is little, then each word's two bytes are swapped (CDAB vs ABCD)."""
    big = encode_registers(ModbusSpec("holding", 0, "float32"), 1.0)
    swapped = encode_registers(ModbusSpec("holding", 0, "float32", byte_order="little"), 1.0)
    assert big == list(struct.unpack(">HH", struct.pack(">f", 1.0)))
    assert swapped == [0x803F, 0x0000]


async def test_client_reads_every_signal_as_the_source_says(
    face: ModbusFace, client: AsyncModbusTcpClient, modbus_source: Any
) -> None:
    """If a client reads each signal's registers or bits, then they decode to the source."""
    truth = modbus_source.values_at(0)
    for spec in face.specs:
        assert spec.modbus is not None
        response = await read(client, spec)
        assert not response.isError(), (spec.signal_id, response)
        expected = truth[(spec.device_id, spec.signal_id)].value
        if spec.modbus.table in ("coil", "discrete_input"):
            assert response.bits[0] is bool(expected)
            continue
        decoded = decode(spec.modbus, response.registers)
        if isinstance(expected, float):
            assert decoded == pytest.approx(expected, abs=spec.modbus.scale / 2 + 1e-4)
        else:
            assert decoded == expected


async def test_values_refresh_every_tick(
    face: ModbusFace, client: AsyncModbusTcpClient, modbus_source: Any
) -> None:
    """If the source's counter moves, then the register shows it within a few ticks."""
    spec = face.spec("PRESS-01", "good_count")
    modbus_source.set("PRESS-01", "good_count", 123_456_999)

    async def updated() -> bool:
        assert spec.modbus is not None
        return bool(decode(spec.modbus, (await read(client, spec)).registers) == 123_456_999)

    await wait_until_async(updated, timeout=2)


async def test_request_counter_counts_per_unit_and_function_code(
    face: ModbusFace, client: AsyncModbusTcpClient
) -> None:
    """If a client reads one block of 24 registers on unit 3 twice and unit 4 once, then
    the server counts exactly those requests, per unit and function code."""
    for _ in range(2):
        assert not (await client.read_holding_registers(0, count=24, device_id=3)).isError()
    assert not (await client.read_input_registers(0, count=11, device_id=4)).isError()
    assert face.request_count(3, 3) == 2
    assert face.request_count(4, 4) == 1
    assert face.request_count(3, 4) == 0


async def test_real_device_exceptions(face: ModbusFace, client: AsyncModbusTcpClient) -> None:
    """If a client reads past a table, an unknown unit or writes, then it gets 0x02, 0x0B
    and 0x01 as from a real device/gateway, and gaps inside a table read as 0; the face
    counts each exception it sends (an injected one too) per unit and code."""
    past_end = await client.read_holding_registers(0, count=25, device_id=3)
    assert past_end.isError() and past_end.exception_code == 0x02
    unknown_unit = await client.read_holding_registers(0, count=1, device_id=99)
    assert unknown_unit.isError() and unknown_unit.exception_code == 0x0B
    write = await client.write_register(0, 1, device_id=3)
    assert write.isError() and write.exception_code == 0x01
    gap = await client.read_holding_registers(16, count=4, device_id=3)
    assert gap.registers == [0, 0, 0, 0]
    assert face.exception_count(3, 0x02) == 1 and face.exception_count(3, 0x01) == 1
    face.set_exception(3, "holding", 17, 0x06)
    busy = await client.read_holding_registers(16, count=4, device_id=3)
    assert busy.isError() and busy.exception_code == 0x06
    assert face.exception_count(3, 0x06) == 1 and face.exception_count(3, 0x02) == 1


def test_overlapping_registers_are_refused(modbus_source: Any) -> None:
    """If two signals share a register, then the face refuses to start and names both."""
    from simulator.api import SignalSpec

    clash = SignalSpec(
        "PRESS-01",
        "L2",
        "clash",
        "process",
        "int",
        "modbus",
        modbus=ModbusSpec("holding", 2, "uint16"),
        unit_id=3,
    )
    modbus_source._specs.append(clash)
    with pytest.raises(ValueError, match="clash overlaps PRESS-01/good_count"):
        ModbusFace(modbus_source, ModbusFaceConfig())


async def test_demo_factory_registers_match_the_live_model(demo_live: Any) -> None:
    """If the demo factory is served and frozen, then every Modbus signal decodes to the
    model's value (floats within the register's resolution)."""
    async with ModbusFace(demo_live, ModbusFaceConfig(tick_s=0.05)) as face:
        for device in {s.device_id for s in face.specs}:
            demo_live.freeze(device)
        await asyncio.sleep(0.2)
        truth = demo_live.values_at(time.time())
        modbus = AsyncModbusTcpClient("127.0.0.1", port=face.port, timeout=2, retries=0)
        assert await modbus.connect()
        try:
            for spec in face.specs:
                assert spec.modbus is not None
                response = await read(modbus, spec)
                assert not response.isError(), spec
                expected = truth[(spec.device_id, spec.signal_id)].value
                if spec.modbus.table in ("coil", "discrete_input") or spec.modbus.type == "bool":
                    got = (
                        response.bits[0]
                        if hasattr(response, "bits") and response.bits
                        else response.registers[0]
                    )
                    assert bool(got) is bool(expected), spec
                elif spec.modbus.type.startswith("float") or spec.modbus.scale != 1.0:
                    tolerance = max(spec.modbus.scale / 2, abs(float(expected)) * 1e-6) + 1e-9
                    assert decode(spec.modbus, response.registers) == pytest.approx(
                        expected, abs=tolerance
                    ), spec
                else:
                    assert decode(spec.modbus, response.registers) == expected, spec
        finally:
            modbus.close()
