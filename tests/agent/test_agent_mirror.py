"""The InfluxDB mirror against a real server: VictoriaMetrics' /api/v2/write."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_testkit import sample

from agent.mirror import InfluxMirror
from tests.support.ports import free_port

BINARY = "victoria-metrics"


def _ensure_installed() -> str:
    path = shutil.which(BINARY)
    if path is not None:
        return path
    if shutil.which("apt-get") is None:
        pytest.fail("victoria-metrics is missing and apt-get is unavailable; install the "
                    "Debian package victoria-metrics to run the mirror test")
    proc = subprocess.run(["apt-get", "install", "-y", "victoria-metrics"], capture_output=True,
                          text=True, timeout=300, env={"DEBIAN_FRONTEND": "noninteractive",
                                                       "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    path = shutil.which(BINARY)
    if path is None:
        pytest.fail(f"apt-get install victoria-metrics failed: {proc.stderr[-500:]}")
    return path


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [_ensure_installed(), f"-httpListenAddr=127.0.0.1:{port}",
         f"-storageDataPath={tmp_path / 'vm'}", "-retentionPeriod=100y"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if _get(f"{url}/health").strip() == "OK":
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("victoria-metrics did not become healthy within 20 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _export(url: str) -> list[dict[str, object]]:
    _get(f"{url}/internal/force_flush")
    query = urllib.parse.urlencode({"match[]": '{__name__="tieragent_sample_value"}'})
    body = _get(f"{url}/api/v1/export?{query}")
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def test_mirror_writes_samples_that_can_be_queried_back(victoria: str) -> None:
    """If committed samples are offered, then the server holds every numeric one."""
    mirror = InfluxMirror(victoria, "tieragent", "tieragent", batch_size=50,
                          flush_interval_s=0.1)
    now = time.time()
    samples = [sample("good", now - 100 + i, i) for i in range(120)]
    samples.append(sample("note", now, "text values are not mirrored"))
    mirror.offer(samples)
    mirror.close(timeout_s=10)
    assert mirror.written == 120 and mirror.dropped == 0
    deadline = time.monotonic() + 10
    series: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        series = _export(victoria)
        if series and len(series[0]["values"]) == 120:  # type: ignore[arg-type]
            break
        time.sleep(0.2)
    assert len(series) == 1
    labels = series[0]["metric"]
    assert isinstance(labels, dict)
    assert (labels["device"], labels["signal"], labels["quality"]) == ("M1", "good", "good")
    assert sorted(series[0]["values"]) == list(range(120))  # type: ignore[arg-type]


def test_mirror_memory_is_bounded_while_the_server_is_down() -> None:
    """If the endpoint is unreachable, then pending lines stay bounded and drops are counted."""
    mirror = InfluxMirror(f"http://127.0.0.1:{free_port()}", "o", "b", batch_size=10,
                          flush_interval_s=0.05, max_pending=100, timeout_s=0.5)
    now = time.time()
    mirror.offer([sample("good", now + i, i) for i in range(250)])
    assert mirror.pending() <= 100
    assert mirror.dropped >= 150
    mirror.close(timeout_s=0.5)
