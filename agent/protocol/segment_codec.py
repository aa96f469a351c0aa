"""Sealed raw-data segments (format v2): compact columnar bytes, exact, and what they hash to.

A segment holds one device signal's samples over one span: a UTC hour, cut at the factory's
local midnights (for a zone with a half-hour offset an hour becomes two spans). Its bytes are
what the agent seals and stores, what an audit bundle carries, and what the Merkle leaf
hashes: leaf = SHA-256(0x00 || bytes) (agent.protocol.merkle).

Layout: the header `tieragent-segment/v2\\n<device_id>\\n<signal_id>\\n<start>\\n<end>\\n`
(UTF-8, span as epoch seconds [start, end)), then, with v = unsigned LEB128 varint and C an
integer column (agent.protocol.columns: a header byte with the delta order 0, 1 or 2 and
whether byte planes follow, then v(length) + zigzag varints, or u8 width + `width` byte planes
of the zigzag codes; whichever is smaller for this segment):

    v(n)                               samples, sorted by (source_ts, received_ts, arrival)
    C of n                             source_ts: the float64 bit patterns as int64, minus
                                       those of float64(start)
    u8 mode, C of n                    received_ts: mode 0x10 codes its bits minus source_ts's
                                       bits, 0x20 its own bits minus those of float64(start)
    v(length), v((run << 6) | flags)   per-sample flags, run-length coded: bits 0-1 value kind
                                       (0 none, 1 float, 2 int, 3 str), bits 2-3 quality
                                       (0 good, 1 uncertain, 2 bad), bit 4 "keyed by receive
                                       time" (a late sample whose source time lies in a sealed
                                       day, or a skewed source clock), bit 5 "int >= 2^63"
    floats, if any:  'E' u8 e, C       every float of the segment is m / 10^e exactly (m an
                                       integer, |m| <= 2^53, e <= 9): the m
                     'X', 8 x k bytes  else each float's bits XOR the previous float's, as 8
                                       byte planes (least significant first)
    ints, if any:    C                 as int64 (an int >= 2^63 as int - 2^64, flag bit 5)
    strs, if any:    v(length), (v(len) + UTF-8) per string

Every column decodes to exactly what was encoded: float bit patterns (NaN payloads, -0.0,
infinities), ints from -2^63 to 2^64 - 1, str. Encoding is vectorised over all segments of a
batch (`encode_segments`); `decode_segment` reads one back. The bytes need no general
compressor to be read; the store compresses them (agent.store.sealed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.protocol import columns as col
from agent.protocol.columns import CodecError
from agent.protocol.merkle import leaf_hash

MAGIC = "tieragent-segment/v2"
K_NONE, K_FLOAT, K_INT, K_STR = 0, 1, 2, 3
F_REHOMED, F_BIG = 16, 32
REL, ABS = 0x10, 0x20  # received_ts modes
_DECIMAL, _XOR = ord("E"), ord("X")
_MAX_EXPONENT = 9
_SCALES = np.array([float(10**e) for e in range(_MAX_EXPONENT + 1)])  # exact powers of ten
_EXACT = float(2**53)
_U64 = 1 << 64
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

__all__ = ["CodecError", "SealedSegment", "SegmentSamples", "decode_header", "decode_segment",
           "encode_segments", "sample_count"]


@dataclass(frozen=True, slots=True)
class SealedSegment:
    """One segment's sealed bytes and where it belongs."""

    device_id: str
    signal_id: str
    start: int
    end: int
    data: bytes

    @property
    def hour_start(self) -> int:
        """The span's start (the name the audit bundle's index uses)."""
        return self.start

    @property
    def order_key(self) -> tuple[int, str, str]:
        return (self.start, self.device_id, self.signal_id)

    def digest(self) -> bytes:
        return leaf_hash(self.data)


@dataclass(frozen=True)
class SegmentSamples:
    """A segment decoded: its samples in stored order."""

    device_id: str
    signal_id: str
    start: int
    end: int
    source_ts: F64
    received_ts: F64
    values: list[Any]
    quality: npt.NDArray[np.uint8]
    rehomed: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.source_ts)


def header(device_id: str, signal_id: str, start: int, end: int) -> bytes:
    return f"{MAGIC}\n{device_id}\n{signal_id}\n{start}\n{end}\n".encode()


