"""Pure mapping from OPC UA values to `Sample`s: quality, value, timestamp, node ids.

- Quality comes from the StatusCode severity bits (two top bits: 00 good, 01 uncertain,
  1x bad); the full StatusCode is kept verbatim in `Sample.status`.
- The timestamp is the SourceTimestamp; without one the ServerTimestamp; without that
  the receive time. `Sample.ts_origin` records which.
- A bad sample carries no value (the server's value is meaningless then).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from asyncua import ua

from connectors.base import SignalBinding
from connectors.sample import Quality, Sample, SampleValue, TimestampOrigin

# OPC UA DateTime zero (1601-01-01) and earlier mean "no timestamp". Naive UTC datetimes,
# as asyncua decodes them: subtracting them is several times faster than .timestamp().
_NO_TIME_BEFORE = datetime(1601, 1, 2)
_EPOCH = datetime(1970, 1, 1)


# Quality by the two severity bits; a tuple lookup, as this runs for every notification.
_QUALITY_BY_SEVERITY = (Quality.GOOD, Quality.UNCERTAIN, Quality.BAD, Quality.BAD)
_BAD, _SOURCE = Quality.BAD, TimestampOrigin.SOURCE


def quality_of(status: int) -> Quality:
    """Quality from the StatusCode severity bits."""
    return _QUALITY_BY_SEVERITY[(status >> 30) & 0b11]


def epoch_seconds(moment: datetime | None) -> float | None:
    """Epoch seconds of an OPC UA DateTime (naive means UTC); None if absent or zero."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    if moment < _NO_TIME_BEFORE:
        return None
    return (moment - _EPOCH).total_seconds()


def plain_value(value: object) -> SampleValue:
    """A Variant's payload as a bool, int, float, str or None; others become their text."""
    # Tuples, not `bool | float | str`: a union is built anew on every call (hot path).
    if value is None or isinstance(value, (bool, float, str)):
        return value
    if isinstance(value, enum.Enum):
        raw = value.value
        return raw if isinstance(raw, (int, str)) else str(raw)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, datetime):
        return epoch_seconds(value)
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def to_sample(
    binding: SignalBinding, value: ua.DataValue, received: float, held: bool = False
) -> Sample:
    """The Sample for one DataValue of `binding`'s node, received at `received` (epoch s);
    `held`: read as the current value, not notified as a change (`Sample.held`)."""
    status = value.StatusCode.value if value.StatusCode is not None else 0
    quality = quality_of(status)
    source = epoch_seconds(value.SourceTimestamp)
    server = None if source is not None else epoch_seconds(value.ServerTimestamp)
    if source is not None:
        ts, origin = source, _SOURCE
    elif server is not None:
        ts, origin = server, TimestampOrigin.SERVER
    else:
        ts, origin = received, TimestampOrigin.RECEIVED
    payload = value.Value.Value if value.Value is not None else None
    # Positional: this runs for every notification.
    return Sample(binding.device_id, binding.signal_id,
                  None if quality is _BAD else plain_value(payload), quality, ts, received,
                  status, origin, held and quality is not _BAD)


def bad_sample(binding: SignalBinding, status: int, received: float) -> Sample:
    """A BAD sample without value, e.g. for a node the server does not know."""
    return Sample(
        device_id=binding.device_id,
        signal_id=binding.signal_id,
        value=None,
        quality=Quality.BAD,
        source_ts=received,
        received_ts=received,
        status=status,
        ts_origin=TimestampOrigin.RECEIVED,
    )


def parse_node(text: str) -> ua.NodeId:
    """Parse "ns=2;s=..." or "nsu=<namespace uri>;s=..." (resolved per session).

    Raises ValueError with the offending text.
    """
    try:
        return ua.NodeId.from_string(text)
    except (ua.UaStringParsingError, ValueError) as exc:
        raise ValueError(
            f"{text!r} is not an OPC UA node id; write e.g. ns=2;s=Line1/Speed"
        ) from exc


def resolve_node(node: ua.NodeId, namespaces: list[str]) -> ua.NodeId | None:
    """The node id with a namespace index valid in this session, or None if the server
    does not have the namespace URI. Indexes can change when a server restarts, URIs not."""
    uri = getattr(node, "NamespaceUri", None)
    if not uri:
        return ua.NodeId(node.Identifier, node.NamespaceIndex, node.NodeIdType)
    if uri not in namespaces:
        return None
    return ua.NodeId(node.Identifier, ua.Int16(namespaces.index(uri)), node.NodeIdType)
