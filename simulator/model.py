"""The simulated factory, declared in YAML and validated into pydantic models.

`load_factory(path)` reads a factory file (see config/factories/demo.yaml) and raises
`FactoryError` listing every mistake as "<file>: <key>: <problem>", never a traceback.
The per-device parts live in `simulator.device_model`; this module holds the factory as
a whole, the checks that span devices (ids, lines, layouts, unit ids, address overlaps)
and the loading.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from simulator.device_model import (
    BOOL_ROLES,
    COUNT_ROLES,
    ID_PATTERN,
    SINGLE_ROLES,
    STATE_CODES,
    Calendar,
    Profile,
    SignalDef,
    SimDevice,
    Strict,
)

_UNSIGNED_BITS: dict[str, int] = {"uint16": 16, "uint32": 32, "uint64": 64}


class Identity(Strict):
    enterprise_id: str = Field(..., min_length=1)
    factory_id: str
    name: str = ""
    time_zone: str = "Asia/Shanghai"
    industry_code: str = Field(..., min_length=1, description="GB/T 4754 code, e.g. C3484.")
    industry_type: Literal["discrete", "process"] = "discrete"
    province: str = ""

    @field_validator("factory_id")
    @classmethod
    def _factory_id(cls, value: str) -> str:
        if not ID_PATTERN.match(value):
            raise ValueError("use letters, digits, '-', '_' or '.', e.g. demo-tj-001")
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; write e.g. Asia/Shanghai") from exc
        return value


class Line(Strict):
    id: str
    name: str = ""


class SimFactory(Strict):
    identity: Identity
    lines: tuple[Line, ...]
    calendars: dict[str, Calendar] = Field(default_factory=lambda: {"default": Calendar()})
    profiles: dict[str, Profile] = Field(default_factory=dict)
    layouts: dict[str, tuple[SignalDef, ...]] = Field(default_factory=dict)
    devices: tuple[SimDevice, ...]

    _source_sha256: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _cross_checks(self) -> SimFactory:
        problems = _factory_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def device(self, device_id: str) -> SimDevice:
        for device in self.devices:
            if device.id == device_id:
                return device
        raise KeyError(f"unknown device {device_id!r}")

    def signals_of(self, device: SimDevice) -> tuple[SignalDef, ...]:
        """The device's layout signals followed by its own."""
        shared = self.layouts.get(device.layout, ()) if device.layout else ()
        return (*shared, *device.signals)

    def profile(self, name: str) -> Profile:
        """The named time profile; `normal` always exists. Raises ValueError if unknown."""
        if name == "normal":
            return self.profiles.get("normal", Profile())
        if name not in self.profiles:
            known = ", ".join(sorted({"normal", *self.profiles}))
            raise ValueError(f"unknown profile {name!r}; known: {known}")
        return self.profiles[name]

    def opcua_path(self, device: SimDevice, signal: SignalDef) -> str:
        return signal.opcua_path or f"Factory/{device.line}/{device.id}/{signal.id}"

    def counter_bits(self, device: SimDevice, signal: SignalDef) -> int:
        return signal.counter_bits or device.counter_bits

    def digest(self) -> str:
        """SHA-256 of the file it was loaded from, else of its canonical JSON dump."""
        if self._source_sha256 is not None:
            return self._source_sha256
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


def _factory_problems(factory: SimFactory) -> list[str]:
    problems: list[str] = []
    line_ids = {line.id for line in factory.lines}
    seen: set[str] = set()
    unit_ids: dict[int, str] = {}
    for name, layout in factory.layouts.items():
        ids = [s.id for s in layout]
        if len(ids) != len(set(ids)):
            problems.append(f"layouts.{name}: duplicate signal ids")
    for index, device in enumerate(factory.devices):
        where = f"devices[{index}] ({device.id})"
        if device.id in seen:
            problems.append(f"{where}.id: duplicate device id")
        seen.add(device.id)
        if device.line not in line_ids:
            problems.append(
                f"{where}.line: unknown line {device.line!r}; known: {', '.join(sorted(line_ids))}"
            )
        if device.calendar not in factory.calendars:
            problems.append(
                f"{where}.calendar: unknown calendar {device.calendar!r}; known: "
                f"{', '.join(sorted(factory.calendars))}"
            )
        if device.layout is not None and device.layout not in factory.layouts:
            problems.append(
                f"{where}.layout: unknown layout {device.layout!r}; known: "
                f"{', '.join(sorted(factory.layouts))}"
            )
            continue
        if device.face == "modbus":
            if device.unit_id is None:
                problems.append(f"{where}.unit_id: a Modbus device needs a unit id (0-255)")
            elif device.unit_id in unit_ids:
                problems.append(
                    f"{where}.unit_id: {device.unit_id} is already used by "
                    f"{unit_ids[device.unit_id]}"
                )
            else:
                unit_ids[device.unit_id] = device.id
        problems.extend(_schedule_problems(factory, where, device))
        problems.extend(_signal_problems(factory, where, device))
    return problems


