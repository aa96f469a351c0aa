"""Sealed raw data: which samples go into which segment, the sealing, and the sealed reads.

A local day's raw segments are *sealed* when its report (or a report of its month or year)
is built: every segment of the day is encoded (agent.protocol.segment_codec), the bytes are
stored compressed in `sealed_blocks` (one row per day and device) and the day is recorded
in `sealed_days`, in one transaction. From then on the day's segments are only read from
there: reports, exports and their Merkle roots never read the live `samples` of a sealed day
again, so a signed root never changes.

A sample's *segment time* decides its segment: the source time; the receive time when the
source clock is skewed (docs/reliability.md C3); and the receive time when the source time
lies in a sealed day (a late sample, a held value read long after it last changed, a device
clock days slow). If the receive time is sealed too (history imported into sealed days), the
sample goes to the first unsealed moment after it. `samples.seg_ts` keeps the segment time
where it is not the source time (NULL otherwise), and such a sample is flagged "keyed by
receive time" in its segment, its source time kept as it came.

Functions of a connection; nothing here commits except `seal_days`, which runs its own
transaction (not `Store._transaction`: the report scheduler's store must not write
derivation state).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import zstandard

from agent.derive.sample_columns import SampleColumns, event_times
from agent.derive.slots import HOUR_S
from agent.protocol import columns as col
from agent.protocol.segment_codec import MAGIC, SealedSegment, encode_segments, header
from agent.store.report_reads import merged_ranges
from agent.store.sqlite import StoreError, is_space_error
from agent.store.values import read_value

ZSTD_LEVEL = 9  # level 19 saves 3-5 % for 10-25x the time (BENCHMARKS.md)
F64 = npt.NDArray[np.float64]


# --- segment times at ingest ------------------------------------------------------------


def _sealed(conn: sqlite3.Connection, low: float, high: float) -> tuple[F64, F64]:
    """Sealed days meeting [low, high], adjacent ones merged: (starts, ends)."""
    rows = conn.execute(
        "SELECT start, \"end\" FROM sealed_days WHERE \"end\" > ? AND start <= ? ORDER BY start",
        (low, high),
    ).fetchall()
    merged: list[list[float]] = []
    for start, end in rows:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    table = np.array(merged, dtype=np.float64).reshape(-1, 2)
    return table[:, 0], table[:, 1]


def segment_times(
    conn: sqlite3.Connection, cols: SampleColumns,
) -> tuple[F64, list[float | None] | None]:
    """Per sample, its segment time (see the module docstring), and the same as `seg_ts`
    stores it (None where it is the source time), or None when every one is."""
    key = event_times(cols)  # the receive time for a skewed clock
    if len(cols) == 0:
        return key, None
    low = float(min(key.min(), cols.received_ts.min()))
    high = float(max(key.max(), cols.received_ts.max()))
    starts, ends = _sealed(conn, low, high)
    if len(starts):
        key = np.where(_inside(key, starts, ends), cols.received_ts, key)
        at = np.maximum(np.searchsorted(starts, key, side="right") - 1, 0)
        key = np.where(_inside(key, starts, ends), ends[at], key)
    other = np.flatnonzero(key != cols.source_ts)
    if not len(other):
        return key, None
    stored: list[float | None] = [None] * len(cols)
    for index, value in zip(other.tolist(), key[other].tolist(), strict=True):
        stored[index] = value
    return key, stored


def _inside(ts: F64, starts: F64, ends: F64) -> npt.NDArray[np.bool_]:
    at = np.searchsorted(starts, ts, side="right") - 1
    return (at >= 0) & (ts < ends[np.maximum(at, 0)])


# --- sealing ----------------------------------------------------------------------------


def is_sealed(conn: sqlite3.Connection, start: int) -> bool:
    found = conn.execute("SELECT 1 FROM sealed_days WHERE start = ?", (start,)).fetchone()
    return found is not None


Block = tuple[str, str, int, int, bytes]  # device_id, codec, segments, samples, data
KeyedDigest = tuple[tuple[int, str, str], bytes]  # (leaf order key, leaf hash)


@dataclass(frozen=True)
class SealPlan:
    """A day's sealed blocks computed outside the write lock (by a report worker over its
    read-only connection), with the day's sample ranges they were read from: `seal_days`
    stores them only if those ranges are unchanged (no sample of the day arrived since)."""

    start: int
    end: int
    ranges: list[tuple[str, int, int]]
    blocks: list[Block]
    digests: list[KeyedDigest]


def seal_days(
    conn: sqlite3.Connection, path: object, days: Sequence[tuple[int, int]],
    plans: Sequence[SealPlan] = (),
) -> int:
    """Seal each local day [start, end) of `days` that is not sealed yet, each in its own
    transaction, from its plan where one is given and still holds. Returns how many days
    were sealed other than as planned. StoreError on a database error (disk full)."""
    planned = {plan.start: plan for plan in plans}
    sealed = 0
    for start, end in days:
        plan = planned.get(start)
        if plan is None and is_sealed(conn, start):
            continue
        try:
            conn.execute("BEGIN IMMEDIATE")
            if is_sealed(conn, start):  # sealed meanwhile (by another connection)
                sealed += plan is not None
            elif plan is not None and merged_ranges(conn, start, end) == plan.ranges:
                _insert(conn, start, end, plan.blocks)
            else:
                _insert(conn, start, end, _day_blocks(conn, int(start), int(end))[0])
                sealed += 1
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back itself
                conn.execute("ROLLBACK")
            cause = "the disk is full or failing" if is_space_error(error) else "database error"
            raise StoreError(
                f"{path}: cannot seal the raw data of a day ({cause}: {error})") from error
    return sealed


def plan_seals(conn: sqlite3.Connection, days: Sequence[tuple[int, int]]) -> list[SealPlan]:
    """The plans of the days not sealed yet, each read in one snapshot (any connection)."""
    plans: list[SealPlan] = []
    for start, end in days:
        conn.execute("BEGIN")
        try:
            if not is_sealed(conn, start):
                ranges = merged_ranges(conn, start, end)
                blocks, digests = _day_blocks(conn, int(start), int(end))
                plans.append(SealPlan(int(start), int(end), ranges, blocks, digests))
        finally:
            conn.execute("COMMIT")
    return plans


CHUNK_SAMPLES = 500_000  # samples encoded at once while sealing (memory stays bounded)


def _day_blocks(conn: sqlite3.Connection, start: int, end: int,
                ) -> tuple[list[Block], list[KeyedDigest]]:
    """The day's blocks (one per device) and its segments' leaf hashes."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for device, first, last in merged_ranges(conn, start, end):
        ranges.setdefault(device, []).append((first, last))
    blocks: list[Block] = []
    digests: list[KeyedDigest] = []
    rows: list[tuple[Any, ...]] = []
    devices: list[tuple[str, int]] = []  # the rows' devices: (device_id, rows) in row order
    for number, (device, spans) in enumerate(ranges.items(), start=1):  # whole devices
        before = len(rows)
        for first, last in spans:
            # Without device_id: a string made per row, where the device is known per read.
            rows.extend(conn.execute(
                "SELECT signal_id, source_ts, received_ts, value, quality, seg_ts "
                "FROM samples WHERE rowid BETWEEN ? AND ? AND device_id = ? AND "
                "coalesce(seg_ts, source_ts) >= ? AND coalesce(seg_ts, source_ts) < ? "
                "ORDER BY rowid", (first, last, device, start, end),
            ).fetchall())
        devices.append((device, len(rows) - before))
        if rows and (len(rows) >= CHUNK_SAMPLES or number == len(ranges)):
            segments = _encode(rows, devices, start, end)
            by_device: dict[str, list[bytes]] = {}
            for segment, record in zip(segments, _records(segments), strict=True):
                by_device.setdefault(segment.device_id, []).append(record)
                digests.append((segment.order_key, segment.digest()))
            samples = Counter[str]()
            for name, count in devices:
                samples[name] += count
            compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)  # one set-up per chunk
            for name, records in by_device.items():
                data = compressor.compress(b"".join(records))
                blocks.append((name, CODEC, len(records), samples[name], data))
            rows, devices = [], []
    return blocks, digests


