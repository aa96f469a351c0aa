"""The runtime: supervision, backpressure, metrics, and the `run` command's signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest
from agent_testkit import cli, modbus_config, sample

from agent.metrics import AgentMetrics, MetricsServer
from agent.runtime import Channel, Runtime
from agent.store import LinkItem, Store
from connectors.base import LinkEvent, LinkSink, LinkState, SampleSink
from connectors.sample import Sample
from tests.support.ports import free_port

ROOT = Path(__file__).parents[2]
CONFIG = Path(__file__).with_name("data") / "agent.yaml"


class ScriptedConnector:
    """Emits a good-count ramp every 20 ms; optionally crashes after `crash_after` batches."""

    def __init__(self, name: str, crash_after: int | None = None) -> None:
        self.name = name
        self.crash_after = crash_after
        self.runs = 0
        self.value = 0

    async def run(self, samples: SampleSink, links: LinkSink) -> None:
        self.runs += 1
        links(LinkEvent(LinkState.CONNECTED, time.time()))
        for batch in range(10_000):
            if self.crash_after is not None and batch == self.crash_after and self.runs < 3:
                raise RuntimeError("scripted crash")
            self.value += 1
            now = time.time()
            await samples([sample("good", now, self.value), sample("state", now, 1)])
            await asyncio.sleep(0.02)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_supervisor_restarts_a_crashing_connector_and_metrics_show_it(
    tmp_path: Path,
) -> None:
    """If a connector crashes, then it is restarted, samples keep flowing, and /metrics and
    /healthz report samples, restarts and queue depth."""
    config = modbus_config()
    store = Store.open(tmp_path / "agent.db", config)
    metrics = AgentMetrics()
    connector = ScriptedConnector("plc", crash_after=5)
    runtime = Runtime(config, store, {"plc": connector}, metrics)
    server = MetricsServer(metrics, runtime.health, 0)
    server.start()
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    try:
        deadline = time.monotonic() + 10
        while connector.runs < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        status, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{server.port}/metrics")
        health_status, health = await asyncio.to_thread(
            _get, f"http://127.0.0.1:{server.port}/healthz")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        server.stop()
    assert connector.runs >= 3
    assert status == 200
    assert 'tieragent_connector_restarts_total{connection="plc"} 2.0' in body
    assert 'tieragent_samples_total{device="M1"}' in body
    assert "tieragent_queue_depth" in body and "tieragent_store_lag_seconds" in body
    assert health_status == 200 and json.loads(health)["status"] == "ok"
    committed = store.raw_samples(0, time.time() + 10)
    store.close()
    assert len(committed) == 2 * connector.value  # everything queued was flushed at stop


async def test_channel_blocks_producers_when_full() -> None:
    """If the writer stalls, then `put_samples` waits instead of growing the queue."""
    channel = Channel(capacity=100)
    batch: Sequence[Sample] = [sample("good", 1.0, i) for i in range(50)]
    await channel.put_samples(batch)
    await channel.put_samples(batch)
    blocked = asyncio.create_task(channel.put_samples(batch))
    await asyncio.sleep(0.1)
    assert not blocked.done() and len(channel) == 100
    items, _ = await channel.take(60, 0.1)
    assert len(items) == 60
    await asyncio.wait_for(blocked, 2)
    assert len(channel) == 90


async def test_channel_keeps_samples_and_link_events_in_order() -> None:
    """If link events arrive between sample batches, then `take` returns everything in
    arrival order, splitting a batch at the limit and counting what is left."""
    channel = Channel(capacity=100)
    first = [sample("good", 1.0, i) for i in range(3)]
    second = [sample("good", 2.0, i) for i in range(3, 6)]
    link = LinkItem("plc", LinkEvent(LinkState.DISCONNECTED, 1.5))
    await channel.put_samples(first)
    channel.put_link(link)
    await channel.put_samples(second)
    assert len(channel) == 7
    items, _ = await channel.take(5, 0.1)
    assert items == [*first, link, second[0]]
    assert len(channel) == 2
    rest, _ = await channel.take(10, 0.1)
    assert rest == second[1:] and len(channel) == 0


def test_run_exits_0_within_10_s_on_sigterm(tmp_path: Path) -> None:
    """If `tieragent run` gets SIGTERM, then it stops, flushes and exits 0 within 10 s."""
    port = free_port()
    dead_modbus = free_port()  # nothing listens: the connector keeps retrying
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG.read_text().replace("port: 5020", f"port: {dead_modbus}"))
    proc = subprocess.Popen(
        cli("run", "--config", str(config), "--data-dir", str(tmp_path / "data"),
            "--metrics-port", str(port), "--log-json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        health = None
        # Until the store writer runs, /healthz answers 503: wait for 200.
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = _get(f"http://127.0.0.1:{port}/healthz")
                if health[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        if health is None or health[0] != 200:
            proc.kill()  # reading stderr of a running process would block
            pytest.fail(f"no healthy /healthz within 30 s ({health}): {proc.communicate(10)[1]}")
        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(e["message"] == "Agent stopped; store flushed." for e in events)
    assert (tmp_path / "data" / "agent.db").exists()


@pytest.mark.parametrize("command", ["run", "measures"])
def test_config_error_exits_2_without_traceback(tmp_path: Path, command: str) -> None:
    """If the config is invalid, then the problems are printed and the exit code is 2."""
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG.read_text().replace("unit_id: 1", "unit_id: 999"))
    extra = ["--period", "2026"] if command == "measures" else ["--duration", "1"]
    proc = subprocess.run(cli(command, "--config", str(config), *extra), capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    assert "unit_id" in proc.stderr and "Traceback" not in proc.stderr