_uvarint = col.uvarint


def _stream(data: bytes) -> bytes:
    return _uvarint(len(data)) + data


_KINDS: dict[type, int] = {type(None): K_NONE, float: K_FLOAT, int: K_INT, bool: K_INT,
                           str: K_STR}


def _kind(value: Any) -> int:
    kind = _KINDS.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, np.generic):
        return _kind(value.item())
    raise CodecError(f"a sample value of type {type(value).__name__} cannot be sealed")


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _ints(values: npt.NDArray[np.object_]) -> tuple[I64, npt.NDArray[np.bool_]]:
    """Python ints as int64 bit patterns, and which were >= 2^63 (kept as int - 2^64)."""
    try:
        return values.astype(np.int64), np.zeros(len(values), dtype=bool)
    except OverflowError:
        plain = [int(_plain(v)) for v in values]
        for v in plain:
            if not -(2**63) <= v < _U64:
                raise CodecError(f"the int {v} is outside int64 and uint64") from None
        big = np.array([v >= 2**63 for v in plain], dtype=bool)
        return np.array([v - _U64 if v >= 2**63 else v for v in plain], dtype=np.int64), big


def _decimal_exponents(floats: F64, starts: I64) -> I64:
    """Per segment, the smallest e <= 9 with every float exactly m / 10^e (|m| <= 2^53),
    else -1."""
    best = np.full(len(floats), -1, dtype=np.int64)
    todo = np.arange(len(floats))
    with np.errstate(all="ignore"):
        for e in range(_MAX_EXPONENT + 1):
            if not len(todo):
                break
            ok = _is_decimal(floats[todo], _SCALES[e])
            best[todo[ok]] = e
            todo = todo[~ok]
        best[best < 0] = 99
        chosen = np.maximum.reduceat(best, starts) if len(starts) else best[:0]
        chosen[chosen > _MAX_EXPONENT] = -1
        # Exact at its own exponent need not mean exact at a larger one near 2^53: check.
        per_value = np.repeat(chosen, np.diff(np.r_[starts, len(floats)]))
        scale = _SCALES[np.maximum(per_value, 0)]
        ok = _is_decimal(floats, scale) | (per_value < 0)
        if len(starts):
            chosen[~np.logical_and.reduceat(ok, starts)] = -1
    return chosen


def _is_decimal(floats: F64, scale: float | F64) -> npt.NDArray[np.bool_]:
    mantissa = np.rint(floats * scale)
    ok = np.abs(mantissa) <= _EXACT  # False for NaN and infinities
    back = np.where(ok, mantissa, 0).astype(np.int64).astype(np.float64) / scale
    return ok & (back.view(np.uint64) == floats.view(np.uint64))


def _factorized(labels: npt.NDArray[Any] | Sequence[str]) -> tuple[npt.NDArray[np.str_], I64]:
    """`np.unique(np.asarray(labels, dtype=str), return_inverse=True)` through a dict: a few
    distinct ids over thousands of samples, where sorting the strings costs milliseconds.
    Labels other than plain str (or ending in NUL, which numpy's str drops) take numpy's way."""
    index: dict[Any, int] = {}
    raw = [index.setdefault(label, len(index)) for label in labels]
    if not all(type(name) is str and not name.endswith("\x00") for name in index):
        found, inverse = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
        return found, inverse.reshape(-1).astype(np.int64)
    names = sorted(index)
    rank = np.empty(len(names), dtype=np.int64)
    rank[[index[name] for name in names]] = np.arange(len(names))
    return np.array(names, dtype=str), rank[np.array(raw, dtype=np.int64)]


def _bounds(ids: I64) -> tuple[I64, I64]:
    """For values sorted by segment id: the segments that have any, and their first index."""
    present, first = np.unique(ids, return_index=True)
    return present.astype(np.int64), first.astype(np.int64)


