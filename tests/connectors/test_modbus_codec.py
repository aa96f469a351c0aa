"""Modbus decoding and read coalescing: pure functions, checked against pymodbus and by hand."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient

from connectors.config import ModbusAddress, ModbusTable, ModbusType
from connectors.modbus_codec import (
    DecodeError,
    Hole,
    Order,
    PlanError,
    ReadBlock,
    Span,
    decode_registers,
    decode_value,
    encode_registers,
    plan_reads,
    split_block,
)

DATATYPE = AsyncModbusTcpClient.DATATYPE
PYMODBUS_TYPE = {
    ModbusType.INT16: DATATYPE.INT16,
    ModbusType.UINT16: DATATYPE.UINT16,
    ModbusType.INT32: DATATYPE.INT32,
    ModbusType.UINT32: DATATYPE.UINT32,
    ModbusType.INT64: DATATYPE.INT64,
    ModbusType.UINT64: DATATYPE.UINT64,
    ModbusType.FLOAT32: DATATYPE.FLOAT32,
    ModbusType.FLOAT64: DATATYPE.FLOAT64,
}
SAMPLE_VALUE: dict[ModbusType, int | float] = {
    ModbusType.INT16: -12345,
    ModbusType.UINT16: 54321,
    ModbusType.INT32: -123456789,
    ModbusType.UINT32: 4_000_000_000,
    ModbusType.INT64: -(2**62) + 12345,
    ModbusType.UINT64: 2**63 + 987654321,
    ModbusType.FLOAT32: 3.5,
    ModbusType.FLOAT64: -1234.0625,
}


@pytest.mark.parametrize("word_order", ["big", "little"])
@pytest.mark.parametrize("value_type", list(PYMODBUS_TYPE), ids=lambda t: t.value)
def test_numbers_decode_like_pymodbus(value_type: ModbusType, word_order: Order) -> None:
    """If registers come from pymodbus' own encoder, then we decode the same value it does."""
    value = SAMPLE_VALUE[value_type]
    registers = AsyncModbusTcpClient.convert_to_registers(
        value, PYMODBUS_TYPE[value_type], word_order=word_order
    )
    expected = AsyncModbusTcpClient.convert_from_registers(
        registers, PYMODBUS_TYPE[value_type], word_order=word_order
    )
    assert decode_registers(registers, value_type, word_order) == expected == value


# 0x12345678 in the four classic layouts: ABCD, CDAB (word swap), BADC (byte swap), DCBA.
UINT32_LAYOUTS = [
    ("big", "big", [0x1234, 0x5678]),
    ("little", "big", [0x5678, 0x1234]),
    ("big", "little", [0x3412, 0x7856]),
    ("little", "little", [0x7856, 0x3412]),
]


@pytest.mark.parametrize(("word_order", "byte_order", "registers"), UINT32_LAYOUTS)
def test_word_and_byte_order_by_hand(
    word_order: str, byte_order: str, registers: list[int]
) -> None:
    """If a device uses any of the four layouts, then 0x12345678 still decodes to itself."""
    got = decode_registers(registers, ModbusType.UINT32, word_order, byte_order)
    assert got == 0x12345678
    assert encode_registers(0x12345678, ModbusType.UINT32, word_order, byte_order) == registers


def test_float32_byte_swapped_by_hand() -> None:
    """If a float32 is byte-swapped inside each register, then it still decodes."""
    a, b, c, d = struct.pack(">f", 1.5)  # 3F C0 00 00
    registers = [(b << 8) | a, (d << 8) | c]
    assert decode_registers(registers, ModbusType.FLOAT32, "big", "little") == 1.5


def test_float64_fully_reversed_by_hand() -> None:
    """If all eight bytes of a float64 come least significant first, then it still decodes."""
    raw = struct.pack("<d", 2.75)
    registers = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, 8, 2)]
    assert decode_registers(registers, ModbusType.FLOAT64, "little", "little") == 2.75


@pytest.mark.parametrize(
    ("word_order", "byte_order", "registers"),
    [
        ("big", "big", [0x4142, 0x4344, 0x4500]),
        ("big", "little", [0x4241, 0x4443, 0x0045]),
        ("little", "big", [0x4500, 0x4344, 0x4142]),
    ],
)
def test_strings(word_order: Order, byte_order: Order, registers: list[int]) -> None:
    """If a string is stored in any order, then it decodes without the NUL padding."""
    assert decode_registers(registers, ModbusType.STRING, word_order, byte_order) == "ABCDE"


