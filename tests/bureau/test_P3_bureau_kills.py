"""Fault matrix row P3 (docs/reliability.md §c): the bureau is killed during ingest.

A real `tieragent bureau serve` (SQLite) behind a real Mosquitto receives one factory's chain
of signed daily reports from a client that resends what has no receipt, as an agent does,
and is SIGKILLed at random moments (fixed seed) and started again, KILLS times in CI
(`bench/soak.py` runs the matrix's 200). Afterwards, from the database: no partial rows
(every stored report has its log leaf and its measures rows), every report once, the chain
accepted from genesis, `PRAGMA integrity_check` ok, and every receipt the client saw names
a stored report.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from joserfc.jwk import OKPKey

from agent.protocol.chain import genesis_sha256
from agent.protocol.envelope import Kind, canonical_bytes, public_jwk, sha256_hex, sign_compact
from bureau.receipts import bureau_public, create_bureau_key
from bureau.registry import KeyRegistry
from bureau.store import SqlReportStore
from tests.bureau.test_scale_out import Receipts, Sent, _publish
from tests.support.mosquitto import Broker
from tests.support.paths import python_env
from tests.support.reports import BUREAU, day, make_report
from tests.support.waiting import wait_until

KILLS = 6
SEED = 3
FACTORIES = [f"tj-kill-{n}" for n in range(8)]
REPORTS = 30


def _chains(keys: dict[str, OKPKey]) -> list[Sent]:
    """Each factory's chain, interleaved day by day as several agents would send them."""
    chains = []
    for factory, key in keys.items():
        prev, chain = genesis_sha256(factory), []
        for seq in range(1, REPORTS + 1):
            report = make_report(key, day(seq), seq, prev, factory=factory, devices=2)
            payload = canonical_bytes(report)
            chain.append(Sent(factory, seq, report["report_id"],
                              sign_compact(payload, key, Kind.REPORT).encode()))
            prev = sha256_hex(payload)
        chains.append(chain)
    return [sent for day_sent in zip(*chains, strict=True) for sent in day_sent]


def _serve(db: Path, key: Path, broker: Broker, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tieragent", "bureau", "serve", "--db", str(db), "--broker",
             broker.url, "--key", str(key), "--bureau-id", BUREAU, "--client-id", "bureau",
             "--protocol", "5"], stdout=out, stderr=out, env=python_env())


def _connections(log: Path) -> int:
    return log.read_bytes().count(b"Bureau receiver connected.")


def test_P3_bureau_killed_at_random_during_ingest_leaves_no_partial_rows(
        tmp_path: Path, mosquitto: Broker) -> None:
    """If the bureau is SIGKILLed KILLS times at random moments while 8 factories' chains
    of 30 reports arrive and are resent, then once it runs again every report is stored
    once, whole (log leaf and measures rows), in an accepted chain from genesis; the
    database passes its integrity check; and no receipt names a report that is not
    stored."""
    keys = {factory: OKPKey.generate_key("Ed25519") for factory in FACTORIES}
    db = tmp_path / "bureau.db"
    store = SqlReportStore(db)
    with store.transaction():
        for factory, key in keys.items():
            KeyRegistry(store.db).enroll(factory, public_jwk(key))
    store.close()
    key_file = tmp_path / "bureau-key.pem"
    bureau_key = create_bureau_key(key_file)
    log = tmp_path / "serve.log"
    chain = _chains(keys)
    receipts = Receipts(mosquitto.url, bureau_public(bureau_key))
    assert receipts.subscribed.wait(10)
    rng = random.Random(SEED)
    serve, starts, kills, mid_ingest = _serve(db, key_file, mosquitto, log), 1, 0, 0
    try:
        deadline = time.monotonic() + 240
        while True:
            assert time.monotonic() < deadline, "not all reports settled in 240 s"
            assert wait_until(lambda n=starts: _connections(log) >= n, 30), (
                log.read_text()[-2000:])
            waiting = [s for s in chain if not receipts.settled(s.report_id)]
            if not waiting and kills == KILLS:
                break
            _publish(mosquitto.url, "agent", waiting)
            if kills < KILLS:
                time.sleep(rng.uniform(0.0, 0.2))  # mostly in the middle of the ingest
                settled = sum(receipts.settled(s.report_id) for s in chain)
                os.kill(serve.pid, signal.SIGKILL)
                serve.wait(10)
                kills += 1
                mid_ingest += settled < len(chain)
                serve, starts = _serve(db, key_file, mosquitto, log), starts + 1
            else:
                wait_until(lambda: all(receipts.settled(s.report_id) for s in chain), 5.0)
        seen = dict(receipts.status)
    finally:
        receipts.close()
        if serve.poll() is None:
            os.kill(serve.pid, signal.SIGTERM)
            serve.wait(30)
    assert kills == KILLS and mid_ingest >= KILLS // 2, (kills, mid_ingest)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"  # I7
        leaves = {r[0] for r in conn.execute("SELECT report_id FROM log_leaves")}
        measured = {r[0] for r in conn.execute("SELECT report_id FROM measured_reports")}
        stored = {r[0] for r in conn.execute("SELECT report_id FROM reports")}
        for factory in FACTORIES:
            rows = conn.execute("SELECT report_id, seq, prev_sha256, payload_sha256, state "
                                "FROM reports WHERE factory_id = ? ORDER BY seq",
                                (factory,)).fetchall()
            assert [r[1] for r in rows] == list(range(1, REPORTS + 1)), factory  # I1, I2
            previous = genesis_sha256(factory)
            for report_id, seq, prev, digest, state in rows:  # I3
                assert (prev, state) == (previous, "accepted"), (factory, seq)
                previous = digest
                assert report_id in leaves and report_id in measured, seq  # never partial
    assert stored == {s.report_id for s in chain} and len(leaves) == len(stored)
    assert set(seen) <= stored
    output = log.read_text()
    assert "Traceback" not in output, output[-3000:]
