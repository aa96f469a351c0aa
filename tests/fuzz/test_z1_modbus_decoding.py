"""Z1: fuzzing Modbus register decoding (connectors/modbus_codec.py, docs/reliability.md §c).
Declared errors: `DecodeError` from decoding, `PlanError` from read planning. A device's
reply reaches `decode_value` only with the count of values it was asked for
(connectors/modbus.py checks that first), so those inputs hold exactly a span's width of
16-bit registers (or bits); `decode_registers` itself takes any list of any integers."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from connectors.config import ModbusAddress, ModbusTable, ModbusType
from connectors.modbus_codec import (
    BIT_TABLES,
    DecodeError,
    PlanError,
    Span,
    decode_registers,
    decode_value,
    plan_reads,
    slice_for,
)
from tests.fuzz.limits import traced, within_memory
from tests.fuzz.profiles import PROFILE

orders = st.sampled_from(("big", "little"))


@st.composite
def addresses(draw: st.DrawFn) -> ModbusAddress:
    table = draw(st.sampled_from(list(ModbusTable)))
    value_type = ModbusType.BOOL if table in BIT_TABLES else draw(st.sampled_from(list(ModbusType)))
    return ModbusAddress(
        table=table, address=draw(st.integers(0, 65535)), type=value_type,
        word_order=draw(orders), byte_order=draw(orders),
        length=draw(st.integers(1, 125)) if value_type == ModbusType.STRING else None,
        scale=draw(st.floats(allow_nan=False)), offset=draw(st.floats(allow_nan=False)),
    )


@PROFILE
@given(
    registers=st.lists(st.integers(), max_size=130),
    value_type=st.sampled_from(list(ModbusType)), word_order=orders, byte_order=orders,
)
def test_Z1_modbus_register_decoding_only_decode_errors(
    registers: list[int], value_type: ModbusType, word_order: str, byte_order: str
) -> None:
    """If any list of integers is decoded as any type, then only DecodeError is raised."""
    with traced(), contextlib.suppress(DecodeError):
        within_memory(lambda: decode_registers(
            registers, value_type, word_order, byte_order  # type: ignore[arg-type]
        ))


@PROFILE
@given(data=st.data(), members=st.lists(addresses(), min_size=1, max_size=12),
       max_gap=st.integers(0, 200))
def test_Z1_modbus_reply_decoding_only_declared_errors(
    data: st.DataObject, members: list[ModbusAddress], max_gap: int
) -> None:
    """If the signals of a poll are planned into reads and each reply holds any values of the
    asked count, then planning raises only PlanError and decoding only DecodeError."""
    spans = [Span(key, 1, a.table, a.address, a.width) for key, a in enumerate(members)]
    with traced():
        try:
            blocks = within_memory(
                lambda: plan_reads(spans, max_registers=125, max_bits=2000, max_gap=max_gap)
            )
        except PlanError:
            return
        for block in blocks:
            values = data.draw(
                st.lists(st.booleans(), min_size=block.count, max_size=block.count)
                if block.table in BIT_TABLES
                else st.lists(st.integers(0, 0xFFFF), min_size=block.count, max_size=block.count)
            )
            for span in block.members:
                with contextlib.suppress(DecodeError):
                    within_memory(
                        lambda span=span, block=block, values=values: decode_value(
                            members[span.key],
                            slice_for(block, span, values))
                    )