def _insert(conn: sqlite3.Connection, start: int, end: int, blocks: list[Block]) -> None:
    conn.executemany(
        "INSERT INTO sealed_blocks (day_start, device_id, codec, segments, samples, data) "
        "VALUES (?, ?, ?, ?, ?, ?)", [(start, *block) for block in blocks],
    )
    conn.execute('INSERT INTO sealed_days (start, "end") VALUES (?, ?)', (start, end))


def _encode(rows: list[tuple[Any, ...]], devices: list[tuple[str, int]], start: int, end: int,
            ) -> list[SealedSegment]:
    signal, source, received, value, quality, seg = zip(*rows, strict=True)
    source_ts = np.array(source, dtype=np.float64)
    segment_ts = np.array(seg, dtype=np.float64)  # NULL (None) reads as NaN
    rehomed = ~np.isnan(segment_ts)
    hour = np.floor(np.where(rehomed, segment_ts, source_ts) / HOUR_S) * HOUR_S
    values = list(value)
    for index in [i for i, v in enumerate(values) if type(v) is bytes]:
        values[index] = read_value(values[index])  # a tagged BLOB (agent.store.values)
    names, counts = zip(*devices, strict=True)
    return encode_segments(
        np.repeat(np.array(names, dtype=object), counts), np.array(signal, dtype=object),
        np.maximum(hour, start).astype(np.int64), np.minimum(hour + HOUR_S, end).astype(np.int64),
        source_ts, np.array(received, dtype=np.float64), values,
        np.array(quality, dtype=np.uint8), rehomed,
    )