def test_string_matches_pymodbus_and_input_is_untouched() -> None:
    """If pymodbus encodes a string, then we decode it the same and never mutate the input."""
    registers = AsyncModbusTcpClient.convert_to_registers("CNC-01", DATATYPE.STRING)
    copy = list(registers)
    assert decode_registers(registers, ModbusType.STRING, "little") == decode_registers(
        list(reversed(copy)), ModbusType.STRING
    )
    assert decode_registers(registers, ModbusType.STRING) == "CNC-01"
    assert registers == copy


@given(
    value_type=st.sampled_from(list(PYMODBUS_TYPE)),
    word_order=st.sampled_from(["big", "little"]),
    byte_order=st.sampled_from(["big", "little"]),
    data=st.data(),
)
@settings(max_examples=300, deadline=None)
def test_encode_decode_roundtrip(
    value_type: ModbusType, word_order: Order, byte_order: Order, data: st.DataObject
) -> None:
    """If a value is encoded in any layout, then decoding that layout returns it exactly."""
    bits = {ModbusType.INT16: 16, ModbusType.INT32: 32, ModbusType.INT64: 64}
    if value_type in bits:
        n = bits[value_type]
        value: int | float = data.draw(st.integers(-(2 ** (n - 1)), 2 ** (n - 1) - 1))
    elif value_type in (ModbusType.UINT16, ModbusType.UINT32, ModbusType.UINT64):
        n = {ModbusType.UINT16: 16, ModbusType.UINT32: 32, ModbusType.UINT64: 64}[value_type]
        value = data.draw(st.integers(0, 2**n - 1))
    else:
        width: Literal[32, 64] = 32 if value_type == ModbusType.FLOAT32 else 64
        value = data.draw(st.floats(allow_nan=False, allow_infinity=False, width=width))
    registers = encode_registers(value, value_type, word_order, byte_order)
    assert decode_registers(registers, value_type, word_order, byte_order) == value


def test_wrong_register_count_is_a_decode_error() -> None:
    """If a 32-bit type gets one register, then decoding raises DecodeError (not struct.error)."""
    with pytest.raises(DecodeError):
        decode_registers([1], ModbusType.UINT32)


def test_scale_offset_and_nan() -> None:
    """If scale/offset are set, then numbers are scaled; a NaN float is refused as no value."""
    address = ModbusAddress(
        table=ModbusTable.HOLDING, address=0, type=ModbusType.INT16, scale=0.1, offset=-5
    )
    assert decode_value(address, [250]) == pytest.approx(20.0)
    plain = ModbusAddress(table=ModbusTable.HOLDING, address=0, type=ModbusType.UINT32)
    assert decode_value(plain, [0, 7]) == 7 and isinstance(decode_value(plain, [0, 7]), int)
    nan = ModbusAddress(table=ModbusTable.INPUT, address=0, type=ModbusType.FLOAT32)
    with pytest.raises(DecodeError):
        decode_value(nan, [0x7FC0, 0x0000])
    coil = ModbusAddress(table=ModbusTable.COIL, address=3, type=ModbusType.BOOL)
    assert decode_value(coil, [True]) is True


# --- planner ------------------------------------------------------------------------------


def _spans(
    layout: Sequence[tuple[int, int]], table: ModbusTable = ModbusTable.HOLDING
) -> list[Span]:
    return [Span(i, 1, table, address, width) for i, (address, width) in enumerate(layout)]


def test_plan_merges_neighbours_and_bridges_small_gaps() -> None:
    """If signals sit close together, then one request reads them; a big gap splits them."""
    spans = _spans([(0, 2), (2, 1), (5, 2), (40, 1)])
    blocks = plan_reads(spans, max_registers=125, max_bits=2000, max_gap=3)
    assert [(b.start, b.count) for b in blocks] == [(0, 7), (40, 1)]


