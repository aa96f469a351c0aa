"""Fault matrix row P5 (docs/reliability.md §c): the bureau's disk fills while reports arrive.

A real `tieragent bureau serve` runs in a private mount namespace (`unshare -m`) with its
SQLite database on a tmpfs only a little larger than the database, behind a real Mosquitto.
One factory's chain of daily reports, signed with the agent's code, is published by a client
that resends what has no receipt, as an agent does. While the disk is full, every accepted
receipt must name a report already committed; once the tmpfs is enlarged (`nsenter` into
the namespace, `mount -o remount`), every report is stored once and the chain is whole.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
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

FACTORY = "tj-full"
REPORTS = 30
ROOM_BYTES = 160 * 1024  # a few reports' worth beyond the enrolled database
STORED = ("import sqlite3, sys, json; db = sqlite3.connect(sys.argv[1]); "
          "print(json.dumps([r[0] for r in db.execute('SELECT report_id FROM reports')]))")


def _chain(key: OKPKey) -> list[Sent]:
    prev, chain = genesis_sha256(FACTORY), []
    for seq in range(1, REPORTS + 1):
        report = make_report(key, day(seq), seq, prev, factory=FACTORY, devices=1)
        payload = canonical_bytes(report)
        chain.append(Sent(FACTORY, seq, report["report_id"],
                          sign_compact(payload, key, Kind.REPORT).encode()))
        prev = sha256_hex(payload)
    return chain


def _stored(pid: int, db: Path) -> list[str]:
    """The report ids in the bureau's database, read inside its mount namespace."""
    done = subprocess.run(["nsenter", "-t", str(pid), "-m", sys.executable, "-c", STORED,
                           str(db)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def test_P5_bureau_disk_full_sends_no_receipt_without_commit_and_recovers(
        tmp_path: Path, mosquitto: Broker) -> None:
    """If the bureau's disk fills while 30 reports arrive, then no `accepted` or `duplicate`
    receipt names a report that is not committed, the receiver keeps running without a
    traceback, and once space returns the resent reports are all stored, each once (I1),
    in an accepted chain."""
    for tool in ("unshare", "nsenter"):
        assert shutil.which(tool), f"{tool}(1) is missing; install util-linux"
    agent_key = OKPKey.generate_key("Ed25519")
    seed = tmp_path / "seed" / "bureau.db"
    seed.parent.mkdir()
    store = SqlReportStore(seed)
    with store.transaction():
        KeyRegistry(store.db).enroll(FACTORY, public_jwk(agent_key))
    store.close()
    bureau_key = create_bureau_key(tmp_path / "bureau-key.pem")
    mount = tmp_path / "full"
    mount.mkdir()
    size_kb = (seed.stat().st_size + ROOM_BYTES) // 1024
    db = mount / "bureau.db"
    log = tmp_path / "serve.log"
    script = (f"mount -t tmpfs -o size={size_kb}k tmpfs {mount} && cp {seed} {db} && "
              f"exec {sys.executable} -m tieragent bureau serve --db {db} --broker "
              f"{mosquitto.url} --key {tmp_path / 'bureau-key.pem'} --bureau-id {BUREAU} "
              f"--client-id bureau --protocol 5")
    with open(log, "wb") as out:
        serve = subprocess.Popen(["unshare", "-m", "sh", "-c", script], stdout=out,
                                 stderr=out, env=python_env())
    receipts = None
    try:
        assert wait_until(lambda: b"Bureau receiver connected." in log.read_bytes()
                          or serve.poll() is not None, 60), log.read_text()[-2000:]
        assert serve.poll() is None, f"cannot run the bureau on a tmpfs: {log.read_text()}"
        receipts = Receipts(mosquitto.url, bureau_public(bureau_key))
        assert receipts.subscribed.wait(10)
        chain = _chain(agent_key)

        _publish(mosquitto.url, "agent", chain)
        # Until the receipts stop coming: the disk is full, the rest stays unanswered.
        seen = -1
        for _ in range(30):  # bounded: 30 s
            if receipts.count == seen and seen > 0:
                break
            seen = receipts.count
            time.sleep(1.0)
        _publish(mosquitto.url, "agent", [s for s in chain if not receipts.settled(s.report_id)])
        time.sleep(2.0)
        settled = {s.report_id for s in chain if receipts.settled(s.report_id)}
        stored = set(_stored(serve.pid, db))
        assert settled <= stored, "a receipt names a report that is not committed"
        assert 0 < len(stored) < REPORTS, f"the disk did not fill: {len(stored)} stored"
        assert serve.poll() is None
        assert b"full" in log.read_bytes().lower(), log.read_text()[-2000:]

        grown = subprocess.run(["nsenter", "-t", str(serve.pid), "-m", "mount", "-o",
                                "remount,size=64m", str(mount)], capture_output=True,
                               text=True, timeout=30)
        assert grown.returncode == 0, grown.stderr
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # resend like an agent until all are settled
            if wait_until(lambda: all(receipts.settled(s.report_id) for s in chain), 5.0):
                break
            _publish(mosquitto.url, "agent",
                     [s for s in chain if not receipts.settled(s.report_id)])
        assert all(receipts.settled(s.report_id) for s in chain)
        final = _stored(serve.pid, db)
        assert sorted(final) == sorted(s.report_id for s in chain)  # I1, I2: once each
        assert receipts.unverified == 0
    finally:
        if receipts is not None:
            receipts.close()
        if serve.poll() is None:
            os.kill(serve.pid, signal.SIGTERM)
            try:
                serve.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(serve.pid, signal.SIGKILL)
                serve.wait(10)
    output = log.read_text()
    assert serve.returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]  # I8
    # The exit line's counters: the failures, and only committed acceptances (a transaction
    # rolled back by the full disk counts nothing).
    counters = json.loads(output.strip().splitlines()[-1])
    assert counters.get("store_errors_total", 0) > 0
    assert counters.get("internal_errors_total", 0) == 0
    assert counters["reports_accepted_total"] == REPORTS, counters
