"""The seam between the simulator's model (timeline, ledger) and its protocol faces.

The model knows what every device is doing at any time; a face only asks it for the
current value of each signal and publishes that over OPC UA or Modbus. The simulator
never imports the agent, so its ground truth stays independent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

FaceKind = Literal["opcua", "modbus"]
ModbusTableName = Literal["coil", "discrete_input", "holding", "input"]
ModbusTypeName = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"
]
ValueType = Literal["bool", "int", "float", "str"]


@dataclass(frozen=True, slots=True)
class ModbusSpec:
    table: ModbusTableName
    address: int
    type: ModbusTypeName
    word_order: Literal["big", "little"] = "big"
    byte_order: Literal["big", "little"] = "big"
    scale: float = 1.0  # register value = round((value - offset) / scale)
    offset: float = 0.0
    length: int | None = None  # registers, strings only


@dataclass(frozen=True, slots=True)
class SignalSpec:
    device_id: str
    line: str
    signal_id: str
    role: str  # state, good_count, reject_count, total_count, energy_kwh, auto_mode, ...
    value_type: ValueType
    face: FaceKind
    opcua_path: str | None = None  # "Factory/<line>/<device>/<signal>"
    modbus: ModbusSpec | None = None
    unit_id: int | None = None
    counter_bits: int | None = None  # counters wrap at 2**bits on the wire
    # A state signal whose server publishes the codes' names (the OPC UA face writes them as
    # the variable's EnumStrings property, index = code), as enumeration-typed PLC variables
    # and companion specifications do; None for a plain integer.
    state_names: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class SignalValue:
    value: bool | int | float | str
    changed_at: float  # epoch seconds when this value became true (the source timestamp)


class LiveSource(Protocol):
    """What the faces read. Implemented by the model's live runner."""

    def signal_specs(self) -> list[SignalSpec]: ...

    def values_at(self, t: float) -> dict[tuple[str, str], SignalValue]:
        """Every signal's value at wall time t, keyed by (device_id, signal_id).

        Counter values are already wrapped to `counter_bits` and include any injected
        counter reset; state values are already encoded with the device's preset.
        """
        ...
