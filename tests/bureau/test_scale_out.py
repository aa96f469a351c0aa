"""Scale-out (issue 18, item 5): three `tieragent bureau serve` processes share one MQTT
subscription (`--share-group`) through a real Mosquitto and one real PostgreSQL, while 50
factories deliver 6 daily reports each, concurrently and partly out of order.

The driver stands in for the agents: reports built and signed with the agent's own code
(tests/support/reports.py), published by several MQTT clients at once, resent like an agent
resends a report without a final receipt. Then, from the database: every report stored
once, every chain whole and accepted, every stored and every received receipt signed by the
bureau key, and the transparency log as long as the reports with a verifying head over them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from joserfc.jwk import OKPKey
from paho.mqtt.enums import CallbackAPIVersion

from agent.protocol.chain import genesis_sha256
from agent.protocol.envelope import (
    Kind,
    canonical_bytes,
    public_jwk,
    sha256_hex,
    sign_compact,
    thumbprint,
    verify_compact,
)
from agent.protocol.mqtt import report_topic
from agent.protocol.translog import verify_head
from bureau.database import DATABASE_URL_ENV
from bureau.receipts import bureau_public, create_bureau_key
from bureau.registry import KeyRegistry
from bureau.store import ACCEPTED, SqlReportStore
from bureau.translog import TransparencyLog
from tests.support.mosquitto import Broker
from tests.support.paths import python_env
from tests.support.postgres import PostgresServer
from tests.support.reports import BUREAU, day, make_report
from tests.support.waiting import wait_until

FACTORIES = 50
REPORTS = 6
RECEIVERS = 3
PUBLISHERS = 5
GROUP = "bureaus"


@dataclass(frozen=True)
class Sent:
    factory: str
    seq: int
    report_id: str
    message: bytes


def _chains() -> tuple[dict[str, OKPKey], list[list[Sent]]]:
    """Each factory's key and its 6 signed reports in chain order."""
    keys, chains = {}, []
    for n in range(FACTORIES):
        factory = f"tj-{n:03d}"
        key = keys[factory] = OKPKey.generate_key("Ed25519")
        prev, chain = genesis_sha256(factory), []
        for seq in range(1, REPORTS + 1):
            report = make_report(key, day(seq), seq, prev, factory=factory, devices=1)
            payload = canonical_bytes(report)
            chain.append(Sent(factory, seq, report["report_id"],
                              sign_compact(payload, key, Kind.REPORT).encode()))
            prev = sha256_hex(payload)
        chains.append(chain)
    return keys, chains


def _publish_order(chains: list[list[Sent]]) -> list[Sent]:
    """Round by round over the factories; odd factories send each pair reversed (seq 2
    before 1, 4 before 3, ...), so successors often arrive before their predecessor."""
    order = []
    for pair in range(0, REPORTS, 2):
        for n, chain in enumerate(chains):
            first, second = chain[pair], chain[pair + 1]
            order += [second, first] if n % 2 else [first, second]
    return order


class Receipts:
    """Every receipt the bureaus publish, verified with the bureau key on arrival."""

    def __init__(self, broker_url: str, bureau_jwk: dict[str, str]) -> None:
        self.bureau_jwk = bureau_jwk
        self.status: dict[str, str] = {}  # report_id -> latest receipt status
        self.count = 0
        self.unverified = 0
        self.lock = threading.Lock()
        port = int(broker_url.rsplit(":", 1)[1])
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="receipts",
                                  protocol=mqtt.MQTTv5)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe("tieragent/v1/+/receipt", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        try:
            payload = verify_compact(message.payload.decode(), Kind.RECEIPT,
                                     self.bureau_jwk).payload
        except Exception:
            with self.lock:
                self.unverified += 1
            return
        with self.lock:
            self.count += 1
            self.status[str(payload["report_id"])] = str(payload["status"])

    def settled(self, report_id: str) -> bool:
        """Stored for sure: accepted, or a duplicate of a stored report."""
        with self.lock:
            return self.status.get(report_id) in ("accepted", "duplicate")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _publish(broker_url: str, name: str, messages: list[Sent]) -> None:
    port = int(broker_url.rsplit(":", 1)[1])
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(report_topic(m.factory), m.message, qos=1) for m in messages]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()


