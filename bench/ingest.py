"""Ingest benchmark (issue 10): sustained samples/s into the agent's store, with the agent's
CPU and RSS, for OPC UA tags and Modbus registers changing at 1 Hz, side by side with a bare
asyncua subscription client receiving the same OPC UA notifications.

    .venv/bin/python bench/ingest.py [--opcua-tags 5000] [--modbus-registers 5000]
        [--opcua-servers 1] [--warmup 20] [--duration 60] [--no-bare] [--profile FILE]

Processes (each started here and stopped by PID): one simulator OPC UA face per server
(`scale_tags`, synthetic Double tags each changing once a second), one simulator Modbus face
(uint16 holding registers, 100 per unit id, each changing once a second), the agent
(`python -m tieragent run` on a generated configuration with every tag as a `process`
signal; `--profile` runs it under cProfile instead) and a bare asyncua client
subscribing to the same OPC UA nodes with the connector's parameters and only counting.

CPU time and RSS come from /proc/<pid>/stat and /proc/<pid>/status at the start and the end
of the measured window; counters are read at the same moments (the agent's /metrics, the
other processes' answers on stdin). Works in a temp dir.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from _paths import BENCH, ROOT

from agent.config import parse_config
from bench.ingest_support import bench_config
from simulator.opcua_face import free_port

SUPPORT = str(BENCH / "ingest_support.py")
TICK_S = os.sysconf("SC_CLK_TCK")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[str]
    answers: bool  # speaks the READY / stdin-JSON protocol

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_ready(self, timeout: float) -> None:
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.popen.stdout.readline()
            if line.strip() == "READY":
                return
            if not line and self.popen.poll() is not None:
                break
        raise RuntimeError(f"{self.name} did not start (exit code {self.popen.poll()})")

    def counters(self) -> dict[str, Any]:
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.popen.stdin.write("\n")
        self.popen.stdin.flush()
        return dict(json.loads(self.popen.stdout.readline()))

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK_S  # utime + stime

    def memory_mb(self) -> tuple[float, float]:
        """(VmRSS, VmHWM = peak RSS) in MB."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        kb = {m[0]: int(m[1]) for m in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M)}
        return kb["VmRSS"] / 1024, kb["VmHWM"] / 1024

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start(name: str, argv: list[str], answers: bool, log: Path) -> Proc:
    popen = subprocess.Popen(
        argv, cwd=ROOT, text=True, stdin=subprocess.PIPE if answers else subprocess.DEVNULL,
        stdout=subprocess.PIPE if answers else subprocess.DEVNULL, stderr=log.open("w"),
    )
    return Proc(name, popen, answers)