# --- blocks -----------------------------------------------------------------------------


CODEC = "zstd"  # sealed_blocks.codec: zstd of the records below


def pack(segments: Sequence[SealedSegment]) -> tuple[str, bytes]:
    """One device's segments as a block (codec, bytes): per segment, in leaf order, its
    signal id, span and body (the bytes after its header), zstd-compressed. The header is a
    function of the device, signal and span (`segment_codec.header`), so a block holds it
    once, in the row, and `unpack` gives back each segment's bytes exactly."""
    data = b"".join(_records(segments))
    return CODEC, zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)


def _records(segments: Sequence[SealedSegment]) -> list[bytes]:
    """Each segment's record in a block: v(len) + signal id, v(start), v(end - start),
    v(len) + body; all segments at once (agent.protocol.columns parts), a day has thousands.
    StoreError for a segment that does not start with its header."""
    if not segments:
        return []
    datas = [segment.data for segment in segments]
    data = (np.frombuffer(b"".join(datas), dtype=np.uint8),
            np.fromiter(map(len, datas), dtype=np.int64, count=len(datas)))
    device_codes, device_names = _codes([segment.device_id for segment in segments])
    signal_codes, signal_names = _codes([segment.signal_id for segment in segments])
    starts = np.fromiter((segment.start for segment in segments), np.int64, len(segments))
    ends = np.fromiter((segment.end for segment in segments), np.int64, len(segments))
    spans, span_codes = np.unique(np.stack([starts, ends], axis=1), axis=0, return_inverse=True)
    head = col.interleave([
        col.table_part([f"{MAGIC}\n{name}\n".encode() for name in device_names], device_codes),
        col.table_part([f"{name}\n".encode() for name in signal_names], signal_codes),
        col.table_part([f"{a}\n{b}\n".encode() for a, b in spans.tolist()],
                       span_codes.reshape(-1)),
    ])
    body = _after_headers(segments, data, head)
    signal_field = [col.uvarint(len(name.encode())) + name.encode() for name in signal_names]
    return col.split(col.interleave([
        col.table_part(signal_field, signal_codes), col.varint_part(starts),
        col.varint_part(ends - starts), col.varint_part(body[1]), body,
    ]))


