"""End-to-end delivery through a real Mosquitto: outbox -> publisher -> bureau -> receipt.

Test profile (docs/reliability.md §c): keepalive 2 s, reconnect 0.1-2 s with jitter, receipt
timeout 3 s, send window 4. The invariants I1-I8 (tests/support/invariants.py) are checked
after every run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from joserfc.jwk import OKPKey
from paho.mqtt.enums import CallbackAPIVersion

from agent.outbox import ACKED, Outbox
from agent.protocol.chain import genesis_sha256
from agent.protocol.envelope import Kind, canonical_bytes, public_jwk, sign_compact, verify_compact
from agent.protocol.mqtt import receipt_topic, report_topic
from agent.publisher import Publisher, PublisherSettings
from tests.support.bureau_receiver import Bureau, start_bureau
from tests.support.invariants import check_invariants
from tests.support.mosquitto import Broker
from tests.support.reports import FACTORY, commit_days, day, make_report
from tests.support.waiting import wait_until


def settings(
    broker_url: str, bureau: Bureau, protocol: str = "5", **extra: Any
) -> PublisherSettings:
    values: dict[str, Any] = {
        "broker_url": broker_url,
        "factory_id": FACTORY,
        "bureau_keys": (bureau.public,),
        "protocol": protocol,
        "keepalive_s": 2,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 2.0,
        "receipt_timeout_s": 3.0,
        "resend_cap_s": 6.0,
        "window": 4,
    }
    values.update(extra)
    return PublisherSettings(**values)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_reports_are_delivered_and_acked(
    tmp_path: Path, mosquitto: Broker, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    """If six reports are queued, then each reaches the bureau once and leaves the outbox only
    with a signed receipt, on MQTT 5 and on 3.1.1."""
    key = OKPKey.generate_key("Ed25519")
    bureau = start_bureau(tmp_path / "bureau.db", mosquitto.url, {FACTORY: key}, protocol)
    outbox = Outbox(tmp_path / "outbox.db")
    commit_days(outbox, key, range(1, 7))
    with Publisher(settings(mosquitto.url, bureau, protocol), outbox) as publisher:
        assert publisher.drain(20)
    check_invariants(outbox, bureau, logs=caplog.records)
    assert publisher.metrics["receipts_verified_total"] == 6
    bureau.receiver.stop()


def _at_least(items: list[bytes], n: int) -> bool:
    return len(items) >= n


def _stepped(publisher: Publisher) -> bool:
    publisher.step(0.05)
    return True


class RawClient:
    """A plain paho client for the test side: publish reports, collect receipts."""

    def __init__(self, url: str, factory: str = FACTORY) -> None:
        port = int(url.rsplit(":", 1)[1])
        self.receipts: list[bytes] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"raw-{time.time_ns()}", protocol=mqtt.MQTTv5
        )
        self.client.on_message = lambda _c, _u, m: self.receipts.append(bytes(m.payload))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(receipt_topic(factory), qos=1)
        assert subscribed.wait(5)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_bad_reports_get_rejection_receipts_over_mqtt(tmp_path: Path, mosquitto: Broker) -> None:
    """If a tampered, unknown-key, revoked-key, replayed or out-of-chain report is published,
    then the bureau answers each with a signed receipt naming the right reason."""
    key = OKPKey.generate_key("Ed25519")
    bureau = start_bureau(tmp_path / "bureau.db", mosquitto.url, {FACTORY: key})
    raw = RawClient(mosquitto.url)
    topic = report_topic(FACTORY)
    r1 = make_report(key, day(1), 1, genesis_sha256(FACTORY), devices=1)
    good = sign_compact(canonical_bytes(r1), key, Kind.REPORT)
    header, _, signature = good.split(".")
    import base64

    tampered_body = base64.urlsafe_b64encode(canonical_bytes({**r1, "seq": 7})).rstrip(b"=")
    stranger = OKPKey.generate_key("Ed25519")
    unknown = sign_compact(
        canonical_bytes({**r1, "kid": stranger.thumbprint()}), stranger, Kind.REPORT
    )
    out_of_chain = make_report(key, day(3), 3, "f" * 64, devices=1)
    cases: list[tuple[bytes, str, str | None]] = [
        (f"{header}.{tampered_body.decode()}.{signature}".encode(), "rejected", "signature"),
        (unknown.encode(), "rejected", "unknown-key"),
        (good.encode(), "accepted", None),
        (good.encode(), "duplicate", None),
        (
            sign_compact(
                canonical_bytes({**make_report(key, day(2), 2, "0" * 64, devices=1)}),
                key,
                Kind.REPORT,
            ).encode(),
            "rejected",
            "chain",
        ),
        (
            sign_compact(canonical_bytes(out_of_chain), key, Kind.REPORT).encode(),
            "pending",
            None,
        ),  # a gap: stored as pending-link, answered `pending` (never `accepted`)
    ]
    for n, (message, status, reason) in enumerate(cases, start=1):
        raw.publish(topic, message)
        assert wait_until(partial(_at_least, raw.receipts, n), 10), f"no receipt for case {n}"
        receipt = verify_compact(raw.receipts[-1], Kind.RECEIPT, bureau.public).payload
        assert (receipt["status"], receipt["reason"]) == (status, reason), n
    with bureau.receiver.store.transaction():
        bureau.receiver.registry.revoke(key.thumbprint())
    r4 = make_report(key, day(4), 4, "0" * 64, devices=1)
    raw.publish(topic, sign_compact(canonical_bytes(r4), key, Kind.REPORT).encode())
    assert wait_until(lambda: len(raw.receipts) >= len(cases) + 1, 10)
    receipt = verify_compact(raw.receipts[-1], Kind.RECEIPT, bureau.public).payload
    assert (receipt["status"], receipt["reason"]) == ("rejected", "revoked")
    states = [r.state for r in bureau.receiver.store.reports(FACTORY)]
    assert states == ["accepted", "pending-link"]
    raw.close()
    bureau.receiver.stop()


def _send_cmd(tmp_path: Path, url: str, bureau: Bureau, timeout_s: float) -> list[str]:
    key_file = tmp_path / "bureau.jwk.json"
    key_file.write_text(json.dumps(bureau.public))
    return [
        sys.executable,
        "-m",
        "tieragent",
        "report",
        "send",
        "--outbox",
        str(tmp_path / "outbox.db"),
        "--broker",
        url,
        "--factory",
        FACTORY,
        "--bureau-key",
        str(key_file),
        "--keepalive-s",
        "2",
        "--receipt-timeout-s",
        "3",
        "--reconnect-min-s",
        "0.1",
        "--reconnect-max-s",
        "2",
        "--until-drained",
        "--timeout-s",
        str(timeout_s),
    ]


@pytest.mark.parametrize("point", ["after_publish", "after_puback", "after_receipt_verify"])
def test_sigkill_between_publish_and_receipt(tmp_path: Path, mosquitto: Broker, point: str) -> None:
    """If the agent is SIGKILLed at a named point between publish and receipt handling, then
    after restart the report is resent (same bytes) and stored exactly once (P1)."""
    key = OKPKey.generate_key("Ed25519")
    bureau = start_bureau(tmp_path / "bureau.db", mosquitto.url, {FACTORY: key})
    outbox = Outbox(tmp_path / "outbox.db")
    commit_days(outbox, key, range(1, 4))
    outbox.close()
    env = {**os.environ, "TIERAGENT_CRASH_AT": point}
    crashed = subprocess.run(
        _send_cmd(tmp_path, mosquitto.url, bureau, 20),
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert crashed.returncode == -9, crashed.stderr.decode()[-2000:]
    env.pop("TIERAGENT_CRASH_AT")
    done = subprocess.run(
        _send_cmd(tmp_path, mosquitto.url, bureau, 30),
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    check_invariants(Outbox(tmp_path / "outbox.db"), bureau, outputs=[done.stderr])
    bureau.receiver.stop()


def test_T13_forged_receipts_ack_nothing(tmp_path: Path, mosquitto: Broker) -> None:
    """If 1,000 fuzzed receipts arrive (unsigned, wrong key, right key with a wrong hash,
    wrong typ), then no row is acked and all 1,000 are counted as forged (T13)."""
    agent_key = OKPKey.generate_key("Ed25519")
    bureau_key = OKPKey.generate_key("Ed25519")
    outbox = Outbox(tmp_path / "outbox.db")
    items = commit_days(outbox, agent_key, range(1, 3))
    bureau = Bureau(receiver=None, key=bureau_key)  # type: ignore[arg-type]
    publisher = Publisher(settings(mosquitto.url, bureau, receipt_timeout_s=30.0), outbox)
    publisher.start()
    assert wait_until(lambda: _stepped(publisher) and publisher.ready, 10)
    raw = RawClient(mosquitto.url)
    wrong_key = OKPKey.generate_key("Ed25519")
    topic = receipt_topic(FACTORY)
    for n in range(1000):
        item = items[n % 2]
        body = {
            "type": "tieragent-receipt/v1",
            "bureau_id": "x",
            "factory_id": FACTORY,
            "report_id": item.report_id,
            "report_sha256": item.payload_sha256,
            "seq": 1,
            "status": "accepted",
            "state": "accepted",
            "reason": None,
            "received_at": None,
            "original_receipt_sha256": None,
        }
        kind = n % 4
        if kind == 0:
            message = canonical_bytes(body)
        elif kind == 1:
            message = sign_compact(canonical_bytes(body), wrong_key, Kind.RECEIPT).encode()
        elif kind == 2:
            message = sign_compact(
                canonical_bytes({**body, "report_sha256": "0" * 64}), bureau_key, Kind.RECEIPT
            ).encode()
        else:
            message = sign_compact(canonical_bytes(body), bureau_key, Kind.REPORT).encode()
        raw.client.publish(topic, message, qos=1)
    assert wait_until(
        lambda: _stepped(publisher) and publisher.metrics["receipts_forged_total"] >= 1000, 30
    )
    publisher.stop()
    raw.close()
    assert publisher.metrics["receipts_forged_total"] == 1000
    assert outbox.counts()[ACKED] == 0


def test_T3_partition_detected_nothing_lost_drained_within_10_s_in_seq_order(
    tmp_path: Path, mosquitto: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """If the agent-broker link is blackholed (proxy pause, the unprivileged variant) for
    30 s while reports keep being committed, then the dead link is detected within
    2 x keepalive + 1 s, nothing is lost, and within 10 s of the link's return the backlog
    has reached the bureau, arriving in seq order (the order of its log leaves)."""
    from tests.support.fault_proxy import FaultProxy

    key = OKPKey.generate_key("Ed25519")
    bureau = start_bureau(tmp_path / "bureau.db", mosquitto.url, {FACTORY: key})
    outbox = Outbox(tmp_path / "outbox.db")
    with FaultProxy("127.0.0.1", mosquitto.port) as proxy:
        publisher = Publisher(settings(f"mqtt://127.0.0.1:{proxy.port}", bureau), outbox)
        publisher.start()
        commit_days(outbox, key, range(1, 3))
        assert publisher.drain(15)
        proxy.pause()
        paused_at = time.monotonic()
        commit_days(outbox, key, range(3, 8))
        assert wait_until(lambda: _stepped(publisher) and not publisher.ready, 10)
        detected_s = time.monotonic() - paused_at
        while time.monotonic() - paused_at < 30:
            publisher.step(0.1)
        assert outbox.unacked() == 5
        proxy.resume()
        resumed_at = time.monotonic()
        assert publisher.drain(10), outbox.counts()
        drained_s = time.monotonic() - resumed_at
        publisher.stop()
    assert detected_s <= 2 * 2 + 1
    assert drained_s <= 10
    arrival = bureau.receiver.store.db.rows(
        "SELECT r.seq FROM log_leaves l JOIN reports r ON r.report_id = l.report_id "
        "ORDER BY l.leaf_index")
    assert [row[0] for row in arrival] == list(range(1, 8))
    check_invariants(outbox, bureau, logs=caplog.records)
    bureau.receiver.stop()


def test_bureau_killed_between_commit_and_receipt(tmp_path: Path, mosquitto: Broker) -> None:
    """If the bureau is SIGKILLed after COMMIT and before publishing the receipt, then after
    its restart the agent's resend gets a `duplicate` receipt and the row is acked, with one
    stored copy (T7)."""
    from bureau.store import SqliteReportStore

    key = OKPKey.generate_key("Ed25519")
    bureau_key_file = tmp_path / "bureau-key.pem"
    jwk_file = tmp_path / "agent.jwk.json"
    jwk_file.write_text(json.dumps(public_jwk(key)))
    cli = [sys.executable, "-m", "tieragent", "bureau"]
    db = ["--db", str(tmp_path / "bureau.db")]
    subprocess.run(
        [*cli, "enroll", "--factory", FACTORY, "--jwk", str(jwk_file), *db],
        check=True,
        timeout=60,
        capture_output=True,
    )
    # The key is made once, explicitly: `show-key` and `serve` never create one.
    missing = subprocess.run([*cli, "show-key", "--key", str(bureau_key_file)], timeout=60,
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "bureau init-key" in missing.stderr
    assert not bureau_key_file.exists()
    subprocess.run([*cli, "init-key", "--key", str(bureau_key_file)], check=True, timeout=60,
                   capture_output=True)
    again = subprocess.run([*cli, "init-key", "--key", str(bureau_key_file)], timeout=60,
                           capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert bureau_key_file.stat().st_mode & 0o777 == 0o600
    shown = subprocess.run(
        [*cli, "show-key", "--key", str(bureau_key_file)],
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    bureau_public = json.loads(shown.stdout)
    serve = [
        *cli,
        "serve",
        *db,
        "--broker",
        mosquitto.url,
        "--key",
        str(bureau_key_file),
        "--bureau-id",
        "bureau-tj",
    ]
    env = {**os.environ, "TIERAGENT_CRASH_AT": "bureau_after_commit"}
    first = subprocess.Popen(serve, env=env, stderr=subprocess.PIPE)
    outbox = Outbox(tmp_path / "outbox.db")
    commit_days(outbox, key, range(1, 2))
    bureau = Bureau(receiver=None, key=OKPKey.import_key(bureau_public))  # type: ignore[arg-type]
    publisher = Publisher(settings(mosquitto.url, bureau), outbox)
    publisher.start()
    try:
        wait_until(lambda: _stepped(publisher) and first.poll() is not None, 20)
        if first.poll() is None:
            first.kill()
        assert first.wait(5) == -9
        second = subprocess.Popen(serve, env={**os.environ}, stderr=subprocess.PIPE)
        try:
            started = time.monotonic()
            assert publisher.drain(20), outbox.counts()
            acked_after_s = time.monotonic() - started
        finally:
            second.terminate()
            _, err = second.communicate(timeout=10)
    finally:
        publisher.stop()
    assert b"Traceback" not in err
    item = outbox.items()[0]
    assert item.receipt_jws is not None
    receipt = verify_compact(item.receipt_jws, Kind.RECEIPT, bureau_public).payload
    assert receipt["status"] == "duplicate"
    assert acked_after_s <= 3 + 6 + 2 + 5  # receipt timeout + backoff cap + 2 s + bureau start
    store = SqliteReportStore(tmp_path / "bureau.db")
    assert len(store.reports(FACTORY)) == 1


def test_default_settings_deliver_through_a_broker_that_speaks_only_mqtt_311(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """If the broker is NATS's MQTT face (3.1.1 only: it refuses MQTT 5 with CONNACK
    "Unsupported protocol version"), then with default settings the bureau and the agent each
    fall back to 3.1.1 once, saying so, and reports and receipts go through (before: MQTT 5
    was the default and both sides retried it forever)."""
    import logging

    from tests.support.nats_mqtt import NatsMqtt

    caplog.set_level(logging.WARNING)
    key = OKPKey.generate_key("Ed25519")
    with NatsMqtt(tmp_path) as broker:
        bureau = start_bureau(tmp_path / "bureau.db", broker.url, {FACTORY: key}, protocol="auto")
        try:
            outbox = Outbox(tmp_path / "outbox.db")
            commit_days(outbox, key, range(1, 4))
            defaults = PublisherSettings(broker_url=broker.url, factory_id=FACTORY,
                                         bureau_keys=(bureau.public,), reconnect_min_s=0.2,
                                         reconnect_max_s=1.0)
            assert defaults.protocol == "auto"
            with Publisher(defaults, outbox) as publisher:
                assert publisher.drain(30), outbox.counts()
            assert publisher.protocol.current == "3.1.1"
            check_invariants(outbox, bureau, logs=caplog.records)
        finally:
            bureau.receiver.stop()
    fallbacks = [r for r in caplog.records if "refused MQTT 5" in r.getMessage()]
    assert sorted(r.name for r in fallbacks) == ["tieragent.bureau", "tieragent.publish"]
