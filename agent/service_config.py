"""The `reporting:` and `delivery:` sections of the factory configuration.

With both sections, `tieragent run` does the whole job: it collects, builds and signs the
report of every period that has ended (plus `reporting.grace_s` for late data), and
delivers the outbox to the bureau, acting on every signed receipt. Without them it only
collects, and reports are built and sent with `tieragent report ...`, whose flags take
their defaults from these same sections.

Relative paths are read relative to the configuration file's folder (`load_config` turns
them into absolute ones), so a configuration can be moved with its files.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from connectors.config import Secret, Strict

PeriodKind = Literal["day", "month", "year"]


class Reporting(Strict):
    """Which periods are reported, when, and against which policy files."""

    periods: tuple[PeriodKind, ...] = Field(
        ("day",), description="Periods reported as soon as they are over: day, month, year."
    )
    grace_s: float = Field(
        900.0, ge=0, description="Wait this long after a period ends (late data) before its "
        "report may be built."
    )
    since: date | None = Field(
        None, description="First local day to report; default: the first day with samples "
        "in the store."
    )
    policy: Path | None = Field(None, description="Tier policy YAML; default: the packaged one.")
    declarations: Path | None = Field(
        None, description="The factory's own declarations YAML; without it declared "
        "conditions are not_declared."
    )
    benchmarks: Path | None = Field(
        None, description="Benchmark values YAML; without it benchmark conditions are "
        "not_declared."
    )
    key_dir: Path | None = Field(
        None, description="Signing key folder (`tieragent keys init`); default: <data-dir>/keys."
    )
    passphrase: Secret | None = Field(
        None, description="Passphrase of an encrypted signing key ({env: ...} or {file: ...})."
    )
    bureau_id: str = Field("bureau", min_length=1, description="Audience of the reports.")
    check_every_s: float = Field(
        60.0, gt=0, description="How often the agent looks for periods that are due."
    )

    @field_validator("periods")
    @classmethod
    def _periods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list at least one of day, month, year")
        if len(set(value)) != len(value):
            raise ValueError("each period kind once")
        return value


class Delivery(Strict):
    """How reports reach the bureau: MQTT broker, TLS, credentials and the pinned bureau key."""

    broker_url: str = Field(..., description="mqtt://host:1883 or mqtts://host:8883.")
    bureau_key: Path = Field(
        ..., description="The bureau's receipt-signing public JWK(s), as the bureau gave them."
    )
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="MQTT version: auto starts with 5 and uses 3.1.1 from the first "
        "time the broker refuses 5 (said once in the log).")
    client_id: str | None = Field(None, description="Default: tieragent-<factory_id>.")
    window: int = Field(16, ge=1, le=64, description="Reports in flight at once.")
    keepalive_s: int = Field(30, ge=5, le=3600)
    receipt_timeout_s: float = Field(
        30.0, gt=0, description="Resend a report whose signed receipt is this late (doubling)."
    )
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(60.0, gt=0)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: Secret | None = Field(None, description="{env: VAR} or {file: /path}.")
    stuck_after_s: float = Field(
        21_600.0, gt=0, description="/healthz answers 503 while the oldest undelivered report "
        "is older than this."
    )

    @field_validator("broker_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("mqtt://", "mqtts://")):
            raise ValueError("write mqtt://host:1883 or mqtts://host:8883")
        return value


def resolve_paths(section: Strict, base: Path) -> Strict:
    """`section` with every relative Path field made absolute against `base`."""
    updates: dict[str, Path] = {}
    for name in type(section).model_fields:
        value = getattr(section, name)
        if isinstance(value, Path) and not value.is_absolute():
            updates[name] = base / value
    return section.model_copy(update=updates) if updates else section