def encode_segments(
    device_id: str | npt.NDArray[Any] | Sequence[str],
    signal_id: npt.NDArray[Any] | Sequence[str], span_start: I64, span_end: I64,
    source_ts: F64, received_ts: F64, values: Sequence[Any], quality: npt.NDArray[Any],
    rehomed: npt.NDArray[np.bool_],
) -> list[SealedSegment]:
    """The sealed segments of samples (any order; one device, or a device per sample), in
    leaf order: by span, device, signal. Raises CodecError for a value that cannot be sealed
    (see the module docstring)."""
    n = len(source_ts)
    if n == 0:
        return []
    if isinstance(device_id, str):
        devices, device_codes = np.array([device_id]), np.zeros(n, dtype=np.int64)
    else:
        devices, device_codes = _factorized(device_id)
    names, codes = _factorized(signal_id)
    order = np.lexsort((np.arange(n), received_ts, source_ts, codes, device_codes, span_start))
    device_codes = np.asarray(device_codes, np.int64)[order]
    codes, spans = codes[order].astype(np.int64), np.asarray(span_start, np.int64)[order]
    span_ends = np.asarray(span_end, np.int64)[order]
    source = np.ascontiguousarray(source_ts, dtype=np.float64)[order].view(np.int64)
    received = np.ascontiguousarray(received_ts, dtype=np.float64)[order].view(np.int64)
    objects = np.empty(n, dtype=object)
    objects[:] = list(values)
    objects = objects[order]
    changed = np.r_[True, (codes[1:] != codes[:-1]) | (spans[1:] != spans[:-1])
                    | (device_codes[1:] != device_codes[:-1])]
    starts = np.flatnonzero(changed)
    segment_of = np.cumsum(changed) - 1
    n_segments = len(starts)
    counts = np.diff(np.r_[starts, n])

    if set(map(type, objects)) == {float}:  # the usual batch: no value to look at
        kinds = np.full(n, K_FLOAT, dtype=np.uint8)
    else:
        kinds = np.fromiter(map(_kind, objects), dtype=np.uint8, count=n)
    flags = (kinds | (np.asarray(quality, np.uint8)[order].clip(0, 2) << 2)).astype(np.uint8)
    flags |= np.where(np.asarray(rehomed, bool)[order], F_REHOMED, 0).astype(np.uint8)
    ints_at = np.flatnonzero(kinds == K_INT)
    int_values, big = _ints(objects[ints_at])
    flags[ints_at[big]] |= F_BIG

    bases = spans[starts].astype(np.float64).view(np.int64)  # each span start's float64 bits
    relative = col.int_columns(received - source, starts)
    absolute = col.int_columns(received, starts, bases)
    use_relative = relative[1] <= absolute[1]  # the shorter; relative on a tie
    received_parts = [col.constant_part(np.where(use_relative, REL, ABS)),
                      col.pick(use_relative, relative), col.pick(~use_relative, absolute)]
    int_part = _empty_part(n_segments)
    if len(ints_at):
        present, first = _bounds(segment_of[ints_at])
        int_part = col.spread(col.int_columns(int_values, first), present, n_segments)

    names_of = [str(name) for name in names]
    devices_of = [str(device) for device in devices]
    segment_devices, segment_signals = device_codes[starts], codes[starts]
    span_pairs, span_of = np.unique(np.stack([spans[starts], span_ends[starts]], axis=1),
                                    axis=0, return_inverse=True)
    data = col.split(col.interleave([
        col.table_part([f"{MAGIC}\n{device}\n".encode() for device in devices_of],
                       segment_devices),
        col.table_part([f"{name}\n".encode() for name in names_of], segment_signals),
        col.table_part([f"{start}\n{end}\n".encode() for start, end in span_pairs.tolist()],
                       span_of.reshape(-1)),
        col.varint_part(counts),
        col.int_columns(source, starts, bases),
        *received_parts,
        *_flag_runs(flags, changed, segment_of),
        *_floats(objects, kinds, segment_of, n_segments),
        int_part,
        _strings(objects, kinds, segment_of, n_segments),
    ]))
    return [
        SealedSegment(devices_of[device_code], names_of[code], start, end, segment_data)
        for device_code, code, start, end, segment_data in zip(
            segment_devices.tolist(), segment_signals.tolist(), spans[starts].tolist(),
            span_ends[starts].tolist(), data, strict=True,
        )
    ]


def _empty_part(n_segments: int) -> col.Parts:
    return np.zeros(0, dtype=np.uint8), np.zeros(n_segments, dtype=np.int64)


