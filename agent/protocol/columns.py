"""Columnar integer coding for sealed raw segments (agent.protocol.segment_codec), vectorised.

Everything here works on many segments at once: a column is one int64 array holding the
values of every segment back to back, `starts` the index of each segment's first value.
Arithmetic wraps modulo 2^64 (numpy's integer arrays do), so any 64-bit pattern codes and
decodes exactly: a float64 timestamp's bits, an int64, a uint64 shifted by 2^64.

- **zigzag varints** (LEB128 of (x << 1) ^ (x >> 63)): small magnitudes of either sign in
  one byte, any int64 in at most ten.
- **byte planes**: the low `width` bytes of each zigzag code, plane by plane (all first
  bytes, then all second bytes...): no continuation bits, and each byte position's
  regularities together for the compressor that stores them.
- **delta of order k** within each segment, from a base per segment (a timestamp's span
  start, else 0): order 0 keeps each value minus the base (random values: no delta doubles
  their spread), order 1 the first value minus the base and then x[i] - x[i-1], order 2 also
  the first delta and then the deltas' deltas (delta-of-delta: zero for a regular clock or a
  constant rate).

`int_columns` picks, per segment, the order and the form (varints or planes) that take the
fewest bytes; `read_int_column` reads one back. A segment's bytes are assembled from byte
*parts* of all segments at once (`interleave`): per-segment Python is what a day of a few
thousand short segments spent its time on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
ORDERS = (0, 1, 2)
_THRESHOLDS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)


def zigzag(values: I64) -> npt.NDArray[np.uint64]:
    return ((values << 1) ^ (values >> 63)).view(np.uint64)


def unzigzag(values: npt.NDArray[np.uint64]) -> I64:
    return ((values >> np.uint64(1)) ^ (np.uint64(0) - (values & np.uint64(1)))).view(np.int64)


def varint_lengths(values: npt.NDArray[np.uint64]) -> I64:
    """Bytes of each value's LEB128 varint (1 to 10)."""
    return np.searchsorted(_THRESHOLDS, values, side="right").astype(np.int64) + 1


def varints(values: npt.NDArray[np.uint64], lengths: I64 | None = None) -> U8:
    """LEB128 varints of `values`, back to back."""
    if lengths is None:
        lengths = varint_lengths(values)
    out = np.empty(int(lengths.sum()), dtype=np.uint8)
    offsets = np.cumsum(lengths) - lengths
    for byte in range(int(lengths.max(initial=0))):
        at = np.flatnonzero(lengths > byte)
        chunk = (values[at] >> np.uint64(7 * byte)) & np.uint64(0x7F)
        more = (lengths[at] > byte + 1).astype(np.uint64) << np.uint64(7)
        out[offsets[at] + byte] = (chunk | more).astype(np.uint8)
    return out


class CodecError(ValueError):
    """Bytes that are not a well-formed column."""


def read_varints(data: bytes | memoryview, count: int | None = None) -> npt.NDArray[np.uint64]:
    """The varints filling `data`: exactly `count` of them unless None (CodecError
    otherwise)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(raw < 0x80)
    if len(raw) and (not len(ends) or ends[-1] != len(raw) - 1):
        raise CodecError("a column ends inside a varint")
    if count is not None and len(ends) != count:
        raise CodecError(f"expected {count} varints, found {len(ends)}")
    count = len(ends)
    if count == 0:
        return np.zeros(0, dtype=np.uint64)
    starts = np.r_[0, ends[:-1] + 1]
    if int((ends - starts).max()) > 9:
        raise CodecError("a varint longer than 10 bytes")
    group = np.zeros(len(raw), dtype=np.int64)
    group[starts[1:]] = 1
    group = np.cumsum(group)
    shift = (np.arange(len(raw)) - starts[group]).astype(np.uint64) * np.uint64(7)
    parts = (raw & 0x7F).astype(np.uint64) << shift
    return np.add.reduceat(parts, starts)


def deltas(values: I64, starts: I64, order: int, bases: I64 | None = None) -> I64:
    """Per segment, `values` minus the segment's base (0 without `bases`) as deltas of
    `order`: 0 keeps them, 1 keeps the first and then x[i] - x[i-1], 2 keeps the first and
    the first delta and then the deltas' deltas."""
    n = len(values)
    counts = np.diff(np.r_[starts, n])
    base = np.zeros(n, dtype=np.int64) if bases is None else np.repeat(bases, counts)
    first = np.zeros(n, dtype=bool)
    first[starts] = True
    previous = np.empty_like(values)
    previous[1:] = values[:-1]
    previous[first] = base[first]
    delta1 = values - previous
    second = np.zeros(n, dtype=bool)
    following = starts + 1
    following = following[following < n]
    second[following[~first[following]]] = True
    before = np.empty_like(delta1)
    before[1:] = delta1[:-1]
    before[first | second] = 0
    return {0: values - base, 1: delta1, 2: delta1 - before}[order]


