"""Every sample value type kept exactly by the store (issue 16 item 5).

SQLite holds ints only up to 2^63 - 1 and turns NaN into NULL; agent.store.values keeps
uint64 values and NaN as tagged BLOBs. A value the store cannot hold at all becomes a BAD
sample (counted, logged once per device and signal), never a failed batch.
"""

from __future__ import annotations

import logging
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from agent_testkit import T0, modbus_config, sample

from agent.derive.sample_columns import O_SOURCE, SampleColumns
from agent.protocol.period import Period
from agent.protocol.segment_codec import SegmentSamples, decode_segment
from agent.store import Store
from agent.store.values import INT64_MAX, INT64_MIN, UINT64_MAX
from indicators.vocabulary import Q_BAD, Q_GOOD

HOUR = 3600.0


def _open(tmp_path: Path, **collection: Any) -> Store:
    store = Store.open(tmp_path / "agent.db", modbus_config(**collection))
    store.resume(T0)
    return store


def _reopened(store: Store) -> Store:
    """Close and open again: what is read back comes from the file, not from memory."""
    store.close()
    return Store.open(store.path, store.config)


def _float_bits(value: float) -> bytes:
    return struct.pack(">d", value)


DAY = Period.parse("2026-01-01", "Asia/Shanghai").bounds()  # holds T0 (08:00 local)


def _sealed(store: Store) -> dict[str, SegmentSamples]:
    """The day's raw segments as sealed (agent.store.sealed), decoded, by signal."""
    store.seal_days([DAY])
    return {s.signal_id: decode_segment(s.data) for s in store.sealed_segments(*DAY)}


INTEGERS = [UINT64_MAX, 2**63, INT64_MAX, INT64_MIN, 2**53 + 1, -(2**53) - 1, 0, -1, 7]


def test_integer_extremes_are_read_back_exactly(tmp_path: Path) -> None:
    """If ints from -2^63 to 2^64-1 are ingested next to floats, then raw_samples returns
    each as the same Python int, after a restart (no float rounding, no overflow)."""
    store = _open(tmp_path)
    batch = [sample("temp", T0 + i, v) for i, v in enumerate(INTEGERS)]
    batch += [sample("energy", T0 + i, 0.5 + i) for i in range(3)]
    result = store.ingest(batch)
    assert result.error is None and result.stored == len(batch)
    assert result.bad_by_device == {} and result.unstorable_by_device == {}
    store = _reopened(store)
    raw = store.raw_samples(0, 4e9)
    temps = raw.loc[raw["signal_id"] == "temp", "value"].tolist()
    assert temps == INTEGERS and all(type(v) is int for v in temps)
    assert raw.loc[raw["signal_id"] == "energy", "value"].tolist() == [0.5, 1.5, 2.5]
    assert (raw["quality"] == Q_GOOD).all()
    store.close()


def test_nan_and_infinities_are_read_back_exactly(tmp_path: Path) -> None:
    """If NaN (with sign and payload), +Inf, -Inf and -0.0 are ingested, then each reads
    back bit for bit, and a NaN is not confused with a sample without value."""
    payload_nan = struct.unpack(">d", bytes.fromhex("fff8000000000123"))[0]
    floats = [math.nan, payload_nan, math.inf, -math.inf, -0.0, 1.25]
    store = _open(tmp_path)
    batch = [sample("energy", T0 + i, v) for i, v in enumerate(floats)]
    batch += [sample("temp", T0 + 10, None, quality="bad", status=2),
              sample("state", T0 + 11, "RUN")]  # a str makes the value column objects
    assert store.ingest(batch).error is None
    store = _reopened(store)
    raw = store.raw_samples(0, 4e9)
    energy = raw.loc[raw["signal_id"] == "energy", "value"].tolist()
    assert [_float_bits(v) for v in energy] == [_float_bits(v) for v in floats]
    assert raw.loc[raw["signal_id"] == "temp", "value"].tolist() == [None]
    assert raw.loc[raw["signal_id"] == "state", "value"].tolist() == ["RUN"]
    store.close()


