"""The agent's factory configuration: one YAML file, validated on load.

`load_config` never lets a pydantic traceback reach a user: it raises `ConfigError`
carrying one `ConfigProblem` per mistake (file, key path, what to write instead).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.errors import AgentError
from agent.service_config import Delivery, Reporting, resolve_paths
from connectors.config import (
    Connection,
    ModbusAddress,
    ModbusConnection,
    OpcUaAddress,
    OpcUaConnection,
    Secret,
    SecretUnavailable,
)
from indicators.columns import INVENTORY_COLUMNS
from indicators.policy import file_sha256
from indicators.vocabulary import PRESETS, Role, State

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_ID = "tieragent/config/v1"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceKind(StrEnum):
    CNC = "cnc"
    ROBOT = "robot"
    PLC_AUTOMATED = "plc_automated"
    MANUAL = "manual"
    OTHER = "other"


class Identity(Strict):
    enterprise_id: str = Field(..., min_length=1, description="Unified social credit code.")
    factory_id: str = Field(..., description="Id issued by the bureau.")
    name: str = ""
    time_zone: str = "Asia/Shanghai"
    industry_code: str = Field(..., description="GB/T 4754 industry code, e.g. C3484.")
    industry_type: Literal["discrete", "process"] = "discrete"
    province: str = ""

    @field_validator("factory_id")
    @classmethod
    def _factory_id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("use letters, digits, '-', '_' or '.' (at most 64), e.g. demo-tj-001")
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; write e.g. Asia/Shanghai") from exc
        return value


class Collection(Strict):
    default_interval_s: float = Field(1.0, gt=0)
    realtime_bound_s: float = Field(5.0, gt=0)
    counter_bits: Literal[16, 32, 64] = Field(
        32, description="Default counter width for rollover when a signal does not say."
    )
    min_failure_s: float = Field(0.0, ge=0, description="Shorter unplanned stops are not failures.")
    raw_retention_days: int = Field(400, ge=1)
    queue_size: int = Field(10_000, ge=100)
    health_connection_down_s: float = Field(
        60.0, gt=0, description="/healthz answers 503 once a connection has been down this long."
    )
    raw_quota_mb: float = Field(
        10_000.0, gt=0, description="Disk quota of raw samples: alarms at 80 % and 95 %; at "
        "the limit the oldest raw samples past retention go first, then new samples are "
        "counted as a gap. Reports, the outbox and derived tables are never dropped."
    )


class Signal(Strict):
    id: str
    role: Role
    interval_s: float | None = Field(None, gt=0, description="Expected sample interval.")
    required: bool = True
    unit: str = ""
    state_map: str | None = Field(None, description="Preset or state_maps key (role state).")
    counter_bits: Literal[16, 32, 64] | None = None
    valid_range: tuple[float, float] | None = Field(
        None,
        description="[min, max] of a plausible good value; a value outside it is kept and "
        "counted as out_of_range (signal health: /metrics, log, the report's data_quality).",
    )
    opcua: OpcUaAddress | None = None
    modbus: ModbusAddress | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("use letters, digits, '-', '_' or '.'")
        return value

    @field_validator("valid_range")
    @classmethod
    def _valid_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError("give [min, max] with min < max")
        return value


class Device(Strict):
    id: str
    name: str = ""
    line: str
    process_step: str
    key_process: bool = False
    kind: DeviceKind
    digital: bool
    connection: str = Field("none", description="A key of `connections`, or none.")
    unit_id: int | None = Field(None, ge=0, le=255, description="Modbus unit id.")
    ideal_cycle_time_s: float | None = Field(None, gt=0)
    signals: tuple[Signal, ...] = ()

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("use letters, digits, '-', '_' or '.' (at most 64)")
        return value

    def signal(self, role: Role) -> Signal | None:
        return next((s for s in self.signals if s.role == role), None)


class FactoryConfig(Strict):
    schema_: Literal["tieragent/config/v1"] = Field("tieragent/config/v1", alias="schema")
    factory: Identity
    collection: Collection = Collection()
    state_maps: dict[str, dict[int, State]] = Field(default_factory=dict)
    connections: dict[str, Connection] = Field(default_factory=dict)
    devices: tuple[Device, ...]
    reporting: Reporting | None = None
    delivery: Delivery | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> FactoryConfig:
        problems: list[str] = []
        seen: set[str] = set()
        for index, device in enumerate(self.devices):
            where = f"devices[{index}] ({device.id})"
            if device.id in seen:
                problems.append(f"{where}: duplicate device id")
            seen.add(device.id)
            problems.extend(self._device_problems(where, device))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _device_problems(self, where: str, device: Device) -> list[str]:
        problems: list[str] = []
        if device.connection == "none":
            if device.signals:
                problems.append(f"{where}.signals: a device with connection none has no signals")
            return problems
        connection = self.connections.get(device.connection)
        if connection is None:
            known = ", ".join(sorted(self.connections)) or "(none defined)"
            return [f"{where}.connection: unknown connection {device.connection!r}; known: {known}"]
        if not device.digital:
            problems.append(f"{where}.digital: a connected device is digital; write digital: true")
        is_modbus = isinstance(connection, ModbusConnection)
        if is_modbus and device.unit_id is None:
            problems.append(f"{where}.unit_id: Modbus devices need a unit id (0-255)")
        signal_ids: set[str] = set()
        roles: dict[Role, str] = {}
        for index, signal in enumerate(device.signals):
            at = f"{where}.signals[{index}] ({signal.id})"
            if signal.id in signal_ids:
                problems.append(f"{at}: duplicate signal id")
            signal_ids.add(signal.id)
            if signal.role != Role.PROCESS and signal.role != Role.ALARM:
                if signal.role in roles:
                    problems.append(f"{at}.role: role {signal.role.value} already bound")
                roles[signal.role] = signal.id
            if is_modbus and signal.modbus is None:
                problems.append(f"{at}: Modbus connection, so give `modbus:` (table, address)")
            if isinstance(connection, OpcUaConnection) and signal.opcua is None:
                problems.append(f"{at}: OPC UA connection, so give `opcua: {{node: ...}}`")
            if signal.role == Role.STATE:
                name = signal.state_map
                if name is None:
                    problems.append(f"{at}.state_map: write one of {self._map_names()}")
                elif name not in PRESETS and name not in self.state_maps:
                    problems.append(f"{at}.state_map: unknown {name!r}; use {self._map_names()}")
        if is_modbus:
            problems.extend(_overlaps(where, device.signals))
        return problems

    def _map_names(self) -> str:
        return ", ".join(sorted({*PRESETS, *self.state_maps}))

    def state_map(self, name: str) -> dict[int, State]:
        return self.state_maps.get(name) or PRESETS[name]

    def interval_of(self, signal: Signal) -> float:
        return signal.interval_s or self.collection.default_interval_s

    def device(self, device_id: str) -> Device:
        return next(d for d in self.devices if d.id == device_id)

    @property
    def report_grace_s(self) -> float:
        """Late-data grace after a period ends (`reporting.grace_s`, or its default)."""
        return (self.reporting or Reporting()).grace_s


def _overlaps(where: str, signals: Sequence[Signal]) -> list[str]:
    problems: list[str] = []
    spans: dict[str, list[tuple[int, int, str]]] = {}
    for signal in signals:
        if signal.modbus is None:
            continue
        # Coils and discrete inputs share nothing with registers; holding and input differ too.
        start, end = signal.modbus.address, signal.modbus.address + signal.modbus.width
        spans.setdefault(signal.modbus.table.value, []).append((start, end, signal.id))
    for table, ranges in spans.items():
        ranges.sort()
        for (_, end_a, id_a), (start_b, _, id_b) in itertools.pairwise(ranges):
            if start_b < end_a:
                problems.append(
                    f"{where}.signals: {id_a} and {id_b} overlap in {table} at address "
                    f"{start_b}; move one of them"
                )
    return problems


# --- loading --------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigProblem:
    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}"


class ConfigError(AgentError):
    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _key_path(location: Sequence[int | str]) -> str:
    parts = list(location)
    # A discriminated union (connections) adds its tag to the location: drop it.
    if len(parts) >= 3 and parts[0] == "connections" and parts[2] in ("opcua", "modbus"):
        del parts[2]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _problems_from(error: ValidationError, file: str) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for item in error.errors():
        key = _key_path(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "missing; this key is required"
        elif item["type"] == "extra_forbidden":
            message = "unknown key; check its spelling against config/schemas/config.schema.json"
        if not message.startswith("devices["):
            problems.append(ConfigProblem(file, key, message))
            continue
        # The cross-checks join several problems with "; ", each starting with its own key.
        for part in message.split("; devices["):
            part = part if part.startswith("devices[") else "devices[" + part
            sub_key, _, sub_message = part.partition(": ")
            problems.append(ConfigProblem(file, sub_key, sub_message))
    return problems


def with_absolute_paths(config: FactoryConfig, base: Path) -> FactoryConfig:
    """`config` with the relative paths of `reporting:` and `delivery:` read against `base`
    (the configuration file's folder), so the agent's working directory does not matter."""
    updates: dict[str, Any] = {}
    for name in ("reporting", "delivery"):
        section = getattr(config, name)
        if section is not None:
            updates[name] = resolve_paths(section, base.absolute())
    return config.model_copy(update=updates) if updates else config


def parse_config(raw: Any, file: str = "<config>") -> FactoryConfig:
    if not isinstance(raw, dict):
        raise ConfigError([ConfigProblem(file, "(top level)", "expected a YAML mapping")])
    try:
        return FactoryConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_problems_from(exc, file)) from None


def load_config(path: Path, *, resolve_secrets: bool = False) -> FactoryConfig:
    """Read, decode and validate a configuration file; raise ConfigError with every problem.

    With `resolve_secrets` every `{env: ...}` / `{file: ...}` secret is also read once (and
    dropped), so a command that needs them (`run`, `check-config`) stops before it starts.
    """
    file = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigProblem(file, "(file)", exc.strerror or str(exc))]) from None
    text = decode_config_text(data, file)
    try:
        raw = yaml.load(text, Loader=yaml.CSafeLoader)  # libyaml: the same documents, faster
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        raise ConfigError([ConfigProblem(file, where, f"not valid YAML: {exc}")]) from None
    # Not YAMLErrors (Z1): deep nesting, values like 2001-13-45 or `!!timestamp x`.
    except RecursionError:
        problem = ConfigProblem(file, "(yaml)", "not valid YAML: nested too deeply")
        raise ConfigError([problem]) from None
    except (ValueError, AttributeError) as exc:
        raise ConfigError([ConfigProblem(file, "(yaml)", f"not valid YAML: {exc}")]) from None
    config = with_absolute_paths(parse_config(raw, file), path.parent)
    if resolve_secrets:
        problems = secret_problems(config, file)
        if problems:
            raise ConfigError(problems)
    return config


_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
_SAVE_AS_UTF8 = "save it as UTF-8 (in Notepad: Save As, Encoding UTF-8)"


def decode_config_text(data: bytes, file: str) -> str:
    """The text of a configuration file: UTF-8, with or without a BOM.

    Anything else raises a ConfigError that names what the file is instead: UTF-16/32,
    GBK/GB18030 (a Chinese Windows default), another encoding, or not text at all.
    """
    data = data.removeprefix(b"\xef\xbb\xbf")
    for bom, name in _BOMS:
        if data.startswith(bom):
            message = f"is encoded as {name}; {_SAVE_AS_UTF8}"
            raise ConfigError([ConfigProblem(file, "(file)", message)])
    head = data[:8192]
    if b"\x00" in head:
        raise ConfigError([ConfigProblem(file, "(file)", _nul_message(head))])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.start
    line = data.count(b"\n", 0, bad) + 1
    column = bad - (data.rfind(b"\n", 0, bad) + 1) + 1
    at = f"line {line}, column {column}"
    if _looks_binary(head):
        message = "is not a text file (binary data); give the YAML configuration file"
    elif _looks_chinese(data):
        message = f"is encoded as GBK/GB18030, not UTF-8 (first non-UTF-8 byte at {at}); "
        message += _SAVE_AS_UTF8
    else:
        message = f"is not UTF-8 text (byte 0x{data[bad]:02X} at {at}); {_SAVE_AS_UTF8}"
    raise ConfigError([ConfigProblem(file, "(file)", message)])


def _nul_message(head: bytes) -> str:
    """A file with NUL bytes: UTF-16 without a BOM (NUL every other byte), else binary."""
    even, odd = head[0::2], head[1::2]
    if len(head) >= 4 and (even.count(0) >= 0.9 * len(even) or odd.count(0) >= 0.9 * len(odd)):
        return f"is encoded as UTF-16; {_SAVE_AS_UTF8}"
    return "is not a text file (binary data); give the YAML configuration file"


def _looks_chinese(data: bytes) -> bool:
    """True if `data` decodes as GB18030 and its non-ASCII text is mostly common Chinese.

    Common Chinese characters and punctuation are in GB2312 (both bytes 0xA1-0xFE), which
    text in a Latin encoding (an accented letter, then an ASCII one) rarely forms.
    """
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        return False
    wide = [c for c in text if ord(c) > 0x7F]
    common = 0
    for c in wide:
        try:
            c.encode("gb2312")
        except UnicodeEncodeError:
            continue
        common += 1
    return bool(wide) and common >= 0.8 * len(wide)


def _looks_binary(head: bytes) -> bool:
    """More than a few control characters (other than tab, CR, LF, FF) is not text."""
    controls = sum(1 for b in head if (b < 0x20 and b not in (9, 10, 12, 13)) or b == 0x7F)
    return controls > max(2, len(head) // 100)


def secret_problems(config: FactoryConfig, file: str) -> list[ConfigProblem]:
    """One problem per secret reference that cannot be resolved (the values are not kept)."""
    problems: list[ConfigProblem] = []
    for key, secret in _secrets(config, ()):
        try:
            secret.resolve()
        except SecretUnavailable as exc:
            source = "env" if secret.env is not None else "file"
            problems.append(ConfigProblem(file, _key_path((*key, source)), str(exc)))
    return problems


_Key = tuple[int | str, ...]


def secret_keys(config: FactoryConfig) -> list[str]:
    """The key path of every secret reference in the configuration."""
    return [_key_path(key) for key, _ in _secrets(config, ())]


def _secrets(node: object, key: _Key) -> list[tuple[_Key, Secret]]:
    """Every `Secret` in the configuration with its key path, wherever a model declares one."""
    if isinstance(node, Secret):
        return [(key, node)]
    found: list[tuple[_Key, Secret]] = []
    if isinstance(node, BaseModel):
        for name in type(node).model_fields:
            field = type(node).model_fields[name]
            found.extend(_secrets(getattr(node, name), (*key, field.alias or name)))
    elif isinstance(node, dict):
        for name, value in node.items():
            found.extend(_secrets(value, (*key, str(name))))
    elif isinstance(node, tuple | list):
        for index, value in enumerate(node):
            found.extend(_secrets(value, (*key, index)))
    return found


def config_digest(path: Path) -> str:
    """SHA-256 of the config file bytes, carried in reports."""
    return file_sha256(path)


def json_schema() -> dict[str, Any]:
    schema = FactoryConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://tieragent.dev/schemas/config.schema.json"
    return schema


def declared_inventory(config: FactoryConfig) -> pd.DataFrame:
    """Every declared device, connected or not (INVENTORY_COLUMNS)."""
    import pandas as pd

    rows = []
    for device in config.devices:
        connection = config.connections.get(device.connection)
        rows.append((
            device.id, device.line, device.process_step, device.key_process, device.kind.value,
            device.digital, connection.protocol if connection is not None else "none",
        ))
    return pd.DataFrame.from_records(rows, columns=list(INVENTORY_COLUMNS))
