"""MQTT over TLS through a real Mosquitto whose only listener is TLS (docs/reliability.md T12).

Every test makes a throwaway PKI with `cryptography` (tests/support/pki.py): a CA, a
broker certificate for 127.0.0.1/localhost and a client certificate, keys 0600. Timers are
the test profile of test_delivery_mqtt.py.
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from joserfc.jwk import OKPKey
from paho.mqtt.enums import CallbackAPIVersion
from test_delivery_mqtt import settings

from agent.outbox import ACKED, PENDING, Outbox
from agent.protocol.envelope import public_jwk
from agent.protocol.mqtt import BrokerError, make_client
from agent.publisher import Publisher, PublisherSettings
from bureau.receipts import load_or_create_bureau_key
from bureau.receiver import Receiver, ReceiverSettings
from bureau.registry import KeyRegistry
from bureau.store import SqliteReportStore
from tests.support.bureau_receiver import Bureau, start_bureau
from tests.support.invariants import check_invariants
from tests.support.mosquitto import Broker
from tests.support.pki import make_pki
from tests.support.reports import FACTORY, commit_days
from tests.support.waiting import wait_until

REPORTS = 3


class Observer:
    """Test-side watcher of every tieragent topic on the TLS listener.

    It skips certificate checks on purpose: it must see the broker even when the broker's
    certificate is expired or for another host, to show that the broker was up and that
    nothing from the agent arrived.
    """

    def __init__(self, port: int) -> None:
        self.messages: list[str] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        client_id = f"observer-{time.time_ns()}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id, protocol=mqtt.MQTTv5)
        self.client.tls_set_context(context)
        self.client.on_message = lambda _c, _u, m: self.messages.append(m.topic)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe("tieragent/v1/#", qos=1)
        assert subscribed.wait(5), "the observer could not subscribe over TLS"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def refused(publisher: Publisher, caplog: pytest.LogCaptureFixture) -> str:
    """Run `publisher` until its first failed attempt, then 1.5 s more (a plaintext or
    insecure fallback would connect and send within that time); returns the named cause."""
    publisher.start()
    try:
        deadline = time.monotonic() + 10
        while publisher.last_connect_error is None and time.monotonic() < deadline:
            publisher.step(0.05)
        assert publisher.last_connect_error is not None, "no failed connection attempt"
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            publisher.step(0.05)
    finally:
        publisher.stop()
    assert publisher.metrics["connects_total"] == 0
    assert publisher.metrics["reports_sent_total"] == 0
    assert publisher.metrics["connect_failures_total"] >= 2  # kept retrying, securely
    logged = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and r.getMessage().startswith("Cannot connect")
    ]
    assert f"Cannot connect to the MQTT broker: {publisher.last_connect_error}" in logged
    assert len(logged) < publisher.metrics["connect_failures_total"]  # per cause, not per retry
    return publisher.last_connect_error


def assert_untouched(outbox: Outbox) -> None:
    """Every report is still pending and was never handed to the broker."""
    items = outbox.items(FACTORY)
    assert len(items) == REPORTS
    assert [(i.state, i.attempts, i.receipt_jws) for i in items] == [(PENDING, 0, None)] * REPORTS


def test_reports_are_delivered_and_acked_over_tls(tmp_path: Path) -> None:
    """If the broker listens only on TLS and agent and bureau trust its CA, then signed
    reports reach the bureau over mqtts:// and each leaves the outbox only with a verified
    receipt."""
    pki = make_pki(tmp_path / "pki")
    key = OKPKey.generate_key("Ed25519")
    with Broker(tmp_path, tls=pki) as broker:
        assert broker.url.startswith("mqtts://")
        bureau = start_bureau(tmp_path / "bureau.db", broker.url, {FACTORY: key}, ca_file=pki.ca)
        outbox = Outbox(tmp_path / "outbox.db")
        commit_days(outbox, key, range(1, REPORTS + 1))
        try:
            with Publisher(settings(broker.url, bureau, ca_file=pki.ca), outbox) as publisher:
                assert publisher.drain(20), outbox.counts()
            check_invariants(outbox, bureau)
        finally:
            bureau.receiver.stop()
    assert publisher.metrics["receipts_verified_total"] == REPORTS
    assert publisher.last_connect_error is None


@pytest.mark.parametrize(
    ("variant", "cause"),
    [
        ("unknown-ca", "certificate verify failed"),
        ("expired", "certificate has expired"),
        ("wrong-host", "IP address mismatch"),
    ],
)
def test_T12_untrusted_broker_certificate_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, variant: str, cause: str
) -> None:
    """If the broker's certificate is from a CA the agent does not trust, expired, or for
    another host, then the publisher never connects, logs the cause once, sends nothing,
    and every report stays pending in the outbox (T12: no plaintext or insecure fallback)."""
    caplog.set_level(logging.WARNING)
    names = ("broker.invalid",) if variant == "wrong-host" else ("127.0.0.1", "localhost")
    broker_pki = make_pki(
        tmp_path / "broker-pki", server_names=names, server_expired=variant == "expired"
    )
    agent_ca = make_pki(tmp_path / "other-pki").ca if variant == "unknown-ca" else broker_pki.ca
    key = OKPKey.generate_key("Ed25519")
    outbox = Outbox(tmp_path / "outbox.db")
    commit_days(outbox, key, range(1, REPORTS + 1))
    bureau = Bureau(receiver=None, key=OKPKey.generate_key("Ed25519"))  # type: ignore[arg-type]
    with Broker(tmp_path, tls=broker_pki) as broker:
        observer = Observer(broker.port)
        try:
            publisher = Publisher(settings(broker.url, bureau, ca_file=agent_ca), outbox)
            error = refused(publisher, caplog)
        finally:
            observer.close()
    assert "CERTIFICATE_VERIFY_FAILED" in error and cause in error, error
    assert observer.messages == []  # not even the retained online status
    assert_untouched(outbox)


def test_tls_files_need_mqtts_and_must_load(tmp_path: Path) -> None:
    """If TLS files are given with an mqtt:// URL, or a TLS file cannot be loaded, then
    building the client fails with a BrokerError naming the problem instead of
    connecting in plaintext or without the file."""
    pki = make_pki(tmp_path / "pki")
    base = {"factory_id": FACTORY, "bureau_keys": ()}
    plain = PublisherSettings(broker_url="mqtt://127.0.0.1:1883", ca_file=pki.ca, **base)
    with pytest.raises(BrokerError, match="not mqtts://"):
        make_client(plain, "c")
    missing = tmp_path / "missing-ca.pem"
    absent = PublisherSettings(broker_url="mqtts://127.0.0.1:8883", ca_file=missing, **base)
    with pytest.raises(BrokerError, match=r"missing-ca\.pem"):
        make_client(absent, "c")
    mismatched = PublisherSettings(
        broker_url="mqtts://127.0.0.1:8883",
        ca_file=pki.ca,
        cert_file=pki.client_cert,
        key_file=pki.server_key,  # not the certificate's key
        **base,
    )
    with pytest.raises(BrokerError, match="Cannot load the MQTT TLS files"):
        make_client(mismatched, "c")


def test_broker_requiring_client_certificates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """If the broker requires client certificates, then an agent or a bureau receiver
    without one is refused with the cause named (the agent sends nothing), and with its
    certificate and key the agent delivers every report to `tieragent bureau serve
    --ca-file --cert-file --key-file` over the same listener."""
    caplog.set_level(logging.WARNING)
    pki = make_pki(tmp_path / "pki")
    agent_key = OKPKey.generate_key("Ed25519")
    bureau_key_file = tmp_path / "bureau-key.pem"
    signing_key = load_or_create_bureau_key(bureau_key_file)  # what `serve --key` loads
    bureau = Bureau(receiver=None, key=signing_key)  # type: ignore[arg-type]
    store = SqliteReportStore(tmp_path / "bureau.db")
    with store.transaction():
        KeyRegistry(store.db).enroll(FACTORY, public_jwk(agent_key))
    store.close()
    outbox = Outbox(tmp_path / "outbox.db")
    commit_days(outbox, agent_key, range(1, REPORTS + 1))
    with Broker(tmp_path, tls=pki, require_certificate=True) as broker:
        serve = subprocess.Popen(
            [
                sys.executable, "-m", "tieragent", "bureau", "serve",
                "--db", str(tmp_path / "bureau.db"),
                "--broker", broker.url,
                "--key", str(bureau_key_file),
                "--bureau-id", "bureau-tj",
                "--ca-file", str(pki.ca),
                "--cert-file", str(pki.client_cert),
                "--key-file", str(pki.client_key),
            ],
            stderr=subprocess.PIPE,
        )
        try:
            without = Publisher(settings(broker.url, bureau, ca_file=pki.ca), outbox)
            error = refused(without, caplog)
            assert_untouched(outbox)
            receiver = Receiver(
                ReceiverSettings(
                    db=tmp_path / "bureau-without-cert.db",
                    broker_url=broker.url,
                    bureau_id="bureau-tj",
                    client_id="bureau-without-cert",
                    ca_file=pki.ca,
                ),
                signing_key,
            )
            receiver.start()
            try:
                assert wait_until(lambda: receiver.last_connect_error is not None, 10)
                assert not receiver.connected.is_set()
            finally:
                receiver.stop()
            with_cert = settings(
                broker.url,
                bureau,
                ca_file=pki.ca,
                cert_file=pki.client_cert,
                key_file=pki.client_key,
            )
            with Publisher(with_cert, outbox) as publisher:
                assert publisher.drain(20), outbox.counts()
        finally:
            if serve.poll() is None:
                os.kill(serve.pid, signal.SIGTERM)
            _, err = serve.communicate(timeout=10)
    assert "certificate required" in error, error
    assert "certificate required" in str(receiver.last_connect_error), receiver.last_connect_error
    assert serve.returncode == 0, err.decode()[-2000:]
    assert b"Traceback" not in err and b"cannot connect" not in err
    assert publisher.metrics["receipts_verified_total"] == REPORTS
    assert [i.state for i in outbox.items(FACTORY)] == [ACKED] * REPORTS
    store = SqliteReportStore(tmp_path / "bureau.db")
    try:
        stored = store.reports(FACTORY)
    finally:
        store.close()
    assert [(r.seq, r.state) for r in stored] == [(n, "accepted") for n in range(1, REPORTS + 1)]
