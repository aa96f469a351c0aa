"""The one thing every connector produces: a `Sample`.

Timestamps are float seconds since the Unix epoch, UTC. Wall-clock time is used only for
timestamps; timers and backoff use `time.monotonic()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Quality(StrEnum):
    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class TimestampOrigin(StrEnum):
    """Where `source_ts` came from, in order of preference."""

    SOURCE = "source"  # the device / OPC UA SourceTimestamp
    SERVER = "server"  # OPC UA ServerTimestamp (no source timestamp given)
    RECEIVED = "received"  # nothing from the protocol: the agent's receive time


SampleValue = float | int | bool | str | None


@dataclass(frozen=True, slots=True)
class Sample:
    device_id: str
    signal_id: str
    value: SampleValue
    quality: Quality
    source_ts: float
    received_ts: float
    # Protocol status kept verbatim: OPC UA StatusCode value, Modbus exception code, 0 = good.
    status: int = 0
    ts_origin: TimestampOrigin = TimestampOrigin.SOURCE
    # A value the connector read as the signal's current value, not one notified as a change:
    # the first value of a session (OPC UA's read after subscribing, a first poll) or a poll
    # that finds the same source timestamp as the previous one. Its source timestamp says when
    # the value last changed, which may be long before it was read (docs/indicators.md §5).
    held: bool = False