def _publish_concurrently(broker_url: str, messages: list[Sent]) -> None:
    shares = [messages[n::PUBLISHERS] for n in range(PUBLISHERS)]
    threads = [threading.Thread(target=_publish, args=(broker_url, f"agents-{n}", share))
               for n, share in enumerate(shares)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


@pytest.fixture
def database(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database("scale")


@pytest.fixture
def receivers(
    tmp_path: Path, mosquitto: Broker, database: str
) -> Iterator[tuple[list[subprocess.Popen[bytes]], list[Path], OKPKey]]:
    key_file = tmp_path / "bureau-key.pem"
    bureau_key = create_bureau_key(key_file)
    env = python_env(**{DATABASE_URL_ENV: database})  # the URL never on a command line
    processes, logs = [], []
    for n in range(RECEIVERS):
        log = tmp_path / f"serve-{n}.log"
        with open(log, "wb") as out:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "tieragent", "bureau", "serve",
                 "--broker", mosquitto.url, "--key", str(key_file), "--bureau-id", BUREAU,
                 "--share-group", GROUP, "--client-id", f"bureau-{n}", "--protocol", "5"],
                stdout=out, stderr=out, env=env,
            ))
        logs.append(log)
    try:
        yield processes, logs, bureau_key
    finally:
        for process in processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(10)


def _stop(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGTERM)
    process.wait(30)


@pytest.mark.slow
def test_three_receivers_share_fifty_factories_on_one_postgresql(
    mosquitto: Broker, database: str,
    receivers: tuple[list[subprocess.Popen[bytes]], list[Path], OKPKey],
) -> None:
    """If 3 receivers share the report subscription and one PostgreSQL while 50 factories
    deliver 6 reports each, concurrently and partly out of order, then every report is
    stored once, every chain is whole and accepted, every receipt verifies with the bureau
    key, the log has one leaf per report under a verifying head, and all 3 did work."""
    processes, logs, bureau_key = receivers
    keys, chains = _chains()
    store = SqlReportStore(database)
    with store.transaction():  # enrolled while the receivers start (they migrated it)
        for factory, key in keys.items():
            KeyRegistry(store.db).enroll(factory, public_jwk(key))
    assert wait_until(lambda: all(b"Bureau receiver connected." in p.read_bytes()
                                  for p in logs), 60), [p.read_text()[-1000:] for p in logs]
    bureau_jwk = bureau_public(bureau_key)
    receipts = Receipts(mosquitto.url, bureau_jwk)
    assert receipts.subscribed.wait(10)
    everything = [sent for chain in chains for sent in chain]
    _publish_concurrently(mosquitto.url, _publish_order(chains))
    # Resend like an agent: what has no accepted (or duplicate) receipt after a while.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if wait_until(lambda: all(receipts.settled(s.report_id) for s in everything), 5.0):
            break
        _publish_concurrently(
            mosquitto.url, [s for s in everything if not receipts.settled(s.report_id)])
    receipts.close()
    for process in processes:
        _stop(process)
    outputs = [p.read_text() for p in logs]
    assert all(process.returncode == 0 for process in processes), [o[-2000:] for o in outputs]
    assert not any("Traceback" in o for o in outputs), outputs
    handled = [json.loads(o.strip().splitlines()[-1]).get("receipts_published_total", 0)
               for o in outputs]
    assert all(n > 0 for n in handled), handled  # the shared subscription spread the work

    assert receipts.unverified == 0 and receipts.count >= FACTORIES * REPORTS
    assert all(receipts.settled(s.report_id) for s in everything)
    # Stored once: one row per report (report_id is the key, (factory, seq) unique).
    stored = store.all_reports()
    assert sorted(r.report_id for r in stored) == sorted(s.report_id for s in everything)
    assert store.rejections() == [] and store.alerts() == []
    for chain in chains:
        factory = chain[0].factory
        rows = store.reports(factory)
        assert [r.seq for r in rows] == list(range(1, REPORTS + 1)), factory
        assert all(r.state == ACCEPTED for r in rows), (factory, [r.state for r in rows])
        previous = genesis_sha256(factory)
        for row in rows:
            assert row.prev_sha256 == previous, (factory, row.seq)
            previous = row.payload_sha256
            receipt = verify_compact(row.receipt_jws, Kind.RECEIPT, bureau_jwk).payload
            assert receipt["report_id"] == row.report_id
            assert receipt["report_sha256"] == row.payload_sha256
    # The log: one leaf per stored report, numbered without a hole, under a signed head.
    log = TransparencyLog(store.db, BUREAU)
    tree = log.tree()
    leaves = store.db.rows("SELECT report_id FROM log_leaves ORDER BY leaf_index")
    assert len(tree) == len(leaves) == len(stored)
    assert sorted(row[0] for row in leaves) == sorted(r.report_id for r in stored)
    latest = log.latest_head()
    assert latest is not None
    head = verify_head(latest[2], {thumbprint(bureau_jwk): bureau_jwk})
    assert head.tree_size == len(tree) and head.root_hash == tree.root()
    store.close()