def scrape(port: int) -> dict[str, float]:
    """Sum of committed samples, queue depth and store lag from the agent's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out = {"samples": 0.0, "samples_ua": 0.0, "samples_mb": 0.0, "queue_depth": 0.0,
           "lag_s": 0.0, "up": 0.0}
    for line in text.splitlines():
        if line.startswith("tieragent_samples_total{"):
            value = float(line.rsplit(" ", 1)[1])
            out["samples"] += value
            out["samples_mb" if 'device="MB-' in line else "samples_ua"] += value
        elif line.startswith("tieragent_queue_depth "):
            out["queue_depth"] = float(line.split()[1])
        elif line.startswith("tieragent_store_lag_seconds "):
            out["lag_s"] = float(line.split()[1])
        elif line.startswith("tieragent_connection_up{"):
            out["up"] += float(line.rsplit(" ", 1)[1])
    return out


def stored_rows(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return int(conn.execute("SELECT coalesce(max(rowid), 0) FROM samples").fetchone()[0])


def disk_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())


def service_sections(tmp: Path, cleanup: contextlib.ExitStack) -> dict[str, Any]:
    """`reporting:` and `delivery:` as a site configures them: a signing key, a bureau
    receipt key, a local Mosquitto (started here, stopped by PID at the end); no bureau
    answers, so the report stays queued. Yesterday's report is due at once."""
    from datetime import date, timedelta

    from bureau.receipts import create_bureau_key
    from tests.support.mosquitto import Broker

    subprocess.run([sys.executable, "-m", "tieragent", "keys", "init", "--dir",
                    str(tmp / "data" / "keys")], check=True, capture_output=True, cwd=ROOT)
    from agent.protocol.envelope import public_jwk

    bureau_key = create_bureau_key(tmp / "bureau-key.pem")
    (tmp / "bureau.jwk.json").write_text(json.dumps(public_jwk(bureau_key)))
    broker = Broker(tmp)
    broker.start()
    cleanup.callback(broker.stop)
    return {
        "reporting": {"periods": ["day"], "grace_s": 0, "check_every_s": 5,
                      "since": (date.today() - timedelta(days=1)).isoformat()},
        "delivery": {"broker_url": broker.url, "bureau_key": str(tmp / "bureau.jwk.json")},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--opcua-tags", type=int, default=5000)
    parser.add_argument("--modbus-registers", type=int, default=5000)
    parser.add_argument("--opcua-servers", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--no-bare", action="store_true", help="no bare asyncua client")
    parser.add_argument("--bare-handler", action="store_true",
                        help="bare client uses a handler object, not the async iterator")
    parser.add_argument("--profile", type=Path, help="cProfile of the agent to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, agent.db)")
    parser.add_argument("--service", action="store_true",
                        help="also `reporting:` (yesterday's report due at start, built in "
                             "the agent's child process) and `delivery:` to a local Mosquitto")
    args = parser.parse_args()
    command = "$ .venv/bin/python bench/ingest.py " + shlex.join(sys.argv[1:])
    python = sys.executable
    procs: list[Proc] = []
    with contextlib.ExitStack() as cleanup:
        tmp = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
        if args.keep:
            print(f"work dir (kept): {tmp}", file=sys.stderr)
        else:
            cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
        try:
            servers: list[tuple[str, int]] = []
            share = -(-args.opcua_tags // max(args.opcua_servers, 1))
            for n in range(args.opcua_servers if args.opcua_tags else 0):
                tags = min(share, args.opcua_tags - n * share)
                port = free_port()
                procs.append(start(f"opcua-server-{n}", [
                    python, SUPPORT, "opcua-server", "--port", str(port), "--tags", str(tags)],
                    True, tmp / f"opcua-{n}.log"))
                servers.append((f"opc.tcp://127.0.0.1:{port}", tags))
            modbus = None
            if args.modbus_registers:
                port = free_port()
                procs.append(start("modbus-server", [
                    python, SUPPORT, "modbus-server", "--port", str(port),
                    "--registers", str(args.modbus_registers)], True, tmp / "modbus.log"))
                modbus = ("127.0.0.1", port, args.modbus_registers)
            for proc in procs:
                proc.wait_ready(120)

            raw = bench_config(servers, modbus)
            if args.service:
                raw.update(service_sections(tmp, cleanup))
            parse_config(raw, "bench")  # fail here, not in the agent, if it is invalid
            config = tmp / "bench.yaml"
            config.write_text(yaml.safe_dump(raw, sort_keys=False))
            data = tmp / "data"
            data.mkdir(exist_ok=True)
            metrics_port = free_port()
            run_argv = ["run", "--config", str(config), "--data-dir", str(data),
                        "--metrics-port", str(metrics_port)]
            if args.profile:
                argv = [python, SUPPORT, "agent", "--profile", str(args.profile.resolve()),
                        "--", *run_argv]
            else:
                argv = [python, "-m", "tieragent", *run_argv]
            agent = start("agent", argv, False, tmp / "agent.log")
            procs.append(agent)
            bare = None
            if not args.no_bare and servers:
                bares = [start(f"bare-{n}", [python, SUPPORT, "bare-client", "--endpoint", url,
                                             "--tags", str(tags),
                                             *(["--handler"] if args.bare_handler else [])],
                               True, tmp / f"bare-{n}.log")
                         for n, (url, tags) in enumerate(servers)]
                procs.extend(bares)
                for proc in bares:
                    proc.wait_ready(180)
                bare = bares

            connections = len(servers) + (1 if modbus else 0)
            deadline = time.monotonic() + 180
            while True:
                try:
                    m = scrape(metrics_port)
                    if m["up"] >= connections and m["samples"] > 0:
                        break
                except OSError:
                    pass
                if agent.popen.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the agent did not start collecting; see {tmp}/agent.log")
                time.sleep(0.5)
            print(f"collecting; warm-up {args.warmup:.0f} s, then {args.duration:.0f} s measured",
                  file=sys.stderr)
            time.sleep(args.warmup)

            def snapshot() -> dict[str, Any]:
                snap: dict[str, Any] = {"t": time.monotonic(), "cpu": {}, "counters": {}}
                for proc in procs:
                    snap["cpu"][proc.name] = proc.cpu_s()
                snap["metrics"] = scrape(metrics_port)
                for proc in procs:
                    if proc.answers:
                        snap["counters"][proc.name] = proc.counters()
                snap["rows"] = stored_rows(data / "agent.db")
                snap["rss"] = agent.memory_mb()[0]
                return snap

            first = snapshot()
            load_before = os.getloadavg()
            worst_depth, worst_lag, peak_rss = 0.0, 0.0, 0.0
            end_at = first["t"] + args.duration
            while time.monotonic() < end_at:
                time.sleep(min(5.0, max(0.0, end_at - time.monotonic())))
                m = scrape(metrics_port)
                worst_depth = max(worst_depth, m["queue_depth"])
                worst_lag = max(worst_lag, m["lag_s"])
                peak_rss = max(peak_rss, agent.memory_mb()[0])
            last = snapshot()
            rss, hwm = agent.memory_mb()
            load_after = os.getloadavg()
            bytes_running = disk_bytes(data / "agent.db")
            other_rss = {p.name: p.memory_mb()[0] for p in procs if p is not agent}
            agent.stop()
            bytes_closed = disk_bytes(data / "agent.db")
            rows_closed = stored_rows(data / "agent.db")
            if agent.popen.returncode not in (0, -signal.SIGTERM):
                print(f"agent exited with {agent.popen.returncode}", file=sys.stderr)
        finally:
            for proc in reversed(procs):
                proc.stop()
            for log in sorted(tmp.glob("*.log")):
                text = log.read_text()
                if "Traceback" in text or " error " in text:
                    print(f"--- {log.name} (tail)\n{text[-2000:]}", file=sys.stderr)

    elapsed = last["t"] - first["t"]

    def rate(value: float) -> float:
        return value / elapsed

    def cpu(name: str) -> float:
        return float(last["cpu"][name] - first["cpu"][name])

    stored = last["metrics"]["samples"] - first["metrics"]["samples"]
    rows = last["rows"] - first["rows"]
    stored_ua = last["metrics"]["samples_ua"] - first["metrics"]["samples_ua"]
    stored_mb = last["metrics"]["samples_mb"] - first["metrics"]["samples_mb"]
    offered_ua = sum(last["counters"][p.name]["writes"] - first["counters"][p.name]["writes"]
                     for p in procs if p.name.startswith("opcua-server"))
    offered_mb = args.modbus_registers * elapsed  # one sample per register per 1 s poll
    agent_us = 1e6 * cpu("agent") / max(stored, 1)
    print()
    print(f"Ingest benchmark: {args.opcua_tags} OPC UA tags ({args.opcua_servers} server "
          f"process(es)) + {args.modbus_registers} Modbus registers, all at 1 Hz")
    print(f"window {elapsed:.1f} s after {args.warmup:.0f} s warm-up; load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after; {os.cpu_count()} CPUs")
    print()
    print("| what | figure |")
    print("|---|---|")
    print(f"| offered: OPC UA value changes (server writes) | {rate(offered_ua):,.0f} /s |")
    print(f"| offered: Modbus registers (1 Hz poll) | {rate(offered_mb):,.0f} /s |")
    print(f"| stored by the agent (committed, /metrics) | {rate(stored):,.0f} samples/s |")
    print(f"| stored: OPC UA / Modbus | {rate(stored_ua):,.0f} / {rate(stored_mb):,.0f} "
          "samples/s |")
    print(f"| stored rows in agent.db | {rate(rows):,.0f} rows/s |")
    print(f"| stored / offered | {stored / max(offered_ua + offered_mb, 1):.3f} |")
    print(f"| worst queue depth / store lag (every 5 s) | {worst_depth:,.0f} items / "
          f"{worst_lag:.2f} s |")
    print(f"| agent CPU | {100 * cpu('agent') / elapsed:.1f} % of one core |")
    print(f"| agent RSS now / peak (VmHWM) | {rss:.0f} MB / {hwm:.0f} MB |")
    print(f"| agent RSS at the window's start / end | {first['rss']:.0f} MB / "
          f"{last['rss']:.0f} MB |")
    print(f"| agent CPU per stored sample | {agent_us:.1f} µs |")
    if bare:
        notes = sum(last["counters"][p.name]["notifications"]
                    - first["counters"][p.name]["notifications"] for p in bare)
        bare_cpu = sum(cpu(p.name) for p in bare)
        bare_us = 1e6 * bare_cpu / max(notes, 1)
        api = "handler object" if args.bare_handler else "async iterator"
        print(f"| bare asyncua client ({api}): notifications | {rate(notes):,.0f} /s |")
        print(f"| bare asyncua client: CPU | {100 * bare_cpu / elapsed:.1f} % of one core, "
              f"{bare_us:.1f} µs per notification |")
        print(f"| ratio agent / bare, µs per sample | {agent_us / bare_us:.2f} |")
    for proc in procs:
        if proc.name.startswith(("opcua-server", "modbus-server")):
            c0, c1 = first["counters"][proc.name], last["counters"][proc.name]
            print(f"| {proc.name}: CPU, tick overruns | {100 * cpu(proc.name) / elapsed:.1f} % "
                  f"of one core, {c1['overruns'] - c0['overruns']} overruns |")
    print(f"| bytes on disk per stored sample (agent.db + WAL, running) | "
          f"{bytes_running / max(last['rows'], 1):.1f} B ({bytes_running / 1e6:.0f} MB for "
          f"{last['rows']:,} rows) |")
    print(f"| same after the agent stopped | {bytes_closed / max(rows_closed, 1):.1f} B "
          f"({bytes_closed / 1e6:.0f} MB for {rows_closed:,} rows) |")
    print("| RSS of the other processes | "
          + ", ".join(f"{k} {v:.0f} MB" for k, v in other_rss.items()) + " |")
    print()
    print(command)
    if args.profile:
        print(f"agent profile: {args.profile}")


if __name__ == "__main__":
    main()
