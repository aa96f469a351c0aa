"""Static per-device derivation settings, from the config: which signal is the state,
the counters, the slot grid of each required signal."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.config import FactoryConfig
from agent.derive.slots import SignalGrid
from connectors.config import ModbusConnection, OpcUaConnection
from indicators.vocabulary import COUNTER_ROLES, INTERVAL_STATES, UNKNOWN_STATE, Role, State

# State labels as small integers inside arrays: the index into the vocabulary's interval states.
STATE_LABELS: tuple[str, ...] = INTERVAL_STATES
UNKNOWN = STATE_LABELS.index(UNKNOWN_STATE)
OFFLINE = STATE_LABELS.index(State.OFFLINE.value)


@dataclass(frozen=True, slots=True)
class SignalPlan:
    signal_id: str
    role: Role
    required: bool
    interval_s: float
    modulus: float  # counter wrap modulus in engineering units
    subscription: bool
    state_map: Mapping[int, int] | None  # state code -> label index
    valid_range: tuple[float, float] | None  # a good value outside is out_of_range


@dataclass(frozen=True, slots=True)
class DevicePlan:
    device_id: str
    connection: str
    signals: Mapping[str, SignalPlan]
    state_signal: str | None
    auto_signal: str | None
    # The ideal cycle time (PRI): a signal, else (and before its first good value) the
    # device field; the counter roles whose deltas are the produced quantity PQ.
    ideal_signal: str | None
    ideal_field: float | None
    produced_roles: frozenset[Role]
    signal_ids: tuple[str, ...]  # the order of the slot arrays (`grid`, `SlotCarry`)
    positions: Mapping[str, int]  # signal id -> index in `signal_ids`
    special_positions: tuple[int, ...]  # counters, state and auto mode: derived one by one
    grid: SignalGrid
    # Per position: the valid_range bounds (NaN where none); None when no signal has one.
    valid_range: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None


def plan_devices(
    config: FactoryConfig, *, interval_s: float | None = None, polled: bool = False
) -> dict[str, DevicePlan]:
    """Static per-device derivation settings from the config.

    `interval_s` overrides every signal's interval (backfill uses the history's declared
    sampling interval); `polled` treats every signal as polled (no held slots).
    """
    plans: dict[str, DevicePlan] = {}
    for device in config.devices:
        if device.connection == "none":
            continue
        connection = config.connections[device.connection]
        subscription = not polled and (
            isinstance(connection, OpcUaConnection) and connection.mode == "subscribe"
        )
        signals: dict[str, SignalPlan] = {}
        for signal in device.signals:
            bits = signal.counter_bits or config.collection.counter_bits
            scale = 1.0
            if isinstance(connection, ModbusConnection) and signal.modbus is not None:
                scale = signal.modbus.scale
            state_map = None
            if signal.role == Role.STATE and signal.state_map is not None:
                state_map = {
                    code: STATE_LABELS.index(state.value)
                    for code, state in config.state_map(signal.state_map).items()
                }
            signals[signal.id] = SignalPlan(
                signal_id=signal.id,
                role=signal.role,
                required=signal.required,
                interval_s=interval_s or config.interval_of(signal),
                modulus=float(2**bits) * abs(scale),
                subscription=subscription,
                state_map=state_map,
                valid_range=signal.valid_range,
            )
        state = device.signal(Role.STATE)
        auto = device.signal(Role.AUTO_MODE)
        ideal = device.signal(Role.IDEAL_CYCLE_TIME_S)
        counted_roles = {p.role for p in signals.values()}
        ordered = list(signals.values())
        plans[device.id] = DevicePlan(
            device_id=device.id,
            connection=device.connection,
            signals=signals,
            state_signal=state.id if state else None,
            auto_signal=auto.id if auto else None,
            ideal_signal=ideal.id if ideal else None,
            ideal_field=device.ideal_cycle_time_s,
            # As the time model counts PQ: total_count where there is one, else good + reject.
            produced_roles=frozenset(
                {Role.TOTAL_COUNT} if Role.TOTAL_COUNT in counted_roles
                else {Role.GOOD_COUNT, Role.REJECT_COUNT}
            ),
            signal_ids=tuple(signals),
            positions={signal_id: i for i, signal_id in enumerate(signals)},
            special_positions=tuple(
                i for i, p in enumerate(ordered)
                if p.role in COUNTER_ROLES or p.role in (Role.STATE, Role.AUTO_MODE)
            ),
            grid=SignalGrid(
                interval_s=np.array([p.interval_s for p in ordered], np.float64),
                counted=np.array([p.required for p in ordered], bool),
                subscription=np.array([p.subscription for p in ordered], bool),
            ),
            valid_range=(
                (
                    np.array([p.valid_range[0] if p.valid_range else np.nan for p in ordered]),
                    np.array([p.valid_range[1] if p.valid_range else np.nan for p in ordered]),
                )
                if any(p.valid_range for p in ordered)
                else None
            ),
        )
    return plans
