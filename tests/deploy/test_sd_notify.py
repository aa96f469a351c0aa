"""`tieragent run` speaks systemd's notify protocol: READY=1, WATCHDOG=1 while healthy,
STOPPING=1 on SIGTERM, to the datagram socket named by NOTIFY_SOCKET (here an abstract one)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import sd_notify
from agent.metrics import AgentMetrics
from tests.support.ports import free_port

ROOT = Path(__file__).parents[2]
CONFIG = ROOT / "tests" / "agent" / "data" / "agent.yaml"


def _receiver(tmp_path: Path) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"tieragent-test-{os.getpid()}-{time.monotonic_ns()}"
    sock.bind("\0" + name)
    sock.settimeout(0.2)
    return sock, "@" + name


def _drain(sock: socket.socket, into: list[str], until: float) -> None:
    while time.monotonic() < until:
        try:
            into.append(sock.recv(4096).decode())
        except TimeoutError:
            return


def test_notifier_paths_and_watchdog_env(tmp_path: Path) -> None:
    path = Path("/tmp") / f"tieragent-notify-{os.getpid()}.sock"  # AF_UNIX paths are short
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        try:
            assert sd_notify.Notifier(str(path)).send("READY=1")
            assert sock.recv(100) == b"READY=1"
        finally:
            path.unlink()
    assert not sd_notify.Notifier(None).send("READY=1")
    assert not sd_notify.Notifier(str(tmp_path / "absent")).send("READY=1")  # logged, not raised
    assert sd_notify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert sd_notify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert sd_notify.watchdog_interval({}) is None


def test_only_the_store_writer_stops_the_watchdog(tmp_path: Path) -> None:
    from agent.config import load_config
    from agent.health import LinkView
    from agent.runtime import Runtime, build_connectors
    from agent.store import Store

    config = load_config(CONFIG)
    store = Store.open(tmp_path / "agent.db", config)
    try:
        runtime = Runtime(config, store, build_connectors(config), AgentMetrics())
        runtime.state.writer_alive, runtime.state.lag_s = True, 0.5
        assert runtime.writer_keeping_up()
        # A PLC switched off for long is "degraded" for /healthz, but a restart cannot fix it.
        down = LinkView(False, 0.0, -1e6, True)
        runtime.state.links = {name: down for name in runtime.connectors}
        assert runtime.health()["status"] == "degraded" and runtime.writer_keeping_up()
        runtime.state.writer_alive = False
        assert not runtime.writer_keeping_up()
        runtime.state.writer_alive, runtime.state.lag_s = True, 120.0
        assert not runtime.writer_keeping_up()
    finally:
        store.close()


async def test_watchdog_withheld_while_unhealthy(tmp_path: Path) -> None:
    sock, address = _receiver(tmp_path)
    healthy = {"ok": False}
    stop = asyncio.Event()
    with sock:
        task = asyncio.create_task(sd_notify.supervise(
            sd_notify.Notifier(address), lambda: healthy["ok"], stop, 0.05, poll_s=0.01))
        await asyncio.sleep(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(100)  # not ready while unhealthy
        healthy["ok"] = True
        await asyncio.sleep(0.2)
        healthy["ok"] = False
        await asyncio.sleep(0.05)
        got: list[str] = []
        _drain(sock, got, time.monotonic() + 0.3)
        await asyncio.sleep(0.2)
        quiet: list[str] = []
        _drain(sock, quiet, time.monotonic() + 0.1)
        stop.set()
        await task
        assert sock.recv(100) == b"STOPPING=1"
    assert got[0] == "READY=1" and got.count("WATCHDOG=1") >= 2
    assert "WATCHDOG=1" not in quiet  # unhealthy: systemd would restart the agent


def test_run_notifies_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"  # nothing listens on the Modbus port: it keeps retrying
    config.write_text(CONFIG.read_text().replace("port: 5020", f"port: {free_port()}"))
    sock, address = _receiver(tmp_path)
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}
    env.pop("WATCHDOG_PID", None)
    messages: list[str] = []
    with sock:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tieragent", "run", "--config", str(config),
             "--data-dir", str(tmp_path / "data"), "--metrics-port", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
        )
        try:
            deadline = time.monotonic() + 30
            while not messages and time.monotonic() < deadline and proc.poll() is None:
                try:
                    messages.append(sock.recv(4096).decode())
                except TimeoutError:
                    continue
            assert messages[:1] == ["READY=1"], (messages, proc.poll())
            _drain(sock, messages, time.monotonic() + 1.0)  # pings every 0.1 s
            assert messages.count("WATCHDOG=1") >= 3, messages
            os.kill(proc.pid, signal.SIGTERM)
            _, err = proc.communicate(timeout=10)
            _drain(sock, messages, time.monotonic() + 0.5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    assert proc.returncode == 0, err
    assert messages[-1] == "STOPPING=1", messages
    assert messages.count("STOPPING=1") == 1
