"""Fixtures for the simulator's protocol faces: a scripted LiveSource, the demo model.

`ScriptedSource` is a stand-in for the model at the `simulator.api.LiveSource` seam
only; the servers under test are the real asyncua / pymodbus servers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.api import ModbusSpec, SignalSpec, SignalValue

T0 = 1_780_000_000.0  # a fixed source timestamp, so tests can compare exactly


def opcua_spec(
    device: str,
    signal: str,
    value_type: str,
    role: str = "process",
    counter_bits: int | None = None,
    line: str = "L1",
) -> SignalSpec:
    return SignalSpec(
        device_id=device,
        line=line,
        signal_id=signal,
        role=role,
        value_type=value_type,  # type: ignore[arg-type]
        face="opcua",
        opcua_path=f"Factory/{line}/{device}/{signal}",
        counter_bits=counter_bits,
    )


def modbus_spec(
    device: str,
    signal: str,
    value_type: str,
    modbus: ModbusSpec,
    unit_id: int,
    role: str = "process",
    counter_bits: int | None = None,
) -> SignalSpec:
    return SignalSpec(
        device_id=device,
        line="L2",
        signal_id=signal,
        role=role,
        value_type=value_type,  # type: ignore[arg-type]
        face="modbus",
        modbus=modbus,
        unit_id=unit_id,
        counter_bits=counter_bits,
    )


OPCUA_SPECS = [
    opcua_spec("CNC-01", "state", "int", role="state"),
    opcua_spec("CNC-01", "good_count", "int", role="good_count", counter_bits=32),
    opcua_spec("CNC-01", "short_count", "int", role="reject_count", counter_bits=16),
    opcua_spec("CNC-01", "spindle_temp", "float"),
    opcua_spec("CNC-01", "auto", "bool", role="auto_mode"),
    opcua_spec("CNC-01", "program", "str"),
    opcua_spec("CNC-02", "state", "int", role="state"),
]

MODBUS_SPECS = [
    modbus_spec("PRESS-01", "state", "int", ModbusSpec("holding", 0, "uint16"), 3, role="state"),
    modbus_spec(
        "PRESS-01",
        "good_count",
        "int",
        ModbusSpec("holding", 1, "uint32"),
        3,
        role="good_count",
        counter_bits=32,
    ),
    modbus_spec("PRESS-01", "delta", "int", ModbusSpec("holding", 3, "int16"), 3),
    modbus_spec(
        "PRESS-01", "big_signed", "int", ModbusSpec("holding", 4, "int32", word_order="little"), 3
    ),
    modbus_spec(
        "PRESS-01",
        "energy_kwh",
        "float",
        ModbusSpec("holding", 6, "float32", byte_order="little"),
        3,
        role="energy_kwh",
    ),
    modbus_spec(
        "PRESS-01", "total64", "int", ModbusSpec("holding", 8, "uint64"), 3, counter_bits=64
    ),
    modbus_spec("PRESS-01", "signed64", "int", ModbusSpec("holding", 12, "int64"), 3),
    modbus_spec("PRESS-01", "pressure", "float", ModbusSpec("input", 0, "float64"), 3),
    modbus_spec(
        "PRESS-01", "temp", "float", ModbusSpec("input", 4, "int16", scale=0.1, offset=-20.0), 3
    ),
    modbus_spec("PRESS-01", "recipe", "str", ModbusSpec("holding", 20, "string", length=4), 3),
    modbus_spec("PRESS-01", "auto", "bool", ModbusSpec("coil", 0, "bool"), 3, role="auto_mode"),
    modbus_spec(
        "PRESS-01", "alarm", "bool", ModbusSpec("discrete_input", 5, "bool"), 3, role="alarm"
    ),
    modbus_spec("ROBOT-01", "state", "int", ModbusSpec("holding", 0, "uint16"), 4, role="state"),
    modbus_spec(
        "ROBOT-01",
        "good_count",
        "int",
        ModbusSpec("input", 10, "uint16"),
        4,
        role="good_count",
        counter_bits=16,
    ),
]

INITIAL: dict[tuple[str, str], bool | int | float | str] = {
    ("CNC-01", "state"): 3,
    ("CNC-01", "good_count"): 4_000_000_000,
    ("CNC-01", "short_count"): 65_000,
    ("CNC-01", "spindle_temp"): 41.25,
    ("CNC-01", "auto"): True,
    ("CNC-01", "program"): "O1234",
    ("CNC-02", "state"): 1,
    ("PRESS-01", "state"): 2,
    ("PRESS-01", "good_count"): 123_456_789,
    ("PRESS-01", "delta"): -1234,
    ("PRESS-01", "big_signed"): -100_000,
    ("PRESS-01", "energy_kwh"): 1234.5,
    ("PRESS-01", "total64"): 2**40 + 7,
    ("PRESS-01", "signed64"): -(2**40),
    ("PRESS-01", "pressure"): 3.141592653589793,
    ("PRESS-01", "temp"): 23.4,
    ("PRESS-01", "recipe"): "AB7",
    ("PRESS-01", "auto"): True,
    ("PRESS-01", "alarm"): True,
    ("ROBOT-01", "state"): 6,
    ("ROBOT-01", "good_count"): 65_535,
}


class ScriptedSource:
    """A LiveSource whose values the test sets; also offers the model's value faults."""

    def __init__(self, specs: list[SignalSpec]) -> None:
        self._specs = list(specs)
        self._values = {
            (s.device_id, s.signal_id): SignalValue(INITIAL[(s.device_id, s.signal_id)], T0)
            for s in specs
        }
        self.frozen: set[str] = set()
        self.resets: list[str] = []

    def signal_specs(self) -> list[SignalSpec]:
        return list(self._specs)

    def values_at(self, t: float) -> dict[tuple[str, str], SignalValue]:
        return dict(self._values)

    def set(
        self,
        device_id: str,
        signal_id: str,
        value: bool | int | float | str,
        changed_at: float | None = None,
    ) -> None:
        if device_id in self.frozen:
            return
        at = time.time() if changed_at is None else changed_at
        self._values[(device_id, signal_id)] = SignalValue(value, at)

    def freeze(self, device_id: str, frozen: bool = True) -> None:
        (self.frozen.add if frozen else self.frozen.discard)(device_id)

    def reset_counters(self, device_id: str) -> None:
        self.resets.append(device_id)
        for spec in self._specs:
            if spec.device_id == device_id and spec.role.endswith("_count"):
                self._values[(device_id, spec.signal_id)] = SignalValue(0, time.time())


