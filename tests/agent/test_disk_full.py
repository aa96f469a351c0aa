"""A full disk is a counted gap, never a crash (issue 20 item 6): the store refuses to grow
(SQLite's own limit, `PRAGMA max_page_count`, which fails commits with SQLITE_FULL; or the
process's file size limit, which fails them with EFBIG), then space returns."""

from __future__ import annotations

import asyncio
import logging
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from agent_testkit import T0, modbus_config
from test_agent_health import _config, _poll, _start, _stop
from test_quota import TICKS, _batch, _metrics

from agent.config import load_config
from agent.store import Store
from agent.store.losses import DISK_FULL, SUMMARY_EVERY_S
from tests.support.ports import free_port

sys.path.insert(0, str(Path(__file__).parents[1] / "connectors"))
from connector_helpers import ModbusTestServer

HOUR = 3600.0


def test_sqlite_full_drops_and_counts_logs_once_per_minute_and_the_gap_shows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """If the database may not grow for an hour (SQLITE_FULL), then every batch of that hour
    is dropped and counted without an exception; the log has one ERROR, one summary per
    minute and one INFO on recovery; afterwards samples are stored again, and the hour's base
    measures show the gap (samples_received far below expected) while the hours around it
    are complete."""
    caplog.set_level(logging.INFO, logger="agent.store")
    store = Store.open(tmp_path / "agent.db", modbus_config())
    seconds = [0.0]
    store._failures.clock = lambda: seconds[0]  # one batch per "second" of the log's clock
    try:
        store.resume(T0)
        tick, dropped = T0, 0
        while tick < T0 + 3 * HOUR:
            if tick == T0 + HOUR:  # the disk is full: not one page more
                pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
                store._conn.execute(f"PRAGMA max_page_count = {pages}")
            if tick == T0 + 2 * HOUR:  # space returns
                store._conn.execute("PRAGMA max_page_count = 1073741823")
            result = store.ingest(_batch(tick), advance_to=tick + TICKS - 1)
            if T0 + HOUR <= tick < T0 + 2 * HOUR:
                assert result.reason == DISK_FULL or result.error is None
            else:
                assert result.error is None, result.error
            dropped += result.dropped
            tick += TICKS
            seconds[0] += 1.0
        store.ingest([], advance_to=T0 + 3 * HOUR)
        measures = store.base_measures(T0, T0 + 3 * HOUR).set_index("hour_start")
        losses = store.losses()
        check = store._conn.execute("PRAGMA quick_check").fetchone()[0]
    finally:
        store.close()
    batches = HOUR / TICKS
    assert dropped >= (batches - 3) * TICKS * 6  # nearly all of hour 1 (a few free pages)
    assert losses[losses["reason"] == DISK_FULL]["samples"].sum() == dropped
    received = measures["samples_received"] / measures["samples_expected"]
    assert received[T0] == 1.0 and received[T0 + 2 * HOUR] > 0.99
    assert received[T0 + HOUR] < 0.1
    assert check == "ok"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "Store write failed; samples are dropped and counted until it recovers."]
    summaries = [r for r in caplog.records if r.getMessage() == "Store writes still failing."]
    failing_s = dropped / (TICKS * 6)  # one failed batch per second of the log's clock
    assert len(summaries) == int((failing_s - 1) // SUMMARY_EVERY_S)
    recovered = [r for r in caplog.records if r.getMessage() == "Store writes recovered."]
    assert len(recovered) == 1 and recovered[0].fields["dropped_total"] == dropped  # type: ignore[attr-defined]


async def test_run_keeps_running_on_a_full_disk_says_503_and_resumes(tmp_path: Path) -> None:
    """If `tieragent run` may not grow its files (RLIMIT_FSIZE just above their size: writes
    fail with EFBIG), then it keeps running, /healthz is 503 with a reason and counts the
    drops; once the limit is lifted (prlimit on the running process) it stores samples again,
    logs one recovery and records the gap in ingest_losses."""
    modbus_port, port = free_port(), free_port()
    config = _config(tmp_path, modbus_port, 60.0)
    config.write_text(config.read_text().replace("default_interval_s: 1.0",
                                                 "default_interval_s: 0.1"))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    Store.open(data_dir / "agent.db", load_config(config)).close()
    limit = max(p.stat().st_size for p in data_dir.iterdir()) + 16_384

    def cap_file_size() -> None:  # soft limit only, so that prlimit may lift it again
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    url = f"http://127.0.0.1:{port}/healthz"
    code, body = 0, {}
    async with ModbusTestServer(modbus_port, holding={i: 1 for i in range(3)}):
        proc = _start(config, data_dir, port, cap_file_size)
        try:
            code, body = await asyncio.to_thread(
                _poll, url, lambda c, b: c == 503 and b.get("samples_dropped", 0) > 0, 30, proc)
            assert code == 503, body
            assert any("the store cannot commit" in r for r in body["reasons"]), body
            dropped = body["samples_dropped"]
            before = _stored(port)
            subprocess.run(["prlimit", f"--pid={proc.pid}", "--fsize=unlimited"], check=True,
                           timeout=10)
            for _ in range(100):  # bounded: about 20 s
                if _stored(port) > before + 20:
                    break
                await asyncio.sleep(0.2)
            assert _stored(port) > before + 20
            assert proc.poll() is None  # never a crash
        finally:
            events = await asyncio.to_thread(_stop, proc)
    assert proc.returncode == 0
    messages = [e["message"] for e in events]
    assert messages.count(
        "Store write failed; samples are dropped and counted until it recovers.") == 1, messages
    assert messages.count("Store writes recovered.") == 1, messages
    db = sqlite3.connect(data_dir / "agent.db")
    try:
        lost = db.execute("SELECT sum(samples) FROM ingest_losses WHERE reason = ?",
                          (DISK_FULL,)).fetchone()[0]
        stored = db.execute("SELECT count(*) FROM samples").fetchone()[0]
    finally:
        db.close()
    assert lost >= dropped > 0 and stored > 0


def _stored(port: int) -> float:
    """Samples committed so far, from /metrics."""
    metrics = _metrics(port)
    return sum(v for k, v in metrics.items() if k.startswith("tieragent_samples_total{"))