def test_plan_respects_register_limit_and_groups_by_unit_and_table() -> None:
    """If a block would exceed the limit, then it is split; units and tables never mix."""
    spans = [
        Span(0, 1, ModbusTable.HOLDING, 0, 4),
        Span(1, 1, ModbusTable.HOLDING, 4, 4),
        Span(2, 1, ModbusTable.HOLDING, 8, 4),
        Span(3, 2, ModbusTable.HOLDING, 0, 1),
        Span(4, 1, ModbusTable.INPUT, 0, 1),
        Span(5, 1, ModbusTable.COIL, 0, 1),
        Span(6, 1, ModbusTable.COIL, 1, 1),
    ]
    blocks = plan_reads(spans, max_registers=8, max_bits=2000, max_gap=0)
    summary = [(b.unit, b.table.value, b.start, b.count) for b in blocks]
    assert summary == [
        (1, "coil", 0, 2),
        (1, "holding", 0, 8),
        (1, "holding", 8, 4),
        (1, "input", 0, 1),
        (2, "holding", 0, 1),
    ]


def test_plan_refuses_a_value_wider_than_the_limit() -> None:
    """If one string is wider than the per-read limit, then planning fails with a clear error."""
    with pytest.raises(PlanError, match="exceeds the per-read limit of 10"):
        plan_reads(_spans([(0, 20)]), max_registers=10, max_bits=2000, max_gap=0)


def _feasible(group: Sequence[Span], limit: int, max_gap: int, holes: Sequence[Hole] = ()) -> bool:
    end = group[0].end
    for span in group[1:]:
        if span.address - end > max_gap:
            return False
        end = max(end, span.end)
    if len(group) > 1 and any(h.start < end and h.end > group[0].address for h in holes):
        return False
    return end - group[0].address <= limit


def _optimum(spans: Sequence[Span], limit: int, max_gap: int, holes: Sequence[Hole]) -> int:
    """Brute-force minimum number of requests (dynamic programming over sorted runs)."""
    ordered = sorted(spans, key=lambda s: s.address)
    best = [0] + [10**9] * len(ordered)
    for i in range(1, len(ordered) + 1):
        for j in range(i):
            if _feasible(ordered[j:i], limit, max_gap, holes):
                best[i] = min(best[i], best[j] + 1)
    return best[-1]


@st.composite
def _layouts(draw: st.DrawFn) -> list[Span]:
    count = draw(st.integers(1, 14))
    address = draw(st.integers(0, 20))
    layout = []
    for _ in range(count):
        width = draw(st.sampled_from([1, 1, 2, 4]))
        layout.append((address, width))
        address += width + draw(st.integers(0, 12))
    return _spans(layout)


@given(
    spans=_layouts(),
    limit=st.integers(4, 40),
    max_gap=st.integers(0, 10),
    hole_at=st.lists(st.integers(0, 120), max_size=3),
)
@settings(max_examples=400, deadline=None)
def test_plan_is_minimal_and_covers_everything(
    spans: list[Span], limit: int, max_gap: int, hole_at: list[int]
) -> None:
    """If signals are laid out anyhow, then the plan uses the minimum number of requests, covers
    every signal exactly once, and no request breaks the size, gap or hole limits."""
    used = {a for s in spans for a in range(s.address, s.end)}
    holes = [Hole(1, ModbusTable.HOLDING, a, a + 1) for a in hole_at if a not in used]
    blocks = plan_reads(spans, max_registers=limit, max_bits=2000, max_gap=max_gap, avoid=holes)
    assert len(blocks) == _optimum(spans, limit, max_gap, holes)
    covered = sorted(m.key for b in blocks for m in b.members)
    assert covered == sorted(s.key for s in spans)
    for block in blocks:
        assert block.count <= limit
        members = sorted(block.members, key=lambda s: s.address)
        assert _feasible(members, limit, max_gap, holes)
        for member in block.members:
            assert block.start <= member.address and member.end <= block.start + block.count


def test_split_block_halves_members() -> None:
    """If a block is split, then each half is a valid block covering half of the members."""
    (block,) = plan_reads(
        _spans([(0, 1), (1, 2), (3, 1), (9, 4)]), max_registers=125, max_bits=2000, max_gap=8
    )
    left, right = split_block(block)
    assert isinstance(left, ReadBlock)
    assert [(left.start, left.count), (right.start, right.count)] == [(0, 3), (3, 10)]
    with pytest.raises(ValueError):
        split_block(split_block(left)[0])
