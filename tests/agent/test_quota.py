"""The raw-sample disk quota (issue 20 item 6): alarms at 80 % and 95 %, retention pruning
first at the limit, then new samples counted as dropped; derived rows and the outbox stay."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agent_testkit import T0, cli, modbus_config, sample
from test_agent_health import _config, _poll, _start, _stop

from agent.health import assess
from agent.outbox import Outbox
from agent.store import Store
from agent.store.losses import QUOTA_FULL
from agent.store.quota import LEVEL_CRITICAL, LEVEL_FULL, LEVEL_HIGH, QuotaReading
from connectors.sample import Sample
from tests.support.ports import free_port

sys.path.insert(0, str(Path(__file__).parents[1] / "connectors"))
from connector_helpers import ModbusTestServer

ROOT = Path(__file__).parents[2]
HOUR = 3600.0
TICKS = 50  # per batch: 300 samples, about 12 kB, 2.4 % of the quota


def _batch(first_tick: float) -> list[Sample]:
    items = []
    for k in range(TICKS):
        t = first_tick + k
        items += [sample("state", t, 1), sample("good", t, int(t - T0)),
                  sample("reject", t, 0), sample("energy", t, 0.1 * (t - T0)),
                  sample("auto", t, 1), sample("temp", t, 20.5)]
    return items


def _rows(store: Store, sql: str) -> Any:
    return store._conn.execute(sql).fetchone()[0]


def _messages(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == level and text in r.getMessage()]


def test_quota_alarms_once_each_then_drops_new_samples_then_prunes_past_retention(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """If raw samples grow into a 0.5 MB quota (checked after every batch), then one WARNING
    at 80 %, one at 95 %, one ERROR when full; from then on new samples are dropped and
    counted (reason raw_quota_full), the raw table stops growing, and the hours of the gap have
    samples_received below samples_expected; base measures and the outbox stay. Once those
    samples are past raw_retention_days, the next check deletes them first and samples are
    stored again, with one INFO line."""
    caplog.set_level(logging.INFO, logger="agent.store")
    config = modbus_config(raw_quota_mb=0.5, raw_retention_days=1)
    store = Store.open(tmp_path / "agent.db", config)
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.commit_report("f-1", "2026-01-01", lambda seq, prev: {
        "report_id": "r-1", "seq": seq, "prev_sha256": prev}, lambda payload: "signed")
    try:
        store.resume(T0)
        tick, levels = T0, []
        for _ in range(200):  # bounded: the quota is full after about 40 batches
            result = store.ingest(_batch(tick), advance_to=tick + TICKS - 1)
            tick += TICKS
            assert result.error is None
            levels.append(store.quota.check(tick).level)
            if store.quota.blocked:
                break
        assert store.quota.blocked, levels
        assert levels.index(LEVEL_HIGH) < levels.index(LEVEL_CRITICAL) < levels.index(LEVEL_FULL)
        stored = _rows(store, "SELECT count(*) FROM samples")
        # Full: until the end of hour 2, every batch is dropped and counted, none stored.
        dropped = 0
        while tick < T0 + 3 * HOUR:
            result = store.ingest(_batch(tick), advance_to=tick + TICKS - 1)
            tick += TICKS
            assert (result.stored, result.reason) == (0, QUOTA_FULL)
            dropped += result.dropped
            assert store.quota.check(tick).level == LEVEL_FULL
        assert _rows(store, "SELECT count(*) FROM samples") == stored
        store.ingest([], advance_to=T0 + 3 * HOUR)  # no samples: time goes on, hours close
        losses = store.losses()
        assert losses[losses["reason"] == QUOTA_FULL]["samples"].sum() == dropped
        measures = store.base_measures(T0, T0 + 3 * HOUR).set_index("hour_start")
        assert list(measures.index) == [T0, T0 + HOUR, T0 + 2 * HOUR]
        gap = measures.loc[T0 + 2 * HOUR]
        assert gap["samples_received"] == 0 and gap["samples_expected"] > 0
        assert 0 < measures.loc[T0, "samples_received"] < measures.loc[T0, "samples_expected"]
        assert gap["unk_s"] > 0  # the state went stale: unknown, never running
        assert len(_messages(caplog, logging.WARNING, "passed 80 %")) == 1
        assert len(_messages(caplog, logging.WARNING, "passed 95 %")) == 1
        assert len(_messages(caplog, logging.ERROR, "quota full")) == 1
        # Two days on, every raw sample is past the 1-day retention: deleted first.
        reading = store.quota.check(T0 + 2 * 86400 + 4 * HOUR)
        assert not store.quota.blocked and reading.level < LEVEL_HIGH
        assert _rows(store, "SELECT count(*) FROM samples") == 0
        assert len(_messages(caplog, logging.INFO, "back under 100 %")) == 1
        later = T0 + 2 * 86400 + 4 * HOUR
        assert store.ingest(_batch(later), advance_to=later + TICKS - 1).stored == TICKS * 6
        # Derived rows and the outbox are never deleted to make room.
        assert store.base_measures(T0, T0 + 3 * HOUR).equals(measures.reset_index()[
            store.base_measures(T0, T0 + 3 * HOUR).columns])
        assert outbox.counts()["pending"] == 1
    finally:
        store.close()
        outbox.close()
    assert len(_messages(caplog, logging.WARNING, "passed 80 %")) == 1  # no line per check


def test_health_names_the_quota_from_95_percent() -> None:
    """If raw samples use 96 % of their quota, then /healthz is 503 saying how much."""
    from test_agent_health import _inputs

    body = assess(_inputs(raw_quota=QuotaReading(480_000, 500_000, LEVEL_CRITICAL)))
    assert body["status"] == "degraded"
    assert body["reasons"] == ["raw samples use 0.48 of 0.5 MB (96 %)"]
    assert (body["raw_mb"], body["raw_quota_mb"]) == (0.48, 0.5)
    assert assess(_inputs(raw_quota=QuotaReading(470_000, 500_000, LEVEL_HIGH)))["status"] == "ok"


async def test_run_reports_the_quota_in_healthz_metrics_log_and_status(tmp_path: Path) -> None:
    """If `tieragent run` collects into a 0.1 MB raw quota, then /healthz turns 503 naming the
    quota, /metrics shows the bytes, the quota and the level, the log has at most one line per
    level (the full one exactly once), samples end up dropped as raw_quota_full, and
    `tieragent status` shows the use against the quota."""
    modbus_port, port = free_port(), free_port()
    config = _config(tmp_path, modbus_port, 60.0)
    text = config.read_text().replace("default_interval_s: 1.0", "default_interval_s: 0.02")
    config.write_text(text.replace("  counter_bits: 32", "  counter_bits: 32\n"
                                   "  raw_quota_mb: 0.1"))
    data_dir = tmp_path / "data"
    async with ModbusTestServer(modbus_port, holding={i: 1 for i in range(3)}):
        proc = _start(config, data_dir, port)
        url = f"http://127.0.0.1:{port}/healthz"
        try:
            code, body = await asyncio.to_thread(
                _poll, url, lambda c, b: any("quota is full" in r for r in b.get("reasons", [])),
                90, proc)
            metrics = await asyncio.to_thread(_metrics, port)
        finally:
            events = await asyncio.to_thread(_stop, proc)
    messages = [e["message"] for e in events]
    assert code == 503, (body, messages[-10:])
    quota_reasons = [r for r in body["reasons"] if r.startswith("raw samples use ")]
    assert re.fullmatch(r"raw samples use 0\.1\d* of 0\.1 MB \(1\d\d %\)", quota_reasons[0]), body
    assert metrics["tieragent_raw_quota_bytes"] == 100_000
    assert metrics["tieragent_raw_quota_level"] == LEVEL_FULL
    assert metrics["tieragent_raw_bytes"] >= 100_000
    assert metrics['tieragent_samples_dropped_total{reason="raw_quota_full"}'] > 0
    # Checked every 10 s, use may pass 80 % and 95 % between two checks: the log names the
    # level reached, once (test_quota_alarms_once_each... sees every level).
    for level in ("80 %", "95 %"):
        assert sum(f"passed {level}" in m for m in messages) <= 1, messages
    assert sum("quota full" in m for m in messages) == 1, messages
    status = subprocess.run(cli("status", "--data-dir", str(data_dir), "--json"),
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    store = json.loads(status.stdout)["store"]
    assert store["raw_quota_bytes"] == 100_000 and store["raw_bytes"] >= 100_000
    shown = subprocess.run(cli("status", "--data-dir", str(data_dir)),
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "of 0.1 MB quota (" in shown.stdout and "FULL" in shown.stdout, shown.stdout


def _metrics(port: int) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_at_the_limit_pruning_is_logged_once_an_hour_with_its_sum(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """If every check (every 10 s) at the limit prunes a few rows past retention, as in the
    steady state of a small quota, then two hours of checks log one pruning line an hour
    with the rows summed, and the full level once, not a line per check."""
    import sqlite3

    from agent.store.quota import RawQuota

    caplog.set_level(logging.INFO, logger="agent.store")
    conn = sqlite3.connect(tmp_path / "q.db")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (zeroblob(20000))")
    conn.commit()
    quota = RawQuota(conn, 0.001, lambda now: 5, str(tmp_path / "q.db"))  # always full
    for step in range(720):
        quota.check(T0 + 10.0 * step)
    pruning = [r for r in caplog.records if "past retention deleted" in r.getMessage()]
    assert len(pruning) == 2, len(pruning)
    assert [r.fields["rows"] for r in pruning] == [5, 5 * 360]  # type: ignore[attr-defined]
    assert len(_messages(caplog, logging.ERROR, "quota full")) == 1
