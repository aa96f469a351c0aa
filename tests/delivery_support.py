"""Shared helpers for the delivery and bureau tests: a real Mosquitto broker per test,
keys, synthetic base measures and a bureau receiver wired to them.

Loaded by tests/delivery/conftest.py and tests/bureau/conftest.py.
"""

from __future__ import annotations

import os
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
from joserfc.jwk import OKPKey

from agent.envelope import Kind, public_jwk, sign_compact, thumbprint
from agent.merkle import Segment, ordered_digests
from agent.outbox import Outbox, OutboxItem
from agent.report import Period, ReportMeta, build_report
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


class Broker:
    """A real Mosquitto on 127.0.0.1:<port>, persistence off, stopped by PID."""

    def __init__(self, directory: Path, extra_conf: str = "") -> None:
        if not Path(MOSQUITTO).exists():
            pytest.fail(
                f"mosquitto not found at {MOSQUITTO}; install it (apt-get install mosquitto)"
            )
        self.directory = directory
        self.port = free_port()
        self.extra_conf = extra_conf
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.directory / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
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

        items.append(outbox.commit_report(factory, f"day/{period.key}/0", build, sign))
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
