"""One `tieragent run` per data directory, checked against real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from agent_testkit import cli

from agent.instance_lock import LOCK_NAME, InstanceLock, InstanceLocked
from tests.support.ports import free_port

ROOT = Path(__file__).parents[2]
CONFIG = Path(__file__).with_name("data") / "agent.yaml"


def _start(config: Path, data: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli("run", "--config", str(config), "--data-dir", str(data), "--metrics-port", "0"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )


def test_a_second_run_on_the_same_data_dir_exits_2_naming_the_holder(tmp_path: Path) -> None:
    """If `tieragent run` holds a data directory, then a second `run` on it exits 2 at once,
    naming the first one's pid; once the first has stopped, a new one starts."""
    config = tmp_path / "agent.yaml"
    # Nothing listens on this port: the connector keeps retrying, the agent keeps running.
    config.write_text(CONFIG.read_text().replace("port: 5020", f"port: {free_port()}"))
    data = tmp_path / "data"
    first = _start(config, data)
    try:
        lock = data / LOCK_NAME
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and first.poll() is None:
            if lock.exists() and lock.read_text().strip() == str(first.pid):
                break
            time.sleep(0.1)
        else:
            first.kill()
            pytest.fail(f"the first run did not take the lock: {first.communicate(10)[1]}")
        second = subprocess.run(
            cli("run", "--config", str(config), "--data-dir", str(data), "--metrics-port", "0",
                "--duration", "5"),
            capture_output=True, text=True, timeout=30, cwd=ROOT,
        )
        assert second.returncode == 2, second.stderr
        assert f"pid {first.pid}" in second.stderr and str(data) in second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None  # the holder is untouched
        os.kill(first.pid, signal.SIGTERM)
        first.communicate(timeout=15)
        assert first.returncode == 0
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGKILL)
            first.wait(5)
    with InstanceLock(data):  # released when the holder stopped
        assert lock.read_text().strip() == str(os.getpid())


def test_the_lock_is_exclusive_within_one_process_too(tmp_path: Path) -> None:
    """flock is per open file: a second holder in the same process is refused as well, and the
    lock is free again after release."""
    with InstanceLock(tmp_path), pytest.raises(InstanceLocked, match=f"pid {os.getpid()}"):
        InstanceLock(tmp_path).acquire()
    with InstanceLock(tmp_path):
        pass
