"""The `pg` stage of bench/bureau.py (issue 18 item 6): ingest into PostgreSQL by several
real `tieragent bureau serve --share-group` processes through a real Mosquitto.

`pg_stage` takes a PostgreSQL URL (`--database-url`) or starts its own server as the tests
do (tests/support/postgres.py) but durable: fsync and synchronous_commit on, PostgreSQL's
defaults, so a receipt is only published for a report on disk. It starts Mosquitto on a
free loopback port, migrates and enrols the factories, starts `--receivers` processes on one
share group, and waits until each is subscribed. Then several publisher clients (the
agents) send the pre-signed, chained daily reports, day by day across factories (a factory's
reports in chain order from one client), and one client collects the receipts. Timed: from
the first publish to the last receipt. Afterwards, untimed: every receipt verified with the
bureau key, every report stored exactly once, every chain whole and `accepted`, the log one
leaf per report. Receivers and servers are stopped by PID.

`profile` names a file for py-spy's collapsed stacks of receiver 0 (py-spy: pip install).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.protocol.envelope import Kind, verify_compact
from bureau.database import DATABASE_URL_ENV
from bureau.receipts import bureau_public, create_bureau_key
from bureau.registry import KeyRegistry
from bureau.store import SqlReportStore
from tests.support.mosquitto import Broker
from tests.support.paths import python_env
from tests.support.postgres import PostgresServer
from tests.support.waiting import wait_until

PUBLISHERS = 4
GROUP = "bench"
BUREAU_ID = "bureau-bench"


class Receipts:
    """Every receipt published, kept raw with its arrival time (verified after timing)."""

    def __init__(self, port: int) -> None:
        self.raw: list[bytes] = []
        self.last = 0.0
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-receipts",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe("tieragent/v1/+/receipt", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.raw.append(bytes(message.payload))
            self.last = time.perf_counter()

    def count(self) -> int:
        with self.lock:
            return len(self.raw)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _publish(port: int, name: str, messages: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(64)
    client.max_queued_messages_set(0)  # unbounded: the whole share is queued at once
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, message, qos=1) for topic, message in messages]
        for info in infos:
            info.wait_for_publish(120)
    finally:
        client.disconnect()
        client.loop_stop()


def _cpu_s(pid: int) -> float:
    """utime + stime of a process from /proc (Linux), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(pid: int | None) -> float:
    """CPU seconds of a process and its children (PostgreSQL's backends), 0 without one."""
    if pid is None:
        return 0.0
    import psutil

    total = 0.0
    parent = psutil.Process(pid)
    for process in [parent, *parent.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def _machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all processes, /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def pg_stage(
    messages: list[tuple[str, bytes]], keys: dict[str, dict[str, str]], *,
    receivers: int, database_url: str | None, profile: Path | None = None,
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = None
        if database_url is None:
            server = PostgresServer(durable=True)
            server.start()
        broker = Broker(tmp, "max_queued_messages 0\nset_tcp_nodelay true\n")
        broker.start()
        try:
            url = database_url or server.create_database("bench")  # type: ignore[union-attr]
            others = {"PostgreSQL": server.process.pid if server and server.process else None,
                      "Mosquitto": broker.process.pid if broker.process else None}
            return _run(messages, keys, tmp, broker, url, receivers, profile,
                        "own server, fsync on" if server else "given URL", others)
        finally:
            broker.stop()
            if server is not None:
                server.stop()


def _run(
    messages: list[tuple[str, bytes]], keys: dict[str, dict[str, str]], tmp: Path,
    broker: Broker, url: str, receivers: int, profile: Path | None, what: str,
    others: dict[str, int | None],
) -> dict[str, float]:
    store = SqlReportStore(url)  # migrates
    with store.transaction():
        registry = KeyRegistry(store.db)
        for fid, jwk in keys.items():
            registry.enroll(fid, jwk, at=0.0)
    key = create_bureau_key(tmp / "bureau-key.pem")
    env = python_env(**{DATABASE_URL_ENV: url})
    processes, logs = [], []
    for n in range(receivers):
        log = tmp / f"serve-{n}.log"
        with open(log, "wb") as out:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "tieragent", "bureau", "serve",
                 "--broker", broker.url, "--key", str(tmp / "bureau-key.pem"),
                 "--bureau-id", BUREAU_ID, "--share-group", GROUP,
                 "--client-id", f"bench-bureau-{n}", "--protocol", "5"],
                # cwd: not the checkout, whose packages `-m` would put before PYTHONPATH
                # (an older tree given there is what runs, bench/bureau.py's docstring).
                stdout=out, stderr=out, env=env, cwd=tmp,
            ))
        logs.append(log)
    spy = None
    try:
        if not wait_until(lambda: all(b"Bureau receiver connected." in p.read_bytes()
                                      for p in logs), 60):
            raise SystemExit("receivers did not connect: "
                             + " | ".join(p.read_text()[-500:] for p in logs))
        receipts = Receipts(broker.port)
        assert receipts.subscribed.wait(10)
        if profile is not None:
            spy = subprocess.Popen(
                [shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                 "record", "--format", "raw", "--rate", "200", "--gil", "-o", str(profile),
                 "-p", str(processes[0].pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        shares: dict[int, list[tuple[str, bytes]]] = {n: [] for n in range(PUBLISHERS)}
        factories = sorted(keys)
        slot = {fid: n % PUBLISHERS for n, fid in enumerate(factories)}
        for topic, message in messages:
            shares[slot[topic.split("/")[2]]].append((topic, message))
        cpu_before = [_cpu_s(p.pid) for p in processes]
        busy_before = _machine_busy_s()
        others_before = {name: _tree_cpu_s(pid) for name, pid in others.items()}
        own_before = time.process_time()
        started = time.perf_counter()
        threads = [threading.Thread(target=_publish, args=(broker.port, f"agents-{n}", share))
                   for n, share in shares.items()]
        for thread in threads:
            thread.start()
        done = _wait_receipts(receipts, len(messages))
        elapsed = receipts.last - started
        cpu = sum(_cpu_s(p.pid) - b for p, b in zip(processes, cpu_before, strict=True))
        busy = _machine_busy_s() - busy_before
        spent = {name: _tree_cpu_s(pid) - others_before[name] for name, pid in others.items()}
        spent["this driver (publishers, receipts)"] = time.process_time() - own_before
        for thread in threads:
            thread.join(60)
        receipts.close()
        if spy is not None:
            os.kill(spy.pid, signal.SIGINT)
            spy.wait(60)
            spy = None
        for process in processes:
            os.kill(process.pid, signal.SIGTERM)
            process.wait(60)
        metrics = [_last_json(p) for p in logs]
    finally:
        if spy is not None and spy.poll() is None:
            os.kill(spy.pid, signal.SIGKILL)
        for process in processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(10)
    n = len(messages)
    print(f"ingest into PostgreSQL ({what}), {receivers} receivers: {n} reports stored and "
          f"receipted in {elapsed:.2f} s: {n / elapsed:.0f} reports/s wall; receivers' CPU "
          f"{cpu:.1f} s ({n / cpu:.0f} reports/s per receiver core); the machine busy "
          f"{busy:.1f} CPU-s of {os.cpu_count()} x {elapsed:.1f} s (everyone's, "
          f"other sessions too)", flush=True)
    print("  CPU per report: receivers " + f"{cpu / n * 1000:.2f} ms, " + ", ".join(
        f"{name} {seconds / n * 1000:.2f} ms" for name, seconds in spent.items()), flush=True)
    print(f"  receipts per receiver {[m.get('receipts_published_total', 0) for m in metrics]}",
          flush=True)
    if not done:
        problems = [line for log in logs for line in log.read_text().splitlines()
                    if any(word in line.lower() for word in ("warning", "error", "traceback"))]
        raise SystemExit(f"only {receipts.count()} of {n} receipts within the time limit; "
                         f"the receivers' metrics {metrics}; their last warnings and errors: "
                         f"{problems[-5:]}")
    _check(store, receipts.raw, bureau_public(key), messages)
    store.close()
    return {"wall": n / elapsed, "receiver_cpu_s": cpu}


def _wait_receipts(receipts: Receipts, expected: int, stall_s: float = 30.0) -> bool:
    """Until every receipt came, or none came for `stall_s`."""
    seen, since = 0, time.monotonic()
    while time.monotonic() - since < stall_s:
        count = receipts.count()
        if count >= expected:
            return True
        if count > seen:
            seen, since = count, time.monotonic()
        time.sleep(0.05)
    return False


def _last_json(log: Path) -> dict[str, Any]:
    lines = log.read_text().strip().splitlines()
    try:
        return dict(json.loads(lines[-1]))
    except (IndexError, ValueError):
        return {}


def _check(
    store: SqlReportStore, raw: list[bytes], bureau_jwk: dict[str, str],
    messages: list[tuple[str, bytes]],
) -> None:
    """Untimed: receipts signed, reports stored once, chains accepted, one leaf each."""
    statuses: dict[str, int] = {}
    for token in raw:
        status = str(verify_compact(token.decode(), Kind.RECEIPT, bureau_jwk).payload["status"])
        statuses[status] = statuses.get(status, 0) + 1
    stored = store.db.scalar("SELECT COUNT(*) FROM reports")
    states = dict(store.db.rows("SELECT state, COUNT(*) FROM reports GROUP BY state"))
    leaves = store.db.scalar("SELECT COUNT(*) FROM log_leaves")
    rejected = store.db.scalar("SELECT COUNT(*) FROM rejections")
    print(f"  receipts {statuses} (all verified); stored {stored} {states}; "
          f"log leaves {leaves}; rejections {rejected}", flush=True)
    assert stored == len(messages) == leaves, (stored, len(messages), leaves)
    assert states == {"accepted": len(messages)} and rejected == 0, (states, rejected)
