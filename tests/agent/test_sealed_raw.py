"""Sealed raw data (issue 17 item 3): a signed report's raw segments never change.

A day's raw segments are sealed when its report is built; exports and verify read the sealed
bytes, never the live samples; a sample arriving later, or from a skewed clock, goes to the
open segment of its receive time with its source time kept and flagged.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_testkit import T0, modbus_config, sample
from typer.testing import CliRunner

from agent.config import load_config
from agent.outbox import Outbox
from agent.protocol.envelope import Kind, unverified_payload
from agent.protocol.merkle import SEGMENTING_RULE_V1
from agent.protocol.period import Period
from agent.protocol.segment_codec import decode_segment, encode_segments
from agent.sample_proof import prove_sample
from agent.store import Store
from agent.store.sealed import plan_seals
from connectors.sample import Quality, Sample, TimestampOrigin
from tieragent.cli import _register_subcommands, app

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "demo-agent.yaml"
TZ = "Asia/Shanghai"
DAYS = ("2026-03-02", "2026-03-03", "2026-03-04")
HOUR = 3600.0


def _bounds(day: str) -> tuple[int, int]:
    return Period.parse(day, TZ).bounds()


def _ua(signal: str, source: float, value: Any, received: float | None = None,
        held: bool = False) -> Sample:
    return Sample("CNC-01", signal, value, Quality.GOOD, source,
                  source + 0.2 if received is None else received, 0, TimestampOrigin.SOURCE,
                  held)


def _cli(*args: str) -> str:
    _register_subcommands()
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output)
    return result.output


def _payloads(data: Path) -> dict[str, dict[str, Any]]:
    outbox = Outbox(data / "outbox.db")
    try:
        found = [unverified_payload(item.jws, Kind.REPORT) for item in outbox.items()]
    finally:
        outbox.close()
    return {p["period"]["key"]: p for p in found}


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two days collected and reported; then a device clock 2 days slow for 25 s (784
    samples) and a held value read a day late, both with source times in the first, sealed
    day; then the third day reported, and the live samples deleted; then exported."""
    tmp = tmp_path_factory.mktemp("sealed")
    data, keys, bundle = tmp / "data", tmp / "keys", tmp / "bundle"
    common = ["--config", str(CONFIG), "--data-dir", str(data)]
    config = load_config(CONFIG)
    store = Store.open(data / "agent.db", config)
    store.resume(_bounds(DAYS[0])[0])
    for day in DAYS[:2]:
        start = _bounds(day)[0]
        batch = []
        for k in range(0, 86400, 600):
            ts = start + k + 0.125
            batch += [_ua("good_count", ts, k // 60), _ua("energy_kwh", ts, k / 3600 * 4.5),
                      _ua("spindle_temp", ts, round(40 + (k % 7) / 10, 1))]
        assert store.ingest(batch).error is None
    store.close()
    _cli("keys", "init", "--dir", str(keys))
    for day in DAYS[:2]:
        _cli("report", *common, "--period", day, "--key-dir", str(keys))
    signed = _payloads(data)

    store = Store.open(data / "agent.db", config)
    arrival = _bounds(DAYS[2])[0] + 3 * HOUR
    received = arrival + np.arange(784) * (25 / 784)
    skewed = [_ua("spindle_temp", r - 2 * 86400, 55.5 + i / 1000, received=r)
              for i, r in enumerate(received.tolist())]
    late_source = _bounds(DAYS[0])[0] + 5 * HOUR + 0.5
    held = _ua("good_count", late_source, 123, received=arrival + 60, held=True)
    result = store.ingest([*skewed, held])
    assert result.error is None and result.skewed_by_device == {"CNC-01": 784}
    store.close()
    _cli("report", *common, "--period", DAYS[2], "--key-dir", str(keys))
    # Rebuilding a signed day finds its sealed data unchanged (before: PeriodDataChanged).
    _cli("report", *common, "--period", DAYS[0], "--key-dir", str(keys))
    with sqlite3.connect(data / "agent.db") as conn:  # exports must not need the live rows
        conn.execute("DELETE FROM samples")
    _cli("evidence", "export", *common, "--period", "2026-03", "--out", str(bundle),
         "--key-dir", str(keys))
    return {"data": data, "bundle": bundle, "signed": signed, "skewed": skewed,
            "held": held, "arrival": arrival}


def test_a_skewed_clock_into_a_sealed_day_leaves_every_signed_root_valid(
    factory: dict[str, Any],
) -> None:
    """If 784 samples of a clock 2 days slow and a held value read late, all with source
    times in an already signed day, arrive through the store's ingest, then every report's
    Merkle root still matches its exported segments (verify OK), the signed days' roots
    are those first signed, and the samples are in the segments of their arrival day."""
    output = _cli("verify", str(factory["bundle"]))
    assert "3 report(s)" in output and "OK" in output
    now = _payloads(factory["data"])
    for day in DAYS[:2]:
        assert now[day]["raw_data"] == factory["signed"][day]["raw_data"]
    manifest = json.loads((factory["bundle"] / "manifest.json").read_text())
    third = next(e for e in manifest["reports"] if e["period"]["key"] == DAYS[2])
    raw = factory["bundle"] / "raw" / third["report_id"]
    decoded = [decode_segment(p.read_bytes()) for p in sorted(raw.glob("*.seg"))]
    late = [(s, i) for s in decoded for i in range(len(s)) if s.rehomed[i]]
    assert len(late) == 785
    assert {s.signal_id for s, _ in late} == {"spindle_temp", "good_count"}
    start, end = _bounds(DAYS[2])
    assert all(start <= s.start < end for s, _ in late)


def test_a_late_sample_keeps_its_source_time_in_the_open_segment(
    factory: dict[str, Any],
) -> None:
    """If a held value with a source time in a sealed day is read later, then it is stored
    in the segment of its receive hour, its source and receive times kept exactly and
    flagged as keyed by receive time."""
    held: Sample = factory["held"]
    proofs = prove_sample(factory["bundle"], _payloads(factory["data"])[DAYS[2]]["report_id"],
                          "CNC-01", "good_count", held.source_ts)
    (proof,) = proofs
    assert proof.verified and proof.keyed_by_receive_time
    assert (proof.source_ts, proof.received_ts, proof.value) == (
        held.source_ts, held.received_ts, held.value)
    hour = int(held.received_ts // HOUR * HOUR)
    assert proof.span == (hour, hour + 3600)


def test_one_sample_is_proven_and_a_changed_segment_is_not(
    factory: dict[str, Any], tmp_path: Path,
) -> None:
    """If one sample of a sealed segment is asked for, then the CLI prints it with the
    segment's inclusion proof, verified against the signed root; if the segment's bytes
    are replaced by a re-encoding with one value changed, then the proof fails."""
    report_id = _payloads(factory["data"])[DAYS[2]]["report_id"]
    target: Sample = factory["skewed"][100]
    output = _cli("evidence", "prove", str(factory["bundle"]), "--report", report_id,
                  "--device", "CNC-01", "--signal", "spindle_temp", "--at",
                  repr(target.source_ts))
    (shown,) = [json.loads(line) for line in output.splitlines()]
    assert shown["verified"] and shown["sample"]["value"] == target.value
    assert shown["sample"]["keyed_by_receive_time"]

    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(factory["bundle"], copy)
    path = copy / shown["segment"]["file"]
    segment = decode_segment(path.read_bytes())
    values = list(segment.values)
    values[shown["sample"]["position"]] = 99.0
    (forged,) = encode_segments(
        segment.device_id, np.array([segment.signal_id] * len(segment), dtype=object),
        np.full(len(segment), segment.start), np.full(len(segment), segment.end),
        segment.source_ts, segment.received_ts, values, segment.quality, segment.rehomed,
    )
    path.write_bytes(forged.data)
    (proof,) = prove_sample(copy, report_id, "CNC-01", "spindle_temp", target.source_ts)
    assert proof.value == 99.0 and not proof.verified


def test_sealing_keys_late_and_imported_samples_to_open_time(tmp_path: Path) -> None:
    """If a day is sealed, then a sample whose source time lies in it goes to the segment of
    its receive time; if its receive time is sealed too (an imported history), to the first
    unsealed moment; the sealed day's digests do not move, and a sample of an open day is
    keyed by its source time as before."""
    store = Store.open(tmp_path / "agent.db", modbus_config())
    store.resume(T0)
    day = Period.parse("2026-01-01", TZ).bounds()  # T0 is 08:00 local
    following = Period.parse("2026-01-02", TZ).bounds()
    assert store.ingest([sample("temp", T0 + i, 20 + i) for i in range(5)]).error is None
    assert store.seal_days([day]) == 1 and store.seal_days([day]) == 0
    sealed = store.sealed_digests(*day)
    late = Sample("M1", "temp", 7, Quality.GOOD, T0 + 2.5, day[1] + 1800.5, held=True)
    imported = Sample("M1", "temp", 8, Quality.GOOD, T0 + 3.5, T0 + 3.6)
    fresh = Sample("M1", "temp", 9, Quality.GOOD, day[1] + 60.0, day[1] + 60.1)
    assert store.ingest([late, imported, fresh]).error is None
    assert store.sealed_digests(*day) == sealed
    assert store.seal_days([following]) == 1
    segments = {s.start: decode_segment(s.data) for s in store.sealed_segments(*following)}
    assert sorted(segments) == [day[1]]
    got = segments[day[1]]
    assert got.values == [7, 8, 9]  # sorted by source time
    assert got.source_ts.tolist() == [T0 + 2.5, T0 + 3.5, day[1] + 60.0]
    assert got.received_ts.tolist() == [day[1] + 1800.5, T0 + 3.6, day[1] + 60.1]
    assert got.rehomed.tolist() == [True, True, False]
    store.close()


def test_a_worker_seal_plan_is_stored_only_if_its_day_is_unchanged(tmp_path: Path) -> None:
    """If a report worker plans two days' seals over a read-only connection and a sample of
    the second day arrives before they are stored, then the first is stored as planned and
    the second is sealed again with the new sample (seal_days counts it)."""
    store = Store.open(tmp_path / "agent.db", modbus_config())
    store.resume(T0)
    first = Period.parse("2026-01-01", TZ).bounds()
    second = Period.parse("2026-01-02", TZ).bounds()
    batch = [sample("temp", T0 + i * 600, i) for i in range(3)]
    batch += [sample("temp", T0 + 86400 + i * 600, i) for i in range(3)]
    assert store.ingest(batch).error is None
    reader = sqlite3.connect(f"{(tmp_path / 'agent.db').resolve().as_uri()}?mode=ro", uri=True)
    plans = plan_seals(reader, [first, second])
    reader.close()
    assert [p.start for p in plans] == [first[0], second[0]]
    assert store.ingest([sample("temp", T0 + 86400 + 1800, 99)]).error is None
    assert store.seal_days([first, second], plans) == 1
    assert store.sealed_digests(*first) == [d for _, d in sorted(plans[0].digests)]
    (segment,) = store.sealed_segments(*second)
    assert decode_segment(segment.data).values == [0, 1, 2, 99]
    assert store.seal_days([first, second]) == 0  # sealed: nothing to do
    # A plan of a day sealed meanwhile (by another connection) is not used: counted.
    assert store.seal_days([first], plans[:1]) == 1
    store.close()


def test_a_report_signed_before_sealing_is_built_again_without_a_false_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If a day's report carries the first segmenting rule (signed before sealing), then
    building the day again finds it unchanged (its base measures are), not "raw data
    changed" because the root of today's rule differs."""
    data, keys = tmp_path / "data", tmp_path / "keys"
    store = Store.open(data / "agent.db", load_config(CONFIG))
    start = _bounds(DAYS[0])[0]
    store.resume(start)
    assert store.ingest([_ua("good_count", start + 60.0 * k, k) for k in range(30)]).error is None
    store.close()
    _cli("keys", "init", "--dir", str(keys))
    build = ["report", "--config", str(CONFIG), "--data-dir", str(data), "--key-dir", str(keys),
             "--period", DAYS[0]]
    with monkeypatch.context() as patch:
        patch.setattr("agent.protocol.report.SEGMENTING_RULE", SEGMENTING_RULE_V1)
        _cli(*build)
    assert _payloads(data)[DAYS[0]]["raw_data"]["segmenting_rule"] == SEGMENTING_RULE_V1
    _cli(*build)  # exit 0: already queued, nothing signed twice
    assert len(_payloads(data)) == 1



def test_block_records_round_trip_and_refuse_a_segment_without_its_header() -> None:
    """A block gives back each segment's bytes exactly, over several signals and spans (its
    records are built for all segments at once); a segment whose bytes do not start with the
    header of its device, signal and span is refused, not stored as another segment."""
    from agent.protocol.segment_codec import SealedSegment
    from agent.store.sealed import pack, unpack
    from agent.store.sqlite import StoreError

    n = 40
    segments = encode_segments(
        "CNC-01", np.array([f"signal-{i % 3}" for i in range(n)], dtype=object),
        np.array([1_767_196_800 + 3600 * (i % 4) for i in range(n)], dtype=np.int64),
        np.array([1_767_196_800 + 3600 * (i % 4 + 1) for i in range(n)], dtype=np.int64),
        np.arange(n, dtype=np.float64) + 1_767_196_800.0,
        np.arange(n, dtype=np.float64) + 1_767_196_800.5,
        [float(i) / 3 if i % 5 else "text" for i in range(n)], np.zeros(n, dtype=np.uint8),
        np.zeros(n, dtype=bool),
    )
    assert len(segments) == 12
    assert list(unpack("CNC-01", *pack(segments))) == segments

    wrong = segments[5]
    moved = SealedSegment(wrong.device_id, wrong.signal_id, wrong.start + 3600, wrong.end + 3600,
                          wrong.data)
    with pytest.raises(StoreError, match="does not start with its header"):
        pack([*segments[:5], moved, *segments[6:]])
    with pytest.raises(StoreError, match="does not start with its header"):
        pack([SealedSegment(wrong.device_id, wrong.signal_id, wrong.start, wrong.end, b"x")])
