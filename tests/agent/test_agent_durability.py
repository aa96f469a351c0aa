"""Durability of agent.db: kill -9, corruption refused (P8), disk full (P4)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_testkit import cli, modbus_config

from agent.store import Store, StoreCorrupt

WORKER = Path(__file__).with_name("ingest_worker.py")
ROOT = Path(__file__).parents[2]


def _wait_ready(proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY"):
            return
        if not line and proc.poll() is not None:
            break
    proc.kill()  # reading stderr of a running process would block
    raise AssertionError(f"worker did not start: {proc.stderr.read() if proc.stderr else ''}")


def test_kill_9_loses_no_acknowledged_sample_and_counts_once(tmp_path: Path) -> None:
    """If the agent is SIGKILLed at random times, then every acked sample is in the DB,
    the file is intact, and counter deltas equal the true count exactly once."""
    rng = random.Random(20261121)
    base = time.time() - 5
    acked: set[int] = set()
    for run_id in range(1, 6):
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), "kill", str(tmp_path), repr(base), str(run_id)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )
        _wait_ready(proc)
        time.sleep(rng.uniform(0.3, 1.2))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        lines = out.split("\n")[:-1]  # the last piece may be a half-written line
        for line in lines:
            if line.startswith("ACK "):
                first, last = (int(x) for x in line.split()[1:])
                acked.update(range(first, last + 1))
        assert proc.returncode == -signal.SIGKILL
    assert len(acked) > 100
    store = Store.open(tmp_path / "agent.db", modbus_config(counter_bits=16))  # quick_check
    raw = store.raw_samples(0, time.time() + 60)
    stored_ids = set(raw.loc[raw["signal_id"] == "temp", "value"].astype(int))
    assert acked <= stored_ids
    good = raw[raw["signal_id"] == "good"].sort_values("source_ts")
    true_first = math.floor((good["source_ts"].iloc[0] - base) * 1000)
    true_last = math.floor((good["source_ts"].iloc[-1] - base) * 1000)
    deltas = store.deltas(0, time.time() + 60)
    assert deltas.loc[deltas["role"] == "good_count", "delta"].sum() == true_last - true_first
    store.close()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_corrupted_database_is_refused_and_untouched(tmp_path: Path) -> None:
    """If agent.db is damaged, then opening fails naming the file, and it is not modified."""
    store = Store.open(tmp_path / "agent.db", modbus_config())
    store.resume(1.7e9)
    store.close()
    db = tmp_path / "agent.db"
    data = bytearray(db.read_bytes())
    page = 4096
    for offset in range(page, len(data), page):  # an invalid b-tree page type on every page
        data[offset] = 0x07
    db.write_bytes(bytes(data))
    before = _sha256(db)
    with pytest.raises(StoreCorrupt) as caught:
        Store.open(db, modbus_config())
    assert str(db) in str(caught.value) and "never overwrites" in str(caught.value)
    assert _sha256(db) == before
    # The CLI says the same in one sentence and exits non-zero.
    config = tmp_path / "agent.yaml"
    shutil.copy(ROOT / "tests" / "agent" / "data" / "agent.yaml", config)
    proc = subprocess.run(
        cli("measures", "--config", str(config), "--period", "2026", "--data-dir", str(tmp_path)),
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 1
    assert str(db) in proc.stderr.replace("\n", "") and "Traceback" not in proc.stderr
    assert _sha256(db) == before


def test_not_a_database_is_refused(tmp_path: Path) -> None:
    """If agent.db holds something else entirely, then it is refused and left as it was."""
    db = tmp_path / "agent.db"
    db.write_bytes(b"this is not sqlite" * 100)
    before = _sha256(db)
    with pytest.raises(StoreCorrupt):
        Store.open(db, modbus_config())
    assert _sha256(db) == before


def test_disk_full_is_a_counted_gap_and_ingest_resumes(tmp_path: Path) -> None:
    """If the disk fills during ingest, then batches are dropped and counted (no crash),
    and ingest resumes once space returns (tmpfs in a private mount namespace)."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare(1) is missing; install util-linux to run the disk-full test")
    mount = tmp_path / "small"
    mount.mkdir()
    script = (f"mount -t tmpfs -o size=2m tmpfs {mount} && "
              f"exec {sys.executable} {WORKER} diskfull {mount}")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    if "Operation not permitted" in proc.stderr or "cannot" in proc.stderr.lower():
        pytest.fail(f"cannot create a private tmpfs here (needs CAP_SYS_ADMIN): {proc.stderr}")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["dropped"] > 0
    assert summary["stored"] + summary["dropped"] == summary["attempted"]
    assert summary["rows"] == summary["stored"]
    assert summary["losses"] == summary["dropped"]
    assert summary["resumed"] == 20 * 40
    assert summary["quick_check"] == "ok"
