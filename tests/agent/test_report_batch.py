"""Fast report building (issue 20 item 11) gives the same reports as the plain path.

The batch (`build_period_reports`, with and without worker processes), the light raw read
(`Store.raw_columns` + `column_digests`) and the store's per-device seeks must produce
exactly what one-by-one building over `Store.raw_samples` produced: same base measures,
indicators, evaluation and Merkle root, bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agent_testkit import T0, modbus_config, sample

from agent.config import load_config
from agent.outbox import Outbox
from agent.protocol.envelope import Kind, unverified_payload
from agent.protocol.keys import init_keys
from agent.protocol.merkle import ordered_digests
from agent.raw_segments import column_digests, segment_digests, segments
from agent.reporter import ReportContext, build_period_report, build_period_reports
from agent.store import Store
from indicators.policy import DEFAULT_POLICY, EXAMPLE_BENCHMARKS, EXAMPLE_DECLARATIONS, PolicyFiles
from simulator.history import generate_history
from simulator.model import load_factory

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "demo-agent.yaml"
HOUR = 3600.0


def test_samples_straddling_an_hour_in_one_batch_are_read_once(tmp_path: Path) -> None:
    """One batch mixing two hours of a device gives sample_index two overlapping rowid
    ranges; each sample must still come back once, in insertion order."""
    store = Store.open(tmp_path / "agent.db", modbus_config())
    store.resume(T0)
    end_of_hour = T0 + HOUR
    batch = []
    for i in range(6):  # interleaved: hour 0, hour 1, hour 0, hour 1, ...
        ts = end_of_hour - 0.5 + (i % 2) + i * 0.01
        batch.append(sample("temp", ts, float(i)))
        batch.append(sample("energy", ts, 10.0 + i))
    assert store.ingest(batch).stored == len(batch)
    raw = store.raw_samples(T0, T0 + 2 * HOUR)
    assert len(raw) == len(batch)
    assert raw["value"].tolist() == [s.value for s in batch]
    cols = store.raw_columns(T0, T0 + 2 * HOUR)
    assert len(cols) == len(batch) and cols.value == [s.value for s in batch]
    assert column_digests(cols) == segment_digests(raw)
    store.close()


def test_light_digests_equal_the_frame_digests_or_step_aside(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "agent.db", modbus_config())
    store.resume(T0)
    batch = [sample("temp", T0 + i * 7.5, (i * 37) % 11) for i in range(400)]  # ints
    batch += [sample("energy", T0 + i * 9.1, 0.25 * i) for i in range(400)]  # floats
    batch += [sample("state", T0 + i * 600.0, 1, quality="bad") for i in range(6)]
    store.ingest(batch)
    raw = store.raw_samples(T0, T0 + 2 * HOUR)
    expected = [digest for _, digest in ordered_digests(segments(raw))]
    assert column_digests(store.raw_columns(T0, T0 + 2 * HOUR)) == expected
    # A string value: the light path steps aside (None), the frame path decides.
    store.ingest([sample("temp", T0 + 2 * HOUR + 1, "jammed")])
    assert column_digests(store.raw_columns(T0, T0 + 3 * HOUR)) is None
    store.close()


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four days of the demo factory, backfilled."""
    from agent.backfill import backfill

    tmp = tmp_path_factory.mktemp("demo")
    config = load_config(CONFIG)
    factory = load_factory(ROOT / "config" / "factories" / "demo.yaml")
    start = 1_772_294_400.0  # 2026-03-01 00:00 Asia/Shanghai
    generate_history(factory, tmp / "hist", start, start + 4 * 86400, seed=7,
                     sample_interval_s=900.0)
    backfill(config, tmp / "hist", tmp / "data" / "agent.db")
    init_keys(tmp / "keys", None)
    return tmp


def _reports(outbox: Path) -> list[dict[str, Any]]:
    box = Outbox(outbox)
    try:
        payloads = [unverified_payload(item.jws, Kind.REPORT) for item in box.items()]
    finally:
        box.close()
    for payload in payloads:  # the time of signing, and through it the chain, differ
        payload.pop("issued_at")
        payload.pop("prev_sha256")
    return payloads


def _context(tmp: Path, outbox: str) -> tuple[ReportContext, Store]:
    config = load_config(CONFIG)
    store = Store.open(tmp / "data" / "agent.db", config)
    policy = PolicyFiles(DEFAULT_POLICY, EXAMPLE_BENCHMARKS, EXAMPLE_DECLARATIONS).load()
    context = ReportContext(
        config=config, config_path=CONFIG, store=store, outbox=Outbox(tmp / outbox),
        key_dir=tmp / "keys", policy=policy,
    )
    return context, store


def test_batch_with_and_without_workers_equals_one_by_one(
    demo_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    days = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]
    context, store = _context(demo_store, "single.db")
    for day in days:
        build_period_report(context, day)
    context.outbox.close()
    context, store = _context(demo_store, "batch.db")
    seen: list[str] = []
    built = build_period_reports(context, days, lambda day, _report: seen.append(day),
                                 workers=0)
    assert seen == days and all(report.created and report.has_data for report in built)
    context.outbox.close()
    monkeypatch.setattr("agent.reporter.POOL_MIN_DAYS", 2)
    context, store = _context(demo_store, "pool.db")
    build_period_reports(context, days, workers=1)
    context.outbox.close()
    single = _reports(demo_store / "single.db")
    assert [r["period"]["key"] for r in single] == days
    assert single[0]["raw_data"]["segment_count"] > 1000
    assert _reports(demo_store / "batch.db") == single
    assert _reports(demo_store / "pool.db") == single
    # A second batch over the same days signs nothing new: the queued reports stand.
    context, store = _context(demo_store, "pool.db")
    again = build_period_reports(context, days, workers=1)
    assert not any(report.created for report in again)
    context.outbox.close()
    store.close()
