"""Shared helpers for the delivery and bureau tests: a real Mosquitto broker per test,
keys, synthetic base measures and a bureau receiver wired to them.

Loaded by tests/delivery/conftest.py and tests/bureau/conftest.py.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from joserfc.jwk import OKPKey

from agent.outbox import Outbox, OutboxItem
from agent.protocol.envelope import Kind, public_jwk, sign_compact, thumbprint
from agent.protocol.merkle import Segment, ordered_digests
from agent.protocol.period import Period
from agent.protocol.report import ReportMeta, build_report
from bureau.receiver import Receiver, ReceiverSettings
from indicators.columns import BASE_MEASURE_COLUMNS, COUNT_COLUMNS, INVENTORY_COLUMNS

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
FACTORY = "demo-tj-001"
BUREAU = "bureau-tj"
TZ = "Asia/Shanghai"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


# ---- TLS: a throwaway PKI made with `cryptography` ------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files of a throwaway CA, a broker certificate and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    # Created 0600 from the start, like every private key the project writes.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    valid: tuple[dt.datetime, dt.datetime],
    names: tuple[str, ...] = (),
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    """A CA certificate when `issuer` is None, else a leaf for `usage` (server/client auth)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    is_ca = issuer is None
    builder = builder.add_extension(
        x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True
    ).add_extension(
        x509.KeyUsage(
            digital_signature=not is_ca,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=is_ca,
            crl_sign=is_ca,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if names:
        alt: list[x509.GeneralName] = []
        for entry in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(entry)))
            except ValueError:
                alt.append(x509.DNSName(entry))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(
    directory: Path,
    *,
    server_names: tuple[str, ...] = ("127.0.0.1", "localhost"),
    server_expired: bool = False,
) -> Pki:
    """A CA plus a broker certificate for `server_names` (expired if asked) and a client
    certificate, written as PEM files under `directory` (keys 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    current = (now - dt.timedelta(days=1), now + dt.timedelta(days=1))
    expired = (now - dt.timedelta(days=10), now - dt.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("tieragent test CA", ca_key, None, ca_key, valid=current)
    files = {"ca": directory / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaves = {
        "server": (server_names, ExtendedKeyUsageOID.SERVER_AUTH, server_expired),
        "client": ((), ExtendedKeyUsageOID.CLIENT_AUTH, False),
    }
    for role, (names, usage, is_expired) in leaves.items():
        key = ec.generate_private_key(ec.SECP256R1())
        valid = expired if is_expired else current
        cert = _certificate(
            f"tieragent test {role}", key, ca, ca_key, valid=valid, names=names, usage=usage
        )
        files[f"{role}_cert"] = directory / f"{role}.pem"
        files[f"{role}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{role}_key"] = directory / f"{role}-key.pem"
        _write_key(files[f"{role}_key"], key)
    return Pki(**files)


# ---- broker ------------------------------------------------------------------------------


class Broker:
    """A real Mosquitto on 127.0.0.1:<port>, persistence off, stopped by PID.

    With `tls`, the only listener is TLS (mqtts://) with the PKI's broker certificate;
    `require_certificate` makes it refuse clients without a certificate from that CA.
    """

    def __init__(
        self,
        directory: Path,
        extra_conf: str = "",
        *,
        tls: Pki | None = None,
        require_certificate: bool = False,
    ) -> None:
        if not Path(MOSQUITTO).exists():
            pytest.fail(
                f"mosquitto not found at {MOSQUITTO}; install it (apt-get install mosquitto)"
            )
        self.directory = directory
        self.port = free_port()
        self.extra_conf = extra_conf
        self.tls = tls
        self.require_certificate = require_certificate
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.directory / "mosquitto.conf"
        tls = ""
        if self.tls is not None:
            # Listener options apply to the `listener` line above them. Started as root,
            # Mosquitto switches to user `mosquitto` before it reads the 0600 broker key;
            # `user` keeps it as the test's user (ignored when not started as root).
            tls = (
                f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
                f"cafile {self.tls.ca}\ncertfile {self.tls.server_cert}\n"
                f"keyfile {self.tls.server_key}\n"
                f"require_certificate {str(self.require_certificate).lower()}\n"
            )
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n{tls}allow_anonymous true\npersistence false\n"
            f"log_dest stderr\nlog_type error\n{self.extra_conf}\n"
        )
        self.starts += 1
        log = open(self.directory / f"mosquitto-{self.starts}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
        log.close()
        if not wait_until(self._listening, 10.0):
            self.stop()
            pytest.fail(f"mosquitto did not listen on port {self.port} within 10 s")

    def _listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.process = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# ---- synthetic data ---------------------------------------------------------------------


def inventory(devices: int = 3) -> pd.DataFrame:
    rows = []
    for i in range(devices):
        rows.append(
            {
                "device_id": f"m{i}",
                "line": "L1",
                "process_step": f"op{i}",
                "key_process": i % 2 == 0,
                "kind": "cnc" if i % 2 == 0 else "manual",
                "digital": i % 2 == 0,
                "connection": "opcua" if i % 2 == 0 else "none",
            }
        )
    return pd.DataFrame(rows, columns=list(INVENTORY_COLUMNS))


def synthetic_base(period: Period, devices: int = 3, seed: int = 1) -> pd.DataFrame:
    """Hourly base measures over a period, consistent with the time-model identities."""
    rng = np.random.default_rng(seed)
    start, end = period.bounds()
    rows = []
    for i in range(devices):
        for hour in range(start, end, 3600):
            pdt = float(rng.choice([0.0, 600.0]))
            apt = float(rng.integers(1800, 3000 - int(pdt)))
            asut = float(rng.integers(0, 200))
            adet = float(rng.integers(0, 200))
            unk = float(rng.integers(0, 20))
            adot = 3600.0 - pdt - apt - asut - adet - unk
            produced = int(apt // 30)
            scrap = int(rng.integers(0, 3))
            expected = 720
            received = int(expected - rng.integers(0, 10))
            rows.append(
                [
                    f"m{i}",
                    hour,
                    3600.0,
                    pdt,
                    apt,
                    asut,
                    adet,
                    adot,
                    unk,
                    apt * 0.9,
                    produced * 28.5,
                    produced,
                    produced - scrap,
                    scrap,
                    0,
                    int(adet > 100),
                    int(adet > 150),
                    expected,
                    received,
                    received - 2,
                    received,
                    1,
                    round(float(rng.uniform(1, 5)), 3),
                ]
            )
    frame = pd.DataFrame(rows, columns=list(BASE_MEASURE_COLUMNS))
    for column in COUNT_COLUMNS:
        frame[column] = frame[column].astype("int64")
    return frame


def segments(period: Period, devices: int = 2, seed: int = 1) -> list[Segment]:
    """Raw segments (device, signal, hour) with a few samples each."""
    rng = np.random.default_rng(seed)
    start, end = period.bounds()
    result = []
    for i in range(devices):
        for hour in range(start, end, 3600):
            for signal_id in ("state", "good"):
                samples = tuple(
                    (
                        float(hour + k * 600),
                        float(hour + k * 600 + 0.25),
                        signal_id,
                        int(rng.integers(0, 100)),
                        "good",
                    )
                    for k in range(3)
                )
                result.append(Segment(f"m{i}", signal_id, hour, samples))
    return result


def day(n: int) -> Period:
    return Period("day", f"2025-03-{n:02d}", TZ)


EVALUATION: dict[str, Any] = {"tier_reached": None, "conditions": [], "gaps": []}


def meta(
    key: OKPKey, period: Period, factory: str = FACTORY, revision: int = 0, bureau: str = BUREAU
) -> ReportMeta:
    return ReportMeta(
        factory_id=factory,
        enterprise_id="91120000XXXXXXXX",
        bureau_id=bureau,
        agent_version="0.1.0",
        kid=thumbprint(public_jwk(key)),
        config_sha256="a" * 64,
        policy_sha256="b" * 64,
        period=period,
        issued_at="2025-03-02T00:05:00Z",
        revision=revision,
    )


def make_report(
    key: OKPKey,
    period: Period,
    seq: int,
    prev: str,
    *,
    factory: str = FACTORY,
    devices: int = 2,
    **overrides: Any,
) -> dict[str, Any]:
    digests = [d for _, d in ordered_digests(segments(period, devices))]
    report = build_report(
        meta(key, period, factory),
        seq=seq,
        prev_sha256=prev,
        inventory=inventory(devices),
        base=synthetic_base(period, devices),
        evaluation=EVALUATION,
        segment_digests=digests,
    )
    report.update(overrides)
    return report


def commit_days(
    outbox: Outbox, key: OKPKey, days: range, factory: str = FACTORY, devices: int = 2
) -> list[OutboxItem]:
    def sign(payload: bytes) -> str:
        return sign_compact(payload, key, Kind.REPORT)

    items = []
    for n in days:
        period = day(n)

        def build(seq: int, prev: str, period: Period = period) -> dict[str, Any]:
            return make_report(key, period, seq, prev, factory=factory, devices=devices)

        items.append(outbox.commit_report(factory, period.slot(0), build, sign))
    return items


@dataclass
class Bureau:
    receiver: Receiver
    key: OKPKey

    @property
    def public(self) -> dict[str, str]:
        return public_jwk(self.key)


def start_bureau(
    db: Path,
    broker_url: str | None,
    agent_keys: dict[str, OKPKey],
    protocol: str = "5",
    **settings: Any,
) -> Bureau:
    key = OKPKey.generate_key("Ed25519")
    receiver = Receiver(
        ReceiverSettings(
            db=db,
            broker_url=broker_url or "mqtt://127.0.0.1:1",
            bureau_id=BUREAU,
            protocol=protocol,
            keepalive_s=5,
            **settings,
        ),
        key,
    )
    with receiver.store.transaction():
        for factory, agent_key in agent_keys.items():
            receiver.registry.enroll(factory, public_jwk(agent_key))
    if broker_url is not None:
        receiver.start()
        assert receiver.connected.wait(10), "bureau receiver did not connect"
    return Bureau(receiver, key)
