"""Connection and signal-address settings, declared once as pydantic models.

These live in `connectors/` because connectors consume them and must not import the
agent; `agent.config` composes them into the factory configuration.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretUnavailable(LookupError):
    """A secret that cannot be resolved; str() names the source and the fix, never the value."""


class Secret(Strict):
    """A secret read at run time from an environment variable or a file, never inline."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of `env: VAR_NAME` or `file: /path/to/secret`")
        return self

    def resolve(self) -> str:
        """The secret (a file's content without surrounding white space); the one resolver.

        Raises SecretUnavailable (a LookupError) when the variable is unset or empty, or the
        file is missing, unreadable, not UTF-8 or empty. The message never holds the value.
        """
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise SecretUnavailable(
                    f"environment variable {self.env} is not set; set it in the agent's "
                    "environment (e.g. Environment= in its systemd unit) or use `file:`"
                )
            if not value.strip():
                raise SecretUnavailable(
                    f"environment variable {self.env} is empty; set it to the secret"
                )
            return value
        assert self.file is not None
        try:
            data = self.file.read_bytes()
        except FileNotFoundError:
            raise SecretUnavailable(
                f"secret file {self.file} does not exist; create it (readable only by the "
                "agent, mode 0600) or correct the path"
            ) from None
        except OSError as exc:
            raise SecretUnavailable(
                f"secret file {self.file} cannot be read ({exc.strerror or exc}); give the "
                "agent's user read permission on it"
            ) from None
        try:
            value = data.decode("utf-8-sig").strip()
        except UnicodeDecodeError:
            raise SecretUnavailable(
                f"secret file {self.file} is not UTF-8 text; write the secret as UTF-8"
            ) from None
        if not value:
            raise SecretUnavailable(f"secret file {self.file} is empty; write the secret in it")
        return value


# --- OPC UA -------------------------------------------------------------------------


class OpcUaPolicy(StrEnum):
    NONE = "None"
    BASIC256SHA256 = "Basic256Sha256"
    AES128_SHA256_RSAOAEP = "Aes128_Sha256_RsaOaep"
    AES256_SHA256_RSAPSS = "Aes256_Sha256_RsaPss"


class OpcUaMode(StrEnum):
    NONE = "None"
    SIGN = "Sign"
    SIGN_AND_ENCRYPT = "SignAndEncrypt"


class OpcUaSecurity(Strict):
    policy: OpcUaPolicy = OpcUaPolicy.NONE
    mode: OpcUaMode = OpcUaMode.NONE
    certificate: Path | None = Field(None, description="Client certificate (DER or PEM).")
    private_key: Path | None = Field(None, description="Client private key (PEM).")
    pki_dir: Path | None = Field(
        None,
        description="Trust list folder holding trusted/ and rejected/. An unknown server "
        "certificate is refused and saved to rejected/; move it to trusted/ to approve it.",
    )
    username: str | None = None
    password: Secret | None = None

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaSecurity:
        if (self.policy == OpcUaPolicy.NONE) != (self.mode == OpcUaMode.NONE):
            raise ValueError(
                "policy None goes only with mode None; a secure policy needs mode Sign or "
                "SignAndEncrypt"
            )
        if self.policy != OpcUaPolicy.NONE:
            if self.certificate is None or self.private_key is None:
                raise ValueError(
                    "a secure policy needs `certificate` and `private_key` paths "
                    "(generate them with `tieragent sim certs` or your PKI)"
                )
            for path in (self.certificate, self.private_key):
                if not path.exists():
                    raise ValueError(f"file not found: {path}")
        if self.password is not None and self.username is None:
            raise ValueError("`password` needs `username`")
        return self


class OpcUaSubscription(Strict):
    publishing_interval_ms: float = Field(500, gt=0)
    sampling_interval_ms: float = Field(250, ge=0)
    queue_size: int = Field(10, ge=1)
    deadband_abs: float = Field(0.0, ge=0)
    keepalive_count: int = Field(
        10,
        ge=1,
        le=1000,
        description="Publishing intervals without data before the server sends a keepalive; "
        "no data nor keepalive for twice that long means the link is dead.",
    )


