"""The per-device parts of a factory file, as pydantic models.

A device (`SimDevice`) is declared with the random durations and calendars that shape
its timeline (`Duration`, `Failures`, `Episodes`, `Calendar`, `Profile`), its power draw,
and its signals (`SignalDef`) with their Modbus addresses. `simulator.model` assembles
devices into a `SimFactory`, cross-checks them and loads the file.
State codes are re-declared here rather than imported from the agent, so the simulator's
ground truth stays independent of the code it is used to test.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")

StateName = Literal["running", "idle", "setup", "planned_stop", "unplanned_stop"]
PresetName = Literal["packml", "opcua_machinery", "plain"]
RoleName = Literal[
    "state",
    "good_count",
    "reject_count",
    "total_count",
    "energy_kwh",
    "auto_mode",
    "ideal_cycle_time_s",
    "alarm",
    "process",
]
COUNT_ROLES: frozenset[str] = frozenset({"good_count", "reject_count", "total_count"})
BOOL_ROLES: frozenset[str] = frozenset({"auto_mode", "alarm"})
SINGLE_ROLES: frozenset[str] = frozenset(
    {
        "state",
        "good_count",
        "reject_count",
        "total_count",
        "energy_kwh",
        "auto_mode",
        "ideal_cycle_time_s",
    }
)

# Codes the simulator puts on the wire, per preset. They agree with indicators/vocabulary.py
# (PackML Execute=6, Idle=4, Resetting=15, Stopped=2, Aborted=9; MachineryItemState
# Executing=3, NotExecuting=2, OutOfService=1; the plain PLC map 1..5).
# The names a server gives each code of a preset (OPC 30050 PackML states; OPC 40001
# MachineryItemState). A plain PLC integer has none.
STATE_NAMES: dict[str, tuple[str, ...]] = {
    "packml": (
        "Undefined", "Clearing", "Stopped", "Starting", "Idle", "Suspended", "Execute",
        "Stopping", "Aborting", "Aborted", "Holding", "Held", "UnHolding", "Suspending",
        "Unsuspending", "Resetting", "Completing", "Complete",
    ),
    "opcua_machinery": ("NotAvailable", "OutOfService", "NotExecuting", "Executing"),
}
STATE_CODES: dict[str, dict[str, int]] = {
    "packml": {"running": 6, "idle": 4, "setup": 15, "planned_stop": 2, "unplanned_stop": 9},
    "opcua_machinery": {"running": 3, "idle": 2, "unplanned_stop": 1},
    "plain": {"running": 1, "idle": 2, "setup": 3, "planned_stop": 4, "unplanned_stop": 5},
}

ModbusTableName = Literal["coil", "discrete_input", "holding", "input"]
ModbusTypeName = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"
]
REGISTER_WIDTH: dict[str, int] = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "int64": 4,
    "uint64": 4,
    "float32": 2,
    "float64": 4,
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Duration(Strict):
    """A random duration in seconds. A bare number in YAML means a fixed duration."""

    dist: Literal["fixed", "exponential", "lognormal", "uniform"] = "exponential"
    mean_s: float = Field(..., gt=0)
    cv: float = Field(0.5, gt=0, description="Coefficient of variation (lognormal).")
    min_s: float | None = Field(None, ge=0, description="Lower bound (uniform).")
    max_s: float | None = Field(None, gt=0, description="Upper bound (uniform).")

    @model_validator(mode="before")
    @classmethod
    def _number_is_fixed(cls, raw: Any) -> Any:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return {"dist": "fixed", "mean_s": raw}
        return raw

    @model_validator(mode="after")
    def _uniform_bounds(self) -> Duration:
        if self.dist == "uniform":
            if self.min_s is None or self.max_s is None or self.min_s >= self.max_s:
                raise ValueError("a uniform duration needs min_s < max_s")
            if abs((self.min_s + self.max_s) / 2 - self.mean_s) > 1e-9 * self.mean_s:
                raise ValueError("for a uniform duration mean_s must be (min_s + max_s) / 2")
        return self


class Failures(Strict):
    mtbf: Duration = Field(..., description="Running time between failures.")
    mttr: Duration = Field(..., description="Time to repair (unplanned_stop).")


class Episodes(Strict):
    every: Duration = Field(..., description="Running time between two episodes.")
    duration: Duration


class DailyStop(Strict):
    """A planned stop at a local time of day, e.g. a lunch break."""

    start: str = Field(..., description="Local time HH:MM.")
    duration_s: float = Field(..., gt=0, le=86400)
    weekdays: tuple[int, ...] = Field((0, 1, 2, 3, 4, 5, 6), description="0 = Monday.")

    @field_validator("start")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"{value!r} is not a time of day; write HH:MM, e.g. 12:00")
        return value

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(day < 0 or day > 6 for day in value):
            raise ValueError("weekdays are 0 (Monday) to 6 (Sunday)")
        return value


class Calendar(Strict):
    planned_stops: tuple[DailyStop, ...] = ()


class Profile(Strict):
    """How a time profile scales durations (the `normal` profile scales nothing)."""

    cycle_time_scale: float = Field(1.0, gt=0)
    event_time_scale: float = Field(
        1.0, gt=0, description="Scales failures, repairs, setups, idle episodes and the calendar."
    )


class PowerByState(Strict):
    running: float = Field(..., ge=0)
    idle: float = Field(..., ge=0)
    setup: float = Field(..., ge=0)
    planned_stop: float = Field(..., ge=0)
    unplanned_stop: float = Field(..., ge=0)


class ProcessWave(Strict):
    """A smooth, deterministic process value: base + amplitude * sin(2 pi t / period + phase)."""

    base: float
    amplitude: float = 0.0
    period_s: float = Field(600.0, gt=0)
    phase: float = 0.0


class ModbusAddress(Strict):
    table: ModbusTableName
    address: int = Field(..., ge=0, le=65535)
    type: ModbusTypeName = "uint16"
    word_order: Literal["big", "little"] = "big"
    byte_order: Literal["big", "little"] = "big"
    scale: float = Field(1.0, description="register value = round((value - offset) / scale)")
    offset: float = 0.0

    @model_validator(mode="after")
    def _shape(self) -> ModbusAddress:
        bit_table = self.table in ("coil", "discrete_input")
        if bit_table != (self.type == "bool"):
            raise ValueError("coils and discrete inputs hold type bool, registers hold numbers")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self

    @property
    def width(self) -> int:
        return REGISTER_WIDTH[self.type]


class SignalDef(Strict):
    id: str
    role: RoleName
    unit: str = ""
    counter_bits: Literal[16, 32, 64] | None = Field(
        None, description="Counters only; defaults to the device's counter_bits."
    )
    opcua_path: str | None = Field(None, description="Default Factory/<line>/<device>/<id>.")
    modbus: ModbusAddress | None = None
    process: ProcessWave | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not ID_PATTERN.match(value):
            raise ValueError("use letters, digits, '-', '_' or '.'")
        return value


class SimDevice(Strict):
    id: str
    name: str = ""
    line: str
    process_step: str
    key_process: bool = False
    kind: Literal["cnc", "robot", "plc_automated", "manual", "other"]
    digital: bool
    face: Literal["opcua", "modbus", "none"]
    unit_id: int | None = Field(None, ge=0, le=255)
    state_preset: PresetName = "packml"
    ideal_cycle_time_s: float = Field(..., gt=0)
    cycle_time_factor: float = Field(
        1.1, ge=1.0, description="Mean actual / ideal cycle time; never faster than ideal."
    )
    cycle_time_cv: float = Field(0.05, ge=0)
    scrap_probability: float = Field(0.01, ge=0, lt=1)
    failures: Failures | None = None
    setups: Episodes | None = Field(None, description="Changeovers.")
    starved: Episodes | None = Field(None, description="Idle episodes (no material or order).")
    calendar: str = "default"
    power_kw: PowerByState
    manual_share: float = Field(0.0, ge=0, le=1, description="Share of running time in manual.")
    counter_bits: Literal[16, 32, 64] = 32
    counter_initial: int = Field(0, ge=0, description="Counter value on the wire at time 0.")
    layout: str | None = Field(None, description="A key of `layouts`: shared signal maps.")
    signals: tuple[SignalDef, ...] = ()

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not ID_PATTERN.match(value):
            raise ValueError("use letters, digits, '-', '_' or '.' (at most 64)")
        return value

    @model_validator(mode="after")
    def _counter_initial(self) -> SimDevice:
        if self.counter_initial >= 2**self.counter_bits:
            raise ValueError(f"counter_initial must be below 2**{self.counter_bits}")
        return self

    @property
    def networked(self) -> bool:
        return self.face != "none"