def test_numeric_frames_keep_their_float_dtype(tmp_path: Path) -> None:
    """If a period holds only floats (one NaN) and small ints, then the value column is
    float64 as before this change, so the Merkle digests of existing data do not move."""
    store = _open(tmp_path)
    batch = [sample("energy", T0, 1.5), sample("energy", T0 + 1, math.nan),
             sample("temp", T0 + 2, 3)]
    assert store.ingest(batch).error is None
    raw = store.raw_samples(0, 4e9)
    assert raw["value"].dtype == np.float64
    assert raw["value"].tolist()[0] == 1.5 and math.isnan(raw["value"].tolist()[1])
    store.close()


def test_big_ints_next_to_missing_values_are_read_and_sealed_exactly(tmp_path: Path) -> None:
    """If a numbers-only period holds big ints, floats and a sample without value, then the
    ints read back exact, the missing value reads as NaN (as pandas always read it), and the
    sealed segment keeps each value exactly, the missing one as none."""
    store = _open(tmp_path)
    batch = [sample("temp", T0, 2**60 + 1), sample("temp", T0 + 1, None, quality="bad"),
             sample("temp", T0 + 2, UINT64_MAX), sample("energy", T0 + 3, 1.5)]
    assert store.ingest(batch).error is None
    raw = store.raw_samples(0, 4e9)
    values = raw["value"].tolist()
    assert values[0] == 2**60 + 1 and type(values[0]) is int and values[2] == UINT64_MAX
    assert isinstance(values[1], float) and math.isnan(values[1]) and values[3] == 1.5
    sealed = _sealed(store)
    store.close()
    assert sealed["temp"].values == [2**60 + 1, None, UINT64_MAX]
    assert sealed["temp"].quality.tolist() == [Q_GOOD, Q_BAD, Q_GOOD]
    assert sealed["energy"].values == [1.5]


def test_a_value_the_store_cannot_hold_is_a_bad_sample_and_the_store_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """If samples carry ints beyond uint64 or below int64, a str that is not UTF-8 or an
    unsupported type, then the batch commits: those samples are stored BAD without value,
    counted per device, logged once per device and signal, and later batches still work."""
    store = _open(tmp_path)
    unstorable = [2**64, INT64_MIN - 1, "\ud800", [1, 2]]
    batch = [sample("temp", T0, 5)]
    batch += [sample("temp", T0 + 1 + i, v) for i, v in enumerate(unstorable)]
    batch += [sample("energy", T0 + 6, 2**64 + 5), sample("energy", T0 + 7, UINT64_MAX)]
    with caplog.at_level(logging.WARNING, logger="agent.store.store"):
        first = store.ingest(batch)
        second = store.ingest([sample("temp", T0 + 8, 2**70), sample("temp", T0 + 9, 6)])
    assert first.error is None and first.stored == len(batch)
    assert first.unstorable_by_device == {"M1": 5} and first.bad_by_device == {"M1": 5}
    assert second.error is None and second.unstorable_by_device == {"M1": 1}
    assert store.unstorable_samples == 6
    warnings = [r for r in caplog.records if "cannot be stored" in r.getMessage()]
    assert [r.fields["signal"] for r in warnings] == ["temp", "energy"]  # type: ignore[attr-defined]
    store = _reopened(store)
    raw = store.raw_samples(0, 4e9)
    # Without value: in a numbers-only period that reads as NaN (pandas' reading of NULL).
    temp = raw[raw["signal_id"] == "temp"]
    assert temp["value"].iloc[0] == 5 and temp["value"].iloc[-1] == 6
    assert temp["value"].iloc[1:-1].isna().all()
    assert temp["quality"].tolist() == [Q_GOOD] + [Q_BAD] * 5 + [Q_GOOD]
    energy = raw[raw["signal_id"] == "energy"]
    assert pd.isna(energy["value"].iloc[0]) and energy["value"].iloc[1] == UINT64_MAX
    assert type(energy["value"].iloc[1]) is int
    assert energy["quality"].tolist() == [Q_BAD, Q_GOOD]
    nulls = store._conn.execute("SELECT count(*) FROM samples WHERE value IS NULL").fetchone()
    assert nulls == (6,)  # stored without value, not as a NaN
    store.close()