def _schedule_problems(factory: SimFactory, where: str, device: SimDevice) -> list[str]:
    codes = STATE_CODES[device.state_preset]
    problems: list[str] = []
    if device.setups is not None and "setup" not in codes:
        problems.append(
            f"{where}.setups: preset {device.state_preset} cannot express setup; "
            "remove `setups` or use packml / plain"
        )
    calendar = factory.calendars.get(device.calendar)
    if calendar is not None and calendar.planned_stops and "planned_stop" not in codes:
        problems.append(
            f"{where}.calendar: preset {device.state_preset} cannot express a "
            "planned stop; use a calendar without planned_stops"
        )
    return problems


def _signal_problems(factory: SimFactory, where: str, device: SimDevice) -> list[str]:
    signals = factory.signals_of(device)
    if not device.networked:
        if signals:
            return [f"{where}.signals: a device with face none has no signals or layout"]
        return []
    problems: list[str] = []
    if not device.digital:
        problems.append(f"{where}.digital: a networked device is digital; write digital: true")
    ids: set[str] = set()
    roles: set[str] = set()
    for index, signal in enumerate(signals):
        at = f"{where}.signals[{index}] ({signal.id})"
        if signal.id in ids:
            problems.append(f"{at}.id: duplicate signal id")
        ids.add(signal.id)
        if signal.role in SINGLE_ROLES:
            if signal.role in roles:
                problems.append(f"{at}.role: role {signal.role} is already bound")
            roles.add(signal.role)
        if signal.role == "process" and signal.process is None:
            problems.append(f"{at}.process: a process signal needs `process: {{base: ...}}`")
        if device.face == "modbus":
            problems.extend(_modbus_problems(at, device, signal))
        elif signal.modbus is not None:
            problems.append(f"{at}.modbus: only Modbus devices take a Modbus address")
    for role in ("state", "energy_kwh", "auto_mode"):
        if role not in roles:
            problems.append(f"{where}.signals: missing a signal with role {role}")
    if "total_count" not in roles and not {"good_count", "reject_count"} <= roles:
        problems.append(f"{where}.signals: give total_count or both good_count and reject_count")
    if device.face == "modbus":
        problems.extend(_overlap_problems(where, signals))
    return problems


def _modbus_problems(at: str, device: SimDevice, signal: SignalDef) -> list[str]:
    address = signal.modbus
    if address is None:
        return [f"{at}.modbus: a Modbus device's signal needs `modbus: {{table, address}}`"]
    problems: list[str] = []
    is_bool = signal.role in BOOL_ROLES
    if is_bool != (address.type == "bool"):
        problems.append(
            f"{at}.modbus.type: role {signal.role} needs "
            f"{'type bool' if is_bool else 'a numeric type'}"
        )
    if signal.role == "state" and address.type.startswith("float"):
        problems.append(f"{at}.modbus.type: state codes are integers; use uint16 or int16")
    if signal.role in COUNT_ROLES:
        bits = signal.counter_bits or device.counter_bits
        if _UNSIGNED_BITS.get(address.type) != bits or address.scale != 1 or address.offset != 0:
            problems.append(f"{at}.modbus.type: a {bits}-bit counter is an unscaled uint{bits}")
    return problems


def _overlap_problems(where: str, signals: Sequence[SignalDef]) -> list[str]:
    problems: list[str] = []
    spans: dict[str, list[tuple[int, int, str]]] = {}
    for signal in signals:
        if signal.modbus is not None:
            start = signal.modbus.address
            spans.setdefault(signal.modbus.table, []).append(
                (start, start + signal.modbus.width, signal.id)
            )
    for table, ranges in sorted(spans.items()):
        ranges.sort()
        for (_, end_a, id_a), (start_b, _, id_b) in itertools.pairwise(ranges):
            if start_b < end_a:
                problems.append(
                    f"{where}.signals: {id_a} and {id_b} overlap in {table} at address {start_b}"
                )
    return problems


# --- loading --------------------------------------------------------------------------


class FactoryError(Exception):
    """A factory file that cannot be used; `problems` holds one "<file>: <key>: ..." each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _key_path(location: Sequence[int | str]) -> str:
    out = ""
    for part in location:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _problems_from(error: ValidationError, file: str) -> list[str]:
    problems: list[str] = []
    for item in error.errors():
        key = _key_path(item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "missing; this key is required"
        elif item["type"] == "extra_forbidden":
            message = "unknown key; check its spelling"
        for line in message.split("\n"):
            if line.startswith(("devices[", "layouts.")) and ": " in line:
                problems.append(f"{file}: {line}")
            else:
                problems.append(f"{file}: {key}: {line}")
    return problems


def parse_factory(raw: Any, file: str = "<factory>") -> SimFactory:
    if not isinstance(raw, dict):
        raise FactoryError([f"{file}: (top level): expected a YAML mapping"])
    try:
        return SimFactory.model_validate(raw)
    except ValidationError as exc:
        raise FactoryError(_problems_from(exc, file)) from None


def load_factory(path: Path | str) -> SimFactory:
    """Read and validate a factory file; raises FactoryError naming file and key."""
    path = Path(path)
    file = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FactoryError([f"{file}: (file): {exc.strerror or exc}"]) from None
    try:
        raw = yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        raise FactoryError([f"{file}: {where}: not valid YAML: {exc}"]) from None
    factory = parse_factory(raw, file)
    factory._source_sha256 = hashlib.sha256(data).hexdigest()
    return factory