def _flag_runs(flags: npt.NDArray[np.uint8], changed: npt.NDArray[np.bool_],
               segment_of: I64) -> list[col.Parts]:
    """The flags stream of every segment: v(length), then the runs."""
    n = len(flags)
    run_start = np.flatnonzero(changed | np.r_[True, flags[1:] != flags[:-1]])
    runs = np.diff(np.r_[run_start, n]).astype(np.uint64)
    coded = (runs << np.uint64(6)) | flags[run_start].astype(np.uint64)
    lengths = col.varint_lengths(coded)
    _, first = _bounds(segment_of[run_start])  # every segment has a run
    sizes = col.segment_sums(lengths, first)
    return [col.varint_part(sizes), (col.varints(coded, lengths), sizes)]


def _floats(objects: npt.NDArray[np.object_], kinds: npt.NDArray[np.uint8],
            segment_of: I64, n_segments: int) -> list[col.Parts]:
    """The float column of every segment (empty for one without floats): its codec byte,
    then the decimal exponent and mantissas, or the XOR byte planes."""
    at = np.flatnonzero(kinds == K_FLOAT)
    if not len(at):
        return [_empty_part(n_segments)]
    floats = objects[at].astype(np.float64)
    ids = segment_of[at]
    present, first = _bounds(ids)
    exponents = _decimal_exponents(floats, first)
    per_value = np.repeat(exponents, np.diff(np.r_[first, len(floats)]))
    decimal = per_value >= 0
    codec = np.zeros(n_segments, dtype=np.uint8)
    codec[present] = np.where(exponents >= 0, _DECIMAL, _XOR)
    exponent = np.zeros(n_segments, dtype=np.uint8)
    exponent[present] = np.maximum(exponents, 0)
    has_exponent = codec == _DECIMAL
    parts = [
        (codec[codec != 0], (codec != 0).astype(np.int64)),
        (exponent[has_exponent], has_exponent.astype(np.int64)),
    ]
    if decimal.any():
        mantissa = np.rint(floats[decimal] * _SCALES[per_value[decimal]]).astype(np.int64)
        _, sub_first = _bounds(ids[decimal])
        parts.append(col.spread(col.int_columns(mantissa, sub_first), present[exponents >= 0],
                                n_segments))
    if (~decimal).any():
        bits = floats[~decimal].view(np.uint64)
        xor_ids = ids[~decimal]
        previous = np.empty_like(bits)
        previous[1:] = bits[:-1]
        previous[np.r_[True, xor_ids[1:] != xor_ids[:-1]]] = 0
        xored = (bits ^ previous).astype("<u8").view(np.uint8).reshape(-1, 8)
        segments, first_x = _bounds(xor_ids)
        count = np.diff(np.r_[first_x, len(xor_ids)])
        # Byte planes per segment: byte p of its k values at p * k + (the value's place).
        offset = np.cumsum(8 * count) - 8 * count
        each = np.repeat(offset - first_x, count) + np.arange(len(xor_ids))
        each_count = np.repeat(count, count)
        planes = np.empty(8 * len(xor_ids), dtype=np.uint8)
        for plane in range(8):
            planes[each + plane * each_count] = xored[:, plane]
        parts.append(col.spread((planes, 8 * count), segments, n_segments))
    return parts


def _strings(objects: npt.NDArray[np.object_], kinds: npt.NDArray[np.uint8],
             segment_of: I64, n_segments: int) -> col.Parts:
    """The strings stream of each segment that has strings: v(length), then each string as
    v(length) and UTF-8; nothing for the others."""
    parts: dict[int, list[bytes]] = {}
    for index in np.flatnonzero(kinds == K_STR).tolist():
        encoded = _plain(objects[index]).encode("utf-8")  # a lone surrogate raises
        parts.setdefault(int(segment_of[index]), []).extend((_uvarint(len(encoded)), encoded))
    lengths = np.zeros(n_segments, dtype=np.int64)
    streams = []
    for segment in sorted(parts):
        streams.append(_stream(b"".join(parts[segment])))
        lengths[segment] = len(streams[-1])
    return np.frombuffer(b"".join(streams), dtype=np.uint8), lengths