def undelta(coded: I64, order: int) -> I64:
    """One segment's values back from `deltas` of `order` (the base still to be added)."""
    if order == 0 or not len(coded):
        return coded
    if order == 2 and len(coded) > 2:
        coded = coded.copy()
        coded[1:] = np.cumsum(coded[1:])
    return np.cumsum(coded)


def segment_sums(per_value: I64, starts: I64) -> I64:
    """Per-segment sums of `per_value` (segments non-empty, back to back)."""
    if len(starts) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.add.reduceat(per_value, starts)


PLANES = 4  # column header bit: byte planes, not varints

# A byte part of many segments: every segment's bytes back to back, and each one's length.
Parts = tuple[U8, I64]


def interleave(parts: Sequence[Parts]) -> Parts:
    """Per segment, its bytes of each part in turn (the parts all cover the same segments):
    the segments' encodings assembled at once, not one `b"".join` per segment."""
    lengths = np.stack([length for _, length in parts], axis=1)
    flat = lengths.ravel()
    out_at = (np.cumsum(flat) - flat).reshape(lengths.shape)
    out = np.empty(int(flat.sum()), dtype=np.uint8)
    for k, (blob, length) in enumerate(parts):
        if len(blob):
            shift = out_at[:, k] - (np.cumsum(length) - length)
            out[np.repeat(shift, length) + np.arange(len(blob))] = blob
    return out, lengths.sum(axis=1)


def constant_part(each: U8) -> Parts:
    """One byte per segment."""
    return np.asarray(each, dtype=np.uint8), np.ones(len(each), dtype=np.int64)


def varint_part(values: npt.NDArray[np.uint64] | I64) -> Parts:
    """One unsigned LEB128 varint per segment."""
    codes = np.asarray(values).astype(np.uint64)
    lengths = varint_lengths(codes)
    return varints(codes, lengths), lengths


def table_part(table: Sequence[bytes], index: I64) -> Parts:
    """Per segment, the bytes `table[index]` (a header line, a name)."""
    sizes = np.array([len(entry) for entry in table], dtype=np.int64)
    lengths = sizes[index]
    source = np.frombuffer(b"".join(table), dtype=np.uint8)
    shift = (np.cumsum(sizes) - sizes)[index] - (np.cumsum(lengths) - lengths)
    return source[np.repeat(shift, lengths) + np.arange(int(lengths.sum()))], lengths


def spread(part: Parts, present: I64, n_segments: int) -> Parts:
    """A part of the segments `present` (ascending) as one of all `n_segments`: empty for
    the others."""
    lengths = np.zeros(n_segments, dtype=np.int64)
    lengths[present] = part[1]
    return part[0], lengths


def pick(mask: npt.NDArray[np.bool_], part: Parts) -> Parts:
    """`part` of the segments where `mask` holds, empty for the others."""
    blob, lengths = part
    return blob[np.repeat(mask, lengths)], np.where(mask, lengths, 0)


def split(part: Parts) -> list[bytes]:
    """Each segment's bytes."""
    data = part[0].tobytes()
    ends = np.cumsum(part[1])
    return [data[a:b] for a, b in zip((ends - part[1]).tolist(), ends.tolist(), strict=True)]


_BYTE_THRESHOLDS = np.array([1] + [1 << (8 * k) for k in range(1, 8)], dtype=np.uint64)


def byte_widths(codes: npt.NDArray[np.uint64]) -> I64:
    """Bytes of each value's significant part (0 for 0, up to 8)."""
    return np.searchsorted(_BYTE_THRESHOLDS, codes, side="right").astype(np.int64)