def _codes(names: list[str]) -> tuple[npt.NDArray[np.int64], list[str]]:
    """Each name's index in the list of distinct names, and that list."""
    index: dict[str, int] = {}
    codes = [index.setdefault(name, len(index)) for name in names]
    return np.array(codes, dtype=np.int64), list(index)


def _after_headers(segments: Sequence[SealedSegment], data: col.Parts, head: col.Parts,
                   ) -> col.Parts:
    """Each segment's bytes after its header; StoreError for one that does not start with
    the header of its device, signal and span."""
    blob, lengths = data
    head_lengths = head[1]
    at = np.cumsum(lengths) - lengths
    short = head_lengths > lengths
    in_head = np.repeat(at, head_lengths) + np.arange(int(head_lengths.sum())) - np.repeat(
        np.cumsum(head_lengths) - head_lengths, head_lengths)
    bad = np.flatnonzero(short)
    if not len(bad) and len(in_head):
        wrong = blob[in_head] != head[0]
        bad = np.flatnonzero(np.logical_or.reduceat(wrong, np.cumsum(head_lengths) - head_lengths))
    if len(bad):
        segment = segments[int(bad[0])]
        raise StoreError(f"segment of {segment.device_id}/{segment.signal_id} at "
                         f"{segment.start} does not start with its header")
    keep = np.ones(len(blob), dtype=bool)
    keep[in_head] = False
    return blob[keep], lengths - head_lengths


def unpack(device_id: str, codec: str, data: bytes) -> Iterator[SealedSegment]:
    """The segments of a block, in stored order, each with its bytes exactly as sealed."""
    if codec != CODEC:
        raise StoreError(f"a sealed block in an unknown codec {codec!r}")
    plain = zstandard.ZstdDecompressor().decompress(data)
    at = 0

    def number() -> int:
        nonlocal at
        value, shift = 0, 0
        while True:
            byte = plain[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while at < len(plain):
        size = number()
        signal = plain[at:at + size].decode()
        at += size
        start = number()
        end = start + number()
        size = number()
        body = plain[at:at + size]
        at += size
        yield SealedSegment(device_id, signal, start, end,
                            header(device_id, signal, start, end) + body)


# --- reads ------------------------------------------------------------------------------


def _blocks(conn: sqlite3.Connection, start: float, end: float) -> Iterator[SealedSegment]:
    for device, codec, data in conn.execute(
        "SELECT device_id, codec, data FROM sealed_blocks WHERE day_start >= ? AND "
        "day_start < ?", (start, end),
    ).fetchall():
        yield from unpack(device, codec, data)


def sealed_segments(conn: sqlite3.Connection, start: float, end: float) -> list[SealedSegment]:
    """The sealed segments of the days starting in [start, end), in leaf order."""
    return sorted(_blocks(conn, start, end), key=lambda segment: segment.order_key)


def sealed_digests(
    conn: sqlite3.Connection, start: float, end: float, plans: Sequence[SealPlan] = (),
) -> list[bytes]:
    """Leaf hashes of `sealed_segments(start, end)`, and of the planned days' segments, in
    leaf order (without keeping the segments' bytes: a year's digests in little memory)."""
    keyed = [(segment.order_key, segment.digest()) for segment in _blocks(conn, start, end)]
    keyed += [pair for plan in plans if start <= plan.start < end for pair in plan.digests]
    keyed.sort(key=lambda pair: pair[0])
    return [digest for _, digest in keyed]


def delete_sealed_before(conn: sqlite3.Connection, cutoff: float) -> int:
    """Delete the sealed blocks of days that end at or before `cutoff` (raw retention);
    the days stay sealed, so no sample can go into them again."""
    return conn.execute(
        "DELETE FROM sealed_blocks WHERE day_start IN "
        '(SELECT start FROM sealed_days WHERE "end" <= ?)', (cutoff,),
    ).rowcount
