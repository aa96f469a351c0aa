"""Fast report building (issue 20 item 11) gives the same reports as the plain path.

The batch (`build_period_reports`, with and without worker processes) and the store's
per-device seeks must produce exactly what one-by-one building produced: same base measures,
indicators, evaluation and Merkle root (of the sealed segments), bit for bit.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from agent_testkit import T0, modbus_config, sample

from agent.config import load_config
from agent.outbox import Outbox
from agent.protocol.envelope import Kind, unverified_payload
from agent.protocol.keys import init_keys
from agent.protocol.period import Period
from agent.protocol.segment_codec import decode_segment
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
    # Sealing walks the same ranges: every sample in exactly one segment, once.
    store.seal_days([Period.parse("2026-01-01", "Asia/Shanghai").bounds()])
    sealed = [decode_segment(s.data) for s in store.sealed_segments(T0 - 8 * HOUR, T0 + HOUR)]
    assert [(s.signal_id, s.start) for s in sealed] == [
        ("energy", T0), ("temp", T0), ("energy", T0 + HOUR), ("temp", T0 + HOUR)]
    assert sorted(v for s in sealed for v in s.values) == sorted(s.value for s in batch)
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


def _context(tmp: Path, outbox: str, data: str = "data") -> tuple[ReportContext, Store]:
    config = load_config(CONFIG)
    store = Store.open(tmp / data / "agent.db", config)
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
    # The pool also runs on a copy not sealed yet: its workers plan the seals.
    shutil.copytree(demo_store / "data", demo_store / "unsealed")
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
    context, unsealed = _context(demo_store, "planned.db", "unsealed")
    build_period_reports(context, days, workers=1)
    context.outbox.close()
    assert unsealed.sealed_digests(0, 4e9) == store.sealed_digests(0, 4e9)
    unsealed.close()
    single = _reports(demo_store / "single.db")
    assert [r["period"]["key"] for r in single] == days
    assert single[0]["raw_data"]["segment_count"] > 1000
    assert _reports(demo_store / "batch.db") == single
    assert _reports(demo_store / "pool.db") == single
    assert _reports(demo_store / "planned.db") == single
    # A second batch over the same days signs nothing new: the queued reports stand.
    context, store = _context(demo_store, "pool.db")
    again = build_period_reports(context, days, workers=1)
    assert not any(report.created for report in again)
    context.outbox.close()
    store.close()
