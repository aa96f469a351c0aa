"""The sealed segment codec (agent.protocol.segment_codec): exact round trips, and the same
bytes whether a segment is encoded with others or alone (issue 17 item 3)."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.protocol.segment_codec import (
    CodecError,
    SealedSegment,
    decode_header,
    decode_segment,
    encode_segments,
)

SPANS = [(1_767_225_600, 1_767_229_200), (1_767_229_200, 1_767_231_000),
         (1_767_231_000, 1_767_232_800)]
NAN_PAYLOAD = struct.unpack("<d", bytes.fromhex("2301000000f8ffff"))[0]  # -NaN, payload 0x123
EXTREMES: list[Any] = [
    2**64 - 1, 2**63, 2**63 - 1, -(2**63), 2**53 + 1, -(2**53) - 1, 0, -1, True, False,
    math.nan, NAN_PAYLOAD, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1.7976931348623157e308,
    0.1, 123.456, "", "RUN", "温度 °C", None,
]

floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**9), 10**9).map(lambda m: m / 1000),  # decimals: the compact path
    st.integers(0, 2**64 - 1).map(lambda bits: struct.unpack("<d", struct.pack("<Q", bits))[0]),
)
values = st.one_of(
    st.none(), floats, st.integers(-(2**63), 2**64 - 1), st.booleans(), st.text(max_size=6),
    st.sampled_from(EXTREMES),
)
times = st.one_of(
    st.floats(1_767_225_600, 1_767_232_800),
    st.integers(1_767_225_600, 1_767_232_800).map(float),
    st.floats(allow_nan=False, allow_infinity=True),  # any pattern of a REAL column
)
samples = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 2), times, times, values,
              st.integers(0, 2), st.booleans()),
    min_size=1, max_size=40,
)


def _encode(rows: list[tuple[Any, ...]], device: str = "M1") -> list[SealedSegment]:
    signal, span, source, received, value, quality, rehomed = zip(*rows, strict=True)
    return encode_segments(
        device, np.array([f"s{i}" for i in signal], dtype=object),
        np.array([SPANS[i][0] for i in span]), np.array([SPANS[i][1] for i in span]),
        np.array(source, dtype=np.float64), np.array(received, dtype=np.float64), list(value),
        np.array(quality, dtype=np.uint8), np.array(rehomed, dtype=bool),
    )


def _bits(value: float) -> bytes:
    return struct.pack("<d", value)


def _same(got: Any, want: Any) -> bool:
    """Exactly the same value: floats bit for bit, ints as ints (a bool as 0 / 1)."""
    if isinstance(want, float):
        return type(got) is float and _bits(got) == _bits(want)
    if isinstance(want, bool):
        return type(got) is int and got == int(want)
    return type(got) is type(want) and got == want


@settings(max_examples=250, deadline=None)
@given(samples)
def test_every_sample_round_trips_exactly(rows: list[tuple[Any, ...]]) -> None:
    """If any samples (any float bit pattern, ints from -2^63 to 2^64-1, bools, str, None, any
    timestamps) are encoded, then each segment decodes to exactly its samples, sorted by
    (source_ts, received_ts, arrival), and encoding one segment alone gives the same bytes."""
    sealed = _encode(rows)
    keys = sorted({(SPANS[r[1]][0], f"s{r[0]}") for r in rows})
    assert [(s.start, s.signal_id) for s in sealed] == keys
    for segment in sealed:
        mine = [(i, r) for i, r in enumerate(rows)
                if (SPANS[r[1]][0], f"s{r[0]}") == (segment.start, segment.signal_id)]
        mine.sort(key=lambda pair: (pair[1][2], pair[1][3], pair[0]))
        decoded = decode_segment(segment.data)
        assert (decoded.device_id, decoded.signal_id) == ("M1", segment.signal_id)
        assert (decoded.start, decoded.end) == SPANS[mine[0][1][1]]
        assert len(decoded) == len(mine)
        for k, (_, row) in enumerate(mine):
            assert _bits(decoded.source_ts[k]) == _bits(row[2])
            assert _bits(decoded.received_ts[k]) == _bits(row[3])
            assert _same(decoded.values[k], row[4]), (decoded.values[k], row[4])
            assert int(decoded.quality[k]) == row[5] and bool(decoded.rehomed[k]) == row[6]
        alone = _encode([row for _, row in mine])
        assert [s.data for s in alone] == [segment.data]
        assert decode_header(segment.data) == segment


def test_extreme_values_round_trip_in_one_segment() -> None:
    """If one segment mixes every extreme value with strings and None, then each decodes
    exactly (uint64 >= 2^63, int64 bounds, NaN payloads, infinities, -0.0)."""
    rows = [(0, 0, 1_767_225_600.0 + i, 1_767_225_600.25 + i, v, 0, False)
            for i, v in enumerate(EXTREMES)]
    (segment,) = _encode(rows)
    decoded = decode_segment(segment.data)
    assert all(_same(got, want) for got, want in zip(decoded.values, EXTREMES, strict=True))


def test_compact_on_a_regular_signal() -> None:
    """If a 1 Hz signal of 3-decimal values is encoded, then the hour takes under 4 bytes per
    sample before any compressor (delta-of-delta timestamps, decimal values)."""
    t = 1_767_225_600.0 + np.arange(3600, dtype=np.float64)
    value = np.round(50 + 40 * np.sin(t / 60.0), 3)
    (segment,) = encode_segments(
        "M1", np.array(["temp"] * 3600, dtype=object), np.full(3600, SPANS[0][0]),
        np.full(3600, SPANS[0][1]), t, t + 0.05, value.tolist(), np.zeros(3600, np.uint8),
        np.zeros(3600, bool),
    )
    assert len(segment.data) / 3600 < 4
    assert decode_segment(segment.data).values == value.tolist()


@pytest.mark.parametrize("cut", [1, 40, -1])
def test_damaged_bytes_are_refused(cut: int) -> None:
    """If a segment's bytes are cut short or extended, then decoding raises CodecError."""
    (segment,) = _encode([(0, 0, 1_767_225_600.0 + i, 1_767_225_601.0 + i, float(i), 0, False)
                          for i in range(10)])
    data = segment.data[:cut] if cut > 0 else segment.data + b"\x00"
    with pytest.raises(CodecError):
        decode_segment(data)


def test_a_value_that_cannot_be_sealed_is_refused() -> None:
    with pytest.raises(CodecError):
        _encode([(0, 0, 1.0, 1.0, 2**64, 0, False)])
    with pytest.raises(CodecError):
        _encode([(0, 0, 1.0, 1.0, [1, 2], 0, False)])
