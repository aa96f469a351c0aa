"""What each signal shows on the wire, derived from a device's timeline.

Shared by the live runner (one value per signal, often) and the history generator
(many timestamps at once, vectorised). Counters are wrapped at 2**counter_bits and start
at the device's `counter_initial`; states are encoded with the device's preset.
"""

from __future__ import annotations

import math

import numpy as np

from simulator.api import ModbusSpec, SignalSpec, ValueType
from simulator.device_model import COUNT_ROLES, STATE_CODES, STATE_NAMES, SignalDef, SimDevice
from simulator.model import SimFactory
from simulator.timeline import F64, STATES, UNPLANNED_STOP, DeviceTimeline

_VALUE_TYPES: dict[str, ValueType] = {
    "state": "int",
    "good_count": "int",
    "reject_count": "int",
    "total_count": "int",
    "energy_kwh": "float",
    "auto_mode": "bool",
    "ideal_cycle_time_s": "float",
    "alarm": "bool",
    "process": "float",
}


def value_type(signal: SignalDef) -> ValueType:
    return _VALUE_TYPES[signal.role]


def state_code_table(device: SimDevice) -> np.ndarray:
    """Wire code per timeline state index (STATES order); -1 where the preset has none."""
    codes = STATE_CODES[device.state_preset]
    return np.array([codes.get(state, -1) for state in STATES], dtype=np.int64)


def signal_specs(factory: SimFactory) -> list[SignalSpec]:
    """Every networked device's signals, in factory order."""
    specs: list[SignalSpec] = []
    for device in factory.devices:
        if not device.networked:
            continue
        for signal in factory.signals_of(device):
            modbus = None
            if device.face == "modbus" and signal.modbus is not None:
                m = signal.modbus
                modbus = ModbusSpec(
                    table=m.table,
                    address=m.address,
                    type=m.type,
                    word_order=m.word_order,
                    byte_order=m.byte_order,
                    scale=m.scale,
                    offset=m.offset,
                )
            specs.append(
                SignalSpec(
                    device_id=device.id,
                    line=device.line,
                    signal_id=signal.id,
                    role=signal.role,
                    value_type=value_type(signal),
                    face="modbus" if device.face == "modbus" else "opcua",
                    opcua_path=factory.opcua_path(device, signal)
                    if device.face == "opcua"
                    else None,
                    modbus=modbus,
                    unit_id=device.unit_id if device.face == "modbus" else None,
                    counter_bits=(
                        factory.counter_bits(device, signal) if signal.role in COUNT_ROLES else None
                    ),
                    state_names=(
                        STATE_NAMES.get(device.state_preset) if signal.role == "state" else None
                    ),
                )
            )
    return specs


def wrap(count: np.ndarray, bits: int) -> np.ndarray:
    """Counter values as a `bits`-wide register shows them."""
    if bits >= 63:
        return count  # a 64-bit counter never wraps within a simulated run
    return np.mod(count, np.int64(1) << np.int64(bits))


def wave(signal: SignalDef, ts: F64) -> F64:
    assert signal.process is not None
    p = signal.process
    return np.asarray(p.base + p.amplitude * np.sin(2 * math.pi * ts / p.period_s + p.phase))


def values_many(
    factory: SimFactory, device: SimDevice, signal: SignalDef, tl: DeviceTimeline, ts: F64
) -> F64:
    """The signal's wire value at each time in `ts`, as float64 (bools 0/1)."""
    role = signal.role
    if role == "state":
        return state_code_table(device)[tl.states[tl.indices_at(ts)]].astype(np.float64)
    if role == "auto_mode":
        return tl.autos[tl.indices_at(ts)].astype(np.float64)
    if role == "alarm":
        return (tl.states[tl.indices_at(ts)] == UNPLANNED_STOP).astype(np.float64)
    if role in COUNT_ROLES:
        produced, scrap = tl.counts_many(ts)
        count = {"total_count": produced, "good_count": produced - scrap, "reject_count": scrap}[
            role
        ]
        bits = factory.counter_bits(device, signal)
        return wrap(count + device.counter_initial, bits).astype(np.float64)
    if role == "energy_kwh":
        return tl.energy_many(ts)
    if role == "ideal_cycle_time_s":
        return np.full(len(ts), tl.ideal_cycle_time_s)
    return wave(signal, ts)


def change_times(signal: SignalDef, tl: DeviceTimeline) -> F64:
    """Times a state-like signal changes value (empty for sampled-only signals)."""
    if signal.role == "state":
        values: np.ndarray = tl.states
    elif signal.role == "auto_mode":
        values = tl.autos
    elif signal.role == "alarm":
        values = tl.states == UNPLANNED_STOP
    else:
        return np.empty(0)
    changed = values[1:] != values[:-1]
    return tl.starts[1:][changed]