def int_columns(values: I64, starts: I64, bases: I64 | None = None) -> Parts:
    """Each segment's column of int64 `values`, in the form that takes the fewest bytes:
    deltas of order 0, 1 or 2 (from the segment's base), as zigzag varints or as byte
    planes (the low `width` bytes of each zigzag code, plane by plane: a compressor finds
    each byte position's regularities). A segment's column is a byte `order | PLANES?`, then
    `width` and the planes, or v(length) and the varints."""
    n = len(values)
    counts = np.diff(np.r_[starts, n])
    options: list[tuple[int, bool, npt.NDArray[np.uint64], I64]] = []
    sizes: list[I64] = []
    for order in ORDERS:
        code = zigzag(deltas(values, starts, order, bases))
        lengths = varint_lengths(code)
        width = np.maximum.reduceat(byte_widths(code), starts) if n else np.zeros(0, np.int64)
        options += [(order, False, code, lengths), (order, True, code, width)]
        sizes += [segment_sums(lengths, starts), 1 + counts * width]
    best = np.argmin(np.vstack(sizes), axis=0)
    chosen_sizes = np.vstack(sizes)[best, np.arange(len(starts))]
    ends = np.cumsum(chosen_sizes)
    begins = ends - chosen_sizes
    out = np.zeros(int(ends[-1]) if len(ends) else 0, dtype=np.uint8)
    segment_of = np.repeat(np.arange(len(starts)), counts)
    local = np.arange(n) - np.repeat(starts, counts)
    kind = np.zeros(len(starts), dtype=np.uint8)  # the column's first byte
    for option, (order, planes, code, measure) in enumerate(options):
        picked = np.flatnonzero(best == option)
        if not len(picked):
            continue
        rows = np.isin(segment_of, picked)
        if planes:
            width = measure[segment_of[rows]]
            at = begins[segment_of[rows]] + 1 + local[rows]  # the planes follow the width
            for plane in range(int(width.max(initial=0))):
                write = width > plane
                shift = np.uint64(8 * plane)
                out[(at + plane * counts[segment_of[rows]])[write]] = (
                    (code[rows][write] >> shift) & np.uint64(0xFF)).astype(np.uint8)
            out[begins[picked]] = measure[picked]
            kind[picked] = order | PLANES
        else:
            sub_starts = np.flatnonzero(np.r_[True, np.diff(segment_of[rows]) != 0])
            blob = varints(code[rows], measure[rows])
            sub_lengths = segment_sums(measure[rows], sub_starts)
            offsets = np.repeat(begins[picked] - np.cumsum(sub_lengths) + sub_lengths,
                                sub_lengths)
            out[offsets + np.arange(len(blob))] = blob
            kind[picked] = order
    with_length = (kind & PLANES) == 0  # varints: their length in bytes comes first
    length_of = chosen_sizes[with_length].astype(np.uint64)
    length_sizes = np.zeros(len(starts), dtype=np.int64)
    length_sizes[with_length] = varint_lengths(length_of)
    return interleave([constant_part(kind), (varints(length_of), length_sizes),
                       (out, chosen_sizes)])


def read_int_column(data: bytes, at: int, count: int) -> tuple[I64, int, int]:
    """(zigzag-decoded values before undelta, their order, where the column ends) of a
    column written by `int_columns` at `data[at]`."""
    if at >= len(data):
        raise CodecError("the segment ends early")
    header = data[at]
    order, planes = header & 3, bool(header & PLANES)
    if order not in ORDERS or header & ~(3 | PLANES):
        raise CodecError(f"an unknown column header {header:#x}")
    at += 1
    if planes:
        if at >= len(data) or data[at] > 8:
            raise CodecError("a byte-plane column without a valid width")
        width = data[at]
        end = at + 1 + width * count
        if end > len(data):
            raise CodecError("the segment ends early")
        raw = np.frombuffer(data, dtype=np.uint8, count=width * count, offset=at + 1)
        codes = np.zeros(count, dtype=np.uint64)
        for plane in range(width):
            codes |= raw[plane * count:(plane + 1) * count].astype(np.uint64) << np.uint64(
                8 * plane)
        return unzigzag(codes), order, end
    size, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise CodecError("a malformed column length")
        byte = data[at]
        at += 1
        size |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    if at + size > len(data):
        raise CodecError("the segment ends early")
    return unzigzag(read_varints(data[at:at + size], count)), order, at + size


def uvarint(value: int) -> bytes:
    """One unsigned LEB128 varint (the small ones from a table: segments are many)."""
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [bytes([value]) for value in range(0x80)]