class OpcUaConnection(Strict):
    protocol: Literal["opcua"] = "opcua"
    endpoint: str = Field(..., description="opc.tcp://host:port[/path]")
    mode: Literal["subscribe", "poll"] = "subscribe"
    poll_interval_s: float = Field(1.0, gt=0)
    request_timeout_s: float = Field(4.0, gt=0)
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(
        30.0, gt=0, description="Longest wait between attempts once an outage is past the "
        "fast window."
    )
    reconnect_fast_s: float = Field(
        4.0, gt=0, description="Longest wait between attempts during the first "
        "`reconnect_fast_window_s` of an outage (the first retry is immediate), so a "
        "restarted server is collected from again within about 5 s."
    )
    reconnect_fast_window_s: float = Field(60.0, ge=0)
    reconnect_refused_max_s: float = Field(
        300.0, gt=0, description="Longest wait after a refusal only an operator can fix "
        "(untrusted certificate, credentials); such retries start at `reconnect_fast_s`."
    )
    security: OpcUaSecurity = OpcUaSecurity()
    subscription: OpcUaSubscription = OpcUaSubscription()

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        url = urlparse(value)
        if url.scheme != "opc.tcp" or not url.hostname:
            raise ValueError(f"{value!r} is not an OPC UA endpoint; write opc.tcp://host:4840")
        try:
            url.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"bad port in {value!r}") from exc
        return value


# --- Modbus ---------------------------------------------------------------------------


class ModbusTable(StrEnum):
    COIL = "coil"  # function code 1
    DISCRETE_INPUT = "discrete_input"  # 2
    HOLDING = "holding"  # 3
    INPUT = "input"  # 4


class ModbusType(StrEnum):
    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"


REGISTER_WIDTH: dict[ModbusType, int] = {
    ModbusType.BOOL: 1,
    ModbusType.INT16: 1,
    ModbusType.UINT16: 1,
    ModbusType.INT32: 2,
    ModbusType.UINT32: 2,
    ModbusType.INT64: 4,
    ModbusType.UINT64: 4,
    ModbusType.FLOAT32: 2,
    ModbusType.FLOAT64: 4,
}


class ModbusAddress(Strict):
    table: ModbusTable
    address: int = Field(..., ge=0, le=65535)
    type: ModbusType = ModbusType.UINT16
    word_order: Literal["big", "little"] = "big"
    byte_order: Literal["big", "little"] = "big"
    length: int | None = Field(None, ge=1, le=125, description="registers, for strings only")
    scale: float = 1.0
    offset: float = 0.0

    @model_validator(mode="after")
    def _shape(self) -> ModbusAddress:
        bit_table = self.table in (ModbusTable.COIL, ModbusTable.DISCRETE_INPUT)
        if bit_table and self.type != ModbusType.BOOL:
            raise ValueError(f"{self.table.value} holds single bits; use `type: bool`")
        if self.type == ModbusType.STRING and self.length is None:
            raise ValueError("a string needs `length` (number of registers)")
        return self

    @property
    def width(self) -> int:
        """Number of registers (or bits) the value occupies."""
        if self.type == ModbusType.STRING:
            assert self.length is not None
            return self.length
        if self.table in (ModbusTable.COIL, ModbusTable.DISCRETE_INPUT):
            return 1
        return REGISTER_WIDTH[self.type]


class ModbusConnection(Strict):
    protocol: Literal["modbus"] = "modbus"
    host: str
    port: int = Field(502, ge=1, le=65535)
    poll_interval_s: float = Field(1.0, gt=0)
    timeout_s: float = Field(1.0, gt=0)
    retries: int = Field(1, ge=0, le=5)
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    max_registers_per_read: int = Field(125, ge=1, le=125)
    max_bits_per_read: int = Field(2000, ge=1, le=2000)
    max_gap: int | None = Field(
        None,
        ge=0,
        description="Most unused addresses bridged to merge two reads. Unset: any gap that "
        "fits in one read (the fewest requests); a device refusing a bridged gap with "
        "exception 02 gets its reads split there, and the split is remembered.",
    )


Connection = Annotated[OpcUaConnection | ModbusConnection, Field(discriminator="protocol")]


class OpcUaAddress(Strict):
    node: str = Field(..., description='NodeId string, e.g. "ns=2;s=Factory/L1/CNC-01/State"')