@pytest.fixture
def opcua_source() -> ScriptedSource:
    return ScriptedSource(OPCUA_SPECS)


@pytest.fixture
def modbus_source() -> ScriptedSource:
    return ScriptedSource(MODBUS_SPECS)


@pytest.fixture
def both_source() -> ScriptedSource:
    return ScriptedSource(OPCUA_SPECS + MODBUS_SPECS)


@pytest.fixture(scope="session")
def server_certs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """One server and one client certificate for the whole session (RSA keygen is slow)."""
    from simulator.certs import CLIENT_APPLICATION_URI, SERVER_APPLICATION_URI, generate_certificate

    folder = tmp_path_factory.mktemp("pki")
    server = generate_certificate(folder, "server", SERVER_APPLICATION_URI)
    client = generate_certificate(folder, "client", CLIENT_APPLICATION_URI)
    yield {"server": server, "client": client, "folder": folder}


DEMO_FACTORY = Path(__file__).resolve().parents[2] / "config" / "factories" / "demo.yaml"


@pytest.fixture
def demo_live() -> Any:
    """The real live model of the demo factory (compressed profile: things happen fast)."""
    from simulator.live import LiveFactory
    from simulator.model import load_factory

    return LiveFactory(load_factory(DEMO_FACTORY), profile="compressed", seed=7)
