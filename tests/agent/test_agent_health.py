"""/healthz (issue 20): 503 with reasons while a connection is down past its limit or samples
are dropped, 200 otherwise; one log line per loss and per recovery of a connection."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent_testkit import cli

from agent.config import load_config
from agent.health import HealthInputs, LinkView, assess
from agent.store import Store
from tests.support.ports import free_port

sys.path.insert(0, str(Path(__file__).parents[1] / "connectors"))
from connector_helpers import ModbusTestServer

ROOT = Path(__file__).parents[2]
CONFIG = Path(__file__).with_name("data") / "agent.yaml"


def _inputs(**overrides: Any) -> HealthInputs:
    values: dict[str, Any] = {
        "now_mono": 1000.0, "links": {"plc": LinkView(True, 1.7e9, 900.0, True)},
        "down_limit_s": 60.0, "writer_alive": True, "lag_s": 0.1, "queue_depth": 0,
        "channel_full": False, "dropped_total": 0, "last_drop_mono": None,
    }
    values.update(overrides)
    return HealthInputs(**values)


def test_health_is_ok_and_lists_every_connection_when_all_is_well() -> None:
    body = assess(_inputs(links={"plc": LinkView(True, 1.7e9, 900.0, True),
                                 "ua": LinkView(False, 1.7e9, 990.0)}))
    assert body["status"] == "ok" and body["reasons"] == []
    assert body["connections"]["plc"] == {"up": True, "since": "2023-11-14T22:13:20+00:00",
                                          "for_s": 100.0}
    assert body["connections"]["ua"]["up"] is False  # down 10 s, under the limit


def test_health_names_a_connection_down_past_its_limit() -> None:
    body = assess(_inputs(links={"plc": LinkView(False, 1.7e9, 900.0, True)}))
    assert body["status"] == "degraded"
    assert body["reasons"] == ["connection plc down for 100 s (limit 60 s)"]


def test_health_reports_recent_drops_and_a_full_channel() -> None:
    body = assess(_inputs(dropped_total=12, last_drop_mono=990.0))
    assert body["status"] == "degraded" and "samples dropped 10 s ago" in body["reasons"][0]
    assert assess(_inputs(dropped_total=12, last_drop_mono=900.0))["status"] == "ok"  # old
    full = assess(_inputs(channel_full=True, queue_depth=10_000))
    assert full["status"] == "degraded" and "channel full" in full["reasons"][0]


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _poll(url: str, want: Callable[[int, dict[str, Any]], bool], seconds: float,
          proc: subprocess.Popen[str]) -> tuple[int, dict[str, Any]]:
    deadline = time.monotonic() + seconds
    last: tuple[int, dict[str, Any]] = (0, {})
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            last = _get(url)
            if want(*last):
                return last
        except OSError:
            pass
        time.sleep(0.2)
    return last


def _config(tmp_path: Path, modbus_port: int, down_s: float) -> Path:
    text = CONFIG.read_text().replace("port: 5020", f"port: {modbus_port}\n"
                                      "    reconnect_min_s: 0.2\n    reconnect_max_s: 0.5")
    text = text.replace("  counter_bits: 32",
                        f"  counter_bits: 32\n  health_connection_down_s: {down_s}")
    config = tmp_path / "agent.yaml"
    config.write_text(text)
    return config


def _start(config: Path, data_dir: Path, port: int,
           preexec: Callable[[], None] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli("run", "--config", str(config), "--data-dir", str(data_dir),
            "--metrics-port", str(port), "--log-json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        preexec_fn=preexec,
    )


def _stop(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(5)
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


async def test_healthz_is_503_naming_a_connection_down_past_its_limit_then_200(
    tmp_path: Path,
) -> None:
    """If the Modbus port is closed for longer than `health_connection_down_s`, then
    /healthz answers 503 naming the connection; once a server listens there it answers 200;
    it goes 503 again when the server stops and 200 when it is back, with one log line for
    the first connect, the loss and the recovery."""
    modbus_port, port = free_port(), free_port()
    proc = _start(_config(tmp_path, modbus_port, 1.0), tmp_path / "data", port)
    url = f"http://127.0.0.1:{port}/healthz"
    events: list[dict[str, Any]] = []
    try:
        code, body = await asyncio.to_thread(
            _poll, url, lambda c, b: c == 503 and bool(b.get("connections")), 20, proc)
        assert code == 503, body
        assert any("connection plc" in r for r in body["reasons"]), body
        assert body["connections"]["plc"]["up"] is False
        server = ModbusTestServer(modbus_port, holding={i: 1 for i in range(3)})
        async with server:
            code, body = await asyncio.to_thread(_poll, url, lambda c, b: c == 200, 15, proc)
            assert code == 200, body
            assert body["status"] == "ok" and body["connections"]["plc"]["up"] is True
            # Now lose it: down past the limit again.
        code, body = await asyncio.to_thread(_poll, url, lambda c, b: c == 503, 15, proc)
        assert code == 503 and "connection plc down" in " ".join(body["reasons"]), body
        async with server:
            code, body = await asyncio.to_thread(_poll, url, lambda c, b: c == 200, 15, proc)
            assert code == 200, body
    finally:
        events = await asyncio.to_thread(_stop, proc)
    messages = [e["message"] for e in events]
    assert messages.count("Connection up.") == 1, messages
    assert messages.count("Connection lost.") == 1, messages
    assert messages.count("Connection recovered.") == 1, messages
    assert not any("collecting again" in m for m in messages)


async def test_healthz_is_503_while_the_store_cannot_commit(tmp_path: Path) -> None:
    """If the store's files may not grow (RLIMIT_FSIZE just above the database's size: the
    write-ahead log soon fails with EFBIG), then samples are dropped and /healthz answers
    503 saying so."""
    modbus_port, port = free_port(), free_port()
    config = _config(tmp_path, modbus_port, 60.0)
    config.write_text(config.read_text().replace("default_interval_s: 1.0",
                                                 "default_interval_s: 0.1"))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    Store.open(data_dir / "agent.db", load_config(config)).close()
    limit = max(p.stat().st_size for p in data_dir.iterdir()) + 16_384

    def cap_file_size() -> None:  # Python ignores SIGXFSZ: writes past it fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    server = ModbusTestServer(modbus_port, holding={i: 1 for i in range(3)})
    async with server:
        proc = _start(config, data_dir, port, cap_file_size)
        url = f"http://127.0.0.1:{port}/healthz"
        try:
            code, body = await asyncio.to_thread(
                _poll, url, lambda c, b: c == 503 and b.get("samples_dropped", 0) > 0, 25, proc)
        finally:
            events = await asyncio.to_thread(_stop, proc)
    assert code == 503, (body, [e["message"] for e in events][-10:])
    assert any("samples dropped" in r for r in body["reasons"]), body
