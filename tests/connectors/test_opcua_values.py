# asyncua types ids and timestamps as NewTypes (Int16, DateTime...); plain values are fine.
# mypy: disable-error-code="arg-type"
"""Pure OPC UA value mapping: quality from status bits, timestamps, values, node ids."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from asyncua import ua

from connectors.backoff import Backoff
from connectors.base import SignalBinding
from connectors.config import OpcUaAddress
from connectors.opcua_values import parse_node, plain_value, quality_of, resolve_node, to_sample
from connectors.sample import Quality, TimestampOrigin

BINDING = SignalBinding("D", "s", 1.0, opcua=OpcUaAddress(node="ns=2;s=x"))
T_SOURCE = datetime(2030, 1, 1, tzinfo=UTC)
T_SERVER = datetime(2030, 1, 1, 0, 0, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "quality"),
    [
        (ua.StatusCodes.Good, Quality.GOOD),
        (ua.StatusCodes.GoodClamped, Quality.GOOD),
        (ua.StatusCodes.UncertainInitialValue, Quality.UNCERTAIN),
        (ua.StatusCodes.UncertainSensorNotAccurate, Quality.UNCERTAIN),
        (ua.StatusCodes.BadCommunicationError, Quality.BAD),
        (ua.StatusCodes.BadNodeIdUnknown, Quality.BAD),
        (0xC0000000, Quality.BAD),  # reserved severity 11 is bad too
    ],
)
def test_quality_from_severity_bits(status: int, quality: Quality) -> None:
    """If a status code has a given severity, then the quality follows it."""
    assert quality_of(status) == quality


@pytest.mark.parametrize(
    ("source", "server", "origin", "expected"),
    [
        (T_SOURCE, T_SERVER, TimestampOrigin.SOURCE, T_SOURCE.timestamp()),
        (None, T_SERVER, TimestampOrigin.SERVER, T_SERVER.timestamp()),
        (datetime(1601, 1, 1), T_SERVER, TimestampOrigin.SERVER, T_SERVER.timestamp()),
        (None, None, TimestampOrigin.RECEIVED, 1234.5),
    ],
)
def test_timestamp_fallback(
    source: datetime | None, server: datetime | None, origin: TimestampOrigin, expected: float
) -> None:
    """If the source timestamp is missing (or zero), then the server timestamp is used, and
    without both the receive time; ts_origin records which."""
    value = ua.DataValue(ua.Variant(1.5), SourceTimestamp=source, ServerTimestamp=server)
    sample = to_sample(BINDING, value, 1234.5)
    assert (sample.source_ts, sample.ts_origin, sample.received_ts) == (expected, origin, 1234.5)


def test_naive_datetimes_are_utc() -> None:
    """If asyncua hands out a naive datetime, then it is read as UTC."""
    value = ua.DataValue(ua.Variant(1), SourceTimestamp=datetime(2030, 1, 1))
    assert to_sample(BINDING, value, 0.0).source_ts == T_SOURCE.timestamp()


def test_values_become_plain_types() -> None:
    """If a variant holds an enum, text, time or bytes, then the sample holds a plain value."""
    assert plain_value(ua.ServerState.Running) == 0
    assert plain_value(ua.LocalizedText("Läuft")) == "Läuft"
    assert plain_value(T_SOURCE) == T_SOURCE.timestamp()
    assert plain_value(b"\x01\xff") == "01ff"
    assert plain_value(True) is True and plain_value(7) == 7 and plain_value(None) is None


def test_bad_status_drops_the_value() -> None:
    """If the status is bad, then the sample keeps the code but no value."""
    value = ua.DataValue(ua.Variant(9.0), StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure))
    sample = to_sample(BINDING, value, 1.0)
    assert sample.value is None and sample.status == ua.StatusCodes.BadSensorFailure


def test_namespace_uris_resolve_per_session() -> None:
    """If a node id names its namespace by URI, then it resolves to that URI's current index,
    or to None when the server lacks the namespace."""
    node = parse_node("nsu=urn:plant;s=Line1/Speed")
    assert resolve_node(node, ["http://opcfoundation.org/UA/", "urn:x", "urn:plant"]) == ua.NodeId(
        "Line1/Speed", 2
    )
    assert resolve_node(node, ["http://opcfoundation.org/UA/"]) is None
    assert resolve_node(parse_node("ns=3;i=5"), []) == ua.NodeId(5, 3)
    with pytest.raises(ValueError, match="is not an OPC UA node id"):
        parse_node("ns=2;q=?")


def test_backoff_is_capped_full_jitter() -> None:
    """If attempts keep failing, then delays stay within [0, min(max, min*2^n)] and reset."""
    backoff = Backoff(0.5, 4.0)
    ceilings = []
    for _ in range(8):
        ceilings.append(backoff.ceiling())
        assert 0.0 <= backoff.next_delay() <= ceilings[-1]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.ceiling() == 0.5
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)