# --- decoding -----------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes, at: int) -> None:
        self.data, self.at = data, at

    def byte(self) -> int:
        if self.at >= len(self.data):
            raise CodecError("the segment ends early")
        self.at += 1
        return self.data[self.at - 1]

    def uvarint(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise CodecError("a varint longer than 10 bytes")

    def take(self, size: int) -> bytes:
        if self.at + size > len(self.data):
            raise CodecError("the segment ends early")
        self.at += size
        return self.data[self.at - size:self.at]

    def stream(self) -> bytes:
        return self.take(self.uvarint())


def _coded(reader: _Reader, count: int, base: int = 0) -> I64:
    values, order, reader.at = col.read_int_column(reader.data, reader.at, count)
    return col.undelta(values, order) + np.int64(base)


def _header(data: bytes) -> tuple[str, str, int, int, int]:
    """(device_id, signal_id, start, end, where the body starts)."""
    lines = data.split(b"\n", 5)
    if len(lines) < 6 or lines[0] != MAGIC.encode():
        raise CodecError(f"not a {MAGIC} segment")
    try:
        device_id, signal_id = lines[1].decode(), lines[2].decode()
        start, end = int(lines[3]), int(lines[4])
    except ValueError as error:
        raise CodecError(f"a malformed segment header ({error})") from None
    return device_id, signal_id, start, end, len(data) - len(lines[5])


def decode_header(data: bytes) -> SealedSegment:
    """A segment's bytes with where they belong, read from their header."""
    device_id, signal_id, start, end, _ = _header(data)
    return SealedSegment(device_id, signal_id, start, end, data)


def sample_count(data: bytes) -> int:
    """How many samples a segment's bytes hold (from its header, without decoding)."""
    *_, body = _header(data)
    return _Reader(data, body).uvarint()


def decode_segment(data: bytes) -> SegmentSamples:
    """A segment's samples back from its bytes (CodecError if they are not a v2 segment)."""
    device_id, signal_id, start, end, body = _header(data)
    reader = _Reader(data, body)
    n = reader.uvarint()
    base = int(np.float64(start).view(np.int64))
    source = _coded(reader, n, base)
    mode = reader.byte()
    if mode not in (REL, ABS):
        raise CodecError(f"unknown received_ts mode {mode:#x}")
    received = _coded(reader, n, base if mode == ABS else 0)
    if mode == REL:
        received = received + source
    runs = col.read_varints(reader.stream())
    flags = np.repeat((runs & np.uint64(63)).astype(np.uint8),
                      (runs >> np.uint64(6)).astype(np.int64))
    if len(flags) != n:
        raise CodecError(f"the flags cover {len(flags)} samples, not {n}")
    kinds = flags & 3
    values: list[Any] = [None] * n
    float_at = np.flatnonzero(kinds == K_FLOAT)
    if len(float_at):
        for index, value in zip(float_at.tolist(), _read_floats(reader, len(float_at)),
                                strict=True):
            values[index] = value
    int_at = np.flatnonzero(kinds == K_INT)
    if len(int_at):
        ints = _coded(reader, len(int_at)).tolist()
        for index, value, big in zip(int_at.tolist(), ints, (flags[int_at] & F_BIG) != 0,
                                     strict=True):
            values[index] = value + _U64 if big else value
    str_at = np.flatnonzero(kinds == K_STR)
    if len(str_at):
        strings = _Reader(reader.stream(), 0)
        for index in str_at.tolist():
            values[index] = strings.take(strings.uvarint()).decode("utf-8")
        if strings.at != len(strings.data):
            raise CodecError("bytes left after the strings")
    if reader.at != len(data):
        raise CodecError("bytes left after the last column")
    return SegmentSamples(
        device_id, signal_id, start, end, source.view(np.float64),
        received.view(np.float64), values, ((flags >> 2) & 3).astype(np.uint8),
        (flags & F_REHOMED) != 0,
    )


def _read_floats(reader: _Reader, count: int) -> list[float]:
    codec = reader.byte()
    if codec == _DECIMAL:
        exponent = reader.byte()
        mantissa = _coded(reader, count)
        if exponent > _MAX_EXPONENT:
            raise CodecError(f"a decimal exponent of {exponent}")
        result: list[float] = (mantissa.astype(np.float64) / _SCALES[exponent]).tolist()
        return result
    if codec != _XOR:
        raise CodecError(f"unknown float codec {codec:#x}")
    planes = np.frombuffer(reader.take(8 * count), dtype=np.uint8).reshape(8, count)
    xored = np.ascontiguousarray(planes.T).view("<u8").ravel()
    floats: list[float] = np.bitwise_xor.accumulate(xored).view(np.float64).tolist()
    return floats
