"""The contract between connectors and the agent runtime.

A connector owns one connection (one OPC UA server session or one Modbus TCP socket),
reads the signals bound to it, and hands `Sample` batches to a sink. It reconnects by
itself (capped exponential backoff with jitter) and reports link changes; it never
stores, derives or decides anything else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from connectors.config import ModbusAddress, OpcUaAddress
from connectors.sample import Sample


@dataclass(frozen=True, slots=True)
class SignalBinding:
    """One signal of one device, as the connector needs it."""

    device_id: str
    signal_id: str
    interval_s: float
    opcua: OpcUaAddress | None = None
    modbus: ModbusAddress | None = None
    unit_id: int | None = None  # Modbus unit id of the device


class LinkState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """A change of the connection's state; `ts` is wall-clock epoch seconds."""

    state: LinkState
    ts: float
    reason: str = ""


# Awaiting the sink is the backpressure: a connector must not read faster than it drains.
SampleSink = Callable[[Sequence[Sample]], Awaitable[None]]
LinkSink = Callable[[LinkEvent], None]


class Connector(Protocol):
    name: str

    async def run(self, samples: SampleSink, links: LinkSink) -> None:
        """Collect until cancelled. Never returns normally; never raises for link errors."""
        ...