def test_the_derivation_sees_an_unstorable_counter_value_as_bad(tmp_path: Path) -> None:
    """If a counter reads 10, then an int beyond uint64, then 12, then the bad middle sample
    yields no delta (the count rises by 2), and the closed hour counts it as bad."""
    store = _open(tmp_path, counter_bits=64)
    batch = [sample("good", T0 + 1, 10), sample("good", T0 + 2, 2**64 + 3),
             sample("good", T0 + 3, 12)]
    result = store.ingest(batch, advance_to=T0 + 2 * HOUR)
    assert result.error is None and result.bad_by_device == {"M1": 1}
    deltas = store.deltas(0, 4e9)
    assert deltas.loc[deltas["role"] == "good_count", "delta"].sum() == 2
    counts = store.sample_counts(T0, T0 + HOUR)
    assert counts["samples_bad"].sum() == 1
    store.close()


def test_backfill_columns_of_uint64_are_stored_exactly(tmp_path: Path) -> None:
    """If a history file holds a uint64 array, then ingest_columns stores it exactly."""
    store = Store.open(tmp_path / "agent.db", modbus_config())
    store.begin_at(T0)
    values = np.array([UINT64_MAX, 2**63, 1], dtype=np.uint64)
    n = len(values)
    cols = SampleColumns(
        signal_id=np.array(["temp"] * n, dtype=object),
        source_ts=T0 + np.arange(n, dtype=np.float64),
        received_ts=T0 + np.arange(n, dtype=np.float64),
        value=values,
        quality=np.zeros(n, dtype=np.uint8),
        status=np.zeros(n, dtype=np.int64),
        origin=np.full(n, O_SOURCE, dtype=np.uint8),
    )
    store.ingest_columns("M1", cols, until=T0 + 10)
    store = _reopened(store)
    assert store.raw_samples(0, 4e9)["value"].tolist() == [UINT64_MAX, 2**63, 1]
    store.close()


def test_extreme_values_are_sealed_exactly(tmp_path: Path) -> None:
    """If a period holds uint64, int64, NaN and infinite values, then its sealed segments
    decode to each value exactly, type and bits (report building works on what the store
    returns)."""
    store = _open(tmp_path)
    floats = [math.nan, math.inf, -0.5, -math.inf, -0.0]
    batch = [sample("temp", T0 + i, v) for i, v in enumerate(INTEGERS)]
    batch += [sample("energy", T0 + i, v) for i, v in enumerate(floats)]
    assert store.ingest(batch).error is None
    sealed = _sealed(store)
    store.close()
    assert sealed["temp"].values == INTEGERS
    assert all(type(v) is int for v in sealed["temp"].values)
    assert [_float_bits(v) for v in sealed["energy"].values] == [_float_bits(v) for v in floats]


def test_merkle_digest_binds_uint64_values_exactly(tmp_path: Path) -> None:
    """If two stores differ only in one uint64 value near 2^64, then their sealed segments
    hash to different leaves (the first segment rule recorded values as float64, and gave
    the same digest)."""
    digests = []
    for name, value in (("a", UINT64_MAX), ("b", UINT64_MAX - 1)):
        store = Store.open(tmp_path / name / "agent.db", modbus_config())
        store.resume(T0)
        assert store.ingest([sample("temp", T0, value)]).error is None
        store.seal_days([DAY])
        digests.append(store.sealed_digests(*DAY))
        store.close()
    assert len(digests[0]) == 1 and digests[0] != digests[1]


def test_mixed_segment_with_non_finite_or_big_values_can_be_hashed(tmp_path: Path) -> None:
    """If a segment mixes strings with a uint64 or a NaN, then it seals and hashes (the first
    rule's RFC 8785 array could not hold NaN, Inf or ints beyond 2^53: EnvelopeError), and
    every value decodes exactly."""
    store = _open(tmp_path)
    batch = [sample("temp", T0, "warming up"), sample("temp", T0 + 1, UINT64_MAX),
             sample("energy", T0 + 2, "n/a"), sample("energy", T0 + 3, math.nan)]
    assert store.ingest(batch).error is None
    sealed = _sealed(store)
    assert len(store.sealed_digests(*DAY)) == 2
    store.close()
    assert sealed["temp"].values == ["warming up", UINT64_MAX]
    energy = sealed["energy"].values
    assert energy[0] == "n/a" and math.isnan(energy[1])
