"""T11 of docs/reliability.md §c: the broker's ACL denies the agent the report topic, so
every PUBLISH of a report gets a PUBACK with reason 0x87 "Not authorized" (MQTT 5).

Checked on Mosquitto 2.0.11 (Debian): a denied QoS 1 PUBLISH is logged "Denied PUBLISH" and
answered "Sending PUBACK ... rc135" to an MQTT 5 client; to a 3.1.1 client the same PUBACK
carries no reason, so the denial looks like success and the message is dropped (only the
missing receipt keeps the row). The agent runs as `tieragent report send` in its own
process, so its CPU time is its own; a password file and an ACL file are written for the
run, the password never on a command line. Shared by tests/delivery/test_delivery_chaos.py
(a 15 s window) and bench/soak.py (60 s).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from joserfc.jwk import OKPKey

from agent.outbox import Outbox
from tests.support.bureau_receiver import start_bureau
from tests.support.invariants import check_no_tracebacks
from tests.support.mosquitto import Broker
from tests.support.paths import python_env
from tests.support.reports import FACTORY, commit_days
from tests.support.waiting import wait_until

AGENT_USER = "agent"
ALARM = "The broker refused a report"
RECEIPT_TIMEOUT_S = 3.0


@dataclass
class RefusedFigures:
    window_s: float
    alarms: list[float]  # seconds after the first alarm, one per refused PUBLISH
    denied: int  # "Denied PUBLISH" lines of the broker for the agent
    refused_with_0x87: int  # "Sending PUBACK ... rc135" lines
    cpu_s: float  # the agent process's user + system CPU over the window
    state: str  # the report's outbox state at the end
    stored: int  # reports in the bureau store
    stderr: str = field(repr=False)

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / self.window_s


def expected_alarm_times(window_s: float, cap_s: float = 300.0) -> list[float]:
    """When the publisher resends a refused report: at 0, then after its backoff, the receipt
    timeout doubling per attempt up to the cap (agent/publisher.py `_backoff`)."""
    times, at, attempt = [0.0], 0.0, 1
    while True:
        at += min(cap_s, RECEIPT_TIMEOUT_S * 2 ** (attempt - 1))
        if at > window_s:
            return times
        times.append(at)
        attempt += 1


def write_acl(directory: Path, password: str) -> str:
    """Broker configuration lines: anonymous clients (the bureau) may do anything; user
    `agent` may read receipts and write its status, not reports."""
    salt = os.urandom(12)
    digest = hashlib.sha512(password.encode() + salt).digest()  # Mosquitto's "$6$" format
    passwords = directory / "mosquitto.passwd"
    passwords.write_text(
        f"{AGENT_USER}:$6${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}\n"
    )
    acl = directory / "mosquitto.acl"
    acl.write_text(
        "topic readwrite #\n"
        f"user {AGENT_USER}\n"
        "topic read tieragent/v1/+/receipt\n"
        "topic write tieragent/v1/+/status\n"
    )
    # Started as root, Mosquitto becomes user `mosquitto` before it reads these files in the
    # test's 0700 folder; `user` keeps it as the test's user (ignored when not root).
    return (
        f"user {pwd.getpwuid(os.geteuid()).pw_name}\npassword_file {passwords}\n"
        f"acl_file {acl}\nlog_type debug\n"
    )


def run_refused(tmp_path: Path, window_s: float, protocol: str = "5") -> RefusedFigures:
    """One report, the agent denied the report topic, watched for `window_s` seconds from
    the first refusal."""
    password = base64.b64encode(os.urandom(18)).decode()
    with Broker(tmp_path, write_acl(tmp_path, password)) as broker:
        key = OKPKey.generate_key("Ed25519")
        bureau = start_bureau(tmp_path / "bureau.db", broker.url, {FACTORY: key})
        try:
            outbox = Outbox(tmp_path / "outbox.db")
            commit_days(outbox, key, range(1, 2))
            outbox.close()
            password_file = tmp_path / "agent.password"
            password_file.touch(mode=0o600)
            password_file.write_text(password)
            bureau_key = tmp_path / "bureau.jwk.json"
            bureau_key.write_text(json.dumps(bureau.public))
            figures = _watch(
                _send_command(tmp_path, broker, bureau_key, password_file, protocol, window_s),
                window_s,
            )
            stored = len(bureau.receiver.store.reports(FACTORY))
        finally:
            bureau.receiver.stop()
        log = "\n".join(p.read_text() for p in sorted(tmp_path.glob("mosquitto-*.log")))
    [item] = Outbox(tmp_path / "outbox.db").items(FACTORY)
    figures.state, figures.stored = item.state, stored
    agent_lines = [line for line in log.splitlines() if "tieragent-" + FACTORY in line]
    figures.denied = sum("Denied PUBLISH" in line and "/report'" in line for line in agent_lines)
    figures.refused_with_0x87 = sum(
        "Sending PUBACK" in line and "rc135" in line for line in agent_lines
    )
    return figures


def _send_command(
    tmp_path: Path, broker: Broker, bureau_key: Path, password_file: Path, protocol: str,
    window_s: float,
) -> list[str]:
    return [
        sys.executable, "-m", "tieragent", "report", "send",
        "--outbox", str(tmp_path / "outbox.db"), "--broker", broker.url, "--factory", FACTORY,
        "--bureau-key", str(bureau_key), "--protocol", protocol, "--keepalive-s", "2",
        "--receipt-timeout-s", str(RECEIPT_TIMEOUT_S), "--reconnect-min-s", "0.1",
        "--reconnect-max-s", "2", "--username", AGENT_USER, "--password-file",
        str(password_file), "--until-drained", "--timeout-s", str(window_s + 60),
    ]


def _watch(command: list[str], window_s: float) -> RefusedFigures:
    """Start the agent, wait for its first alarm, measure its CPU over `window_s`, stop it."""
    agent = subprocess.Popen(command, env=python_env(), stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert agent.stderr is not None
        for line in agent.stderr:
            lines.append((time.monotonic(), line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert wait_until(lambda: any(ALARM in line for _, line in lines), 60), (
            "no refusal logged: " + "".join(line for _, line in lines)[-2000:]
        )
        process = psutil.Process(agent.pid)
        before = process.cpu_times()
        first = next(at for at, line in lines if ALARM in line)
        time.sleep(max(0.0, first + window_s - time.monotonic()))
        after = process.cpu_times()
    finally:
        agent.terminate()  # by its PID; started here
        agent.wait(10)
        reader.join(5)
    stderr = "".join(line for _, line in lines)
    check_no_tracebacks(outputs=[stderr])
    alarms = [at - first for at, line in lines if ALARM in line and at - first <= window_s]
    cpu_s = (after.user + after.system) - (before.user + before.system)
    return RefusedFigures(window_s, alarms, 0, 0, cpu_s, "", 0, stderr)
