"""A backfill resumes where it stopped (issue 20 item 7): killed part-way (a SIGKILL at a
crash point, agent.protocol.crashpoint) or stopped by a full disk, run again, it ends with
exactly the store of a one-shot import; meanwhile the partial store never reads as complete
collection. A backfill holds the data directory's lock."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from agent_testkit import cli

from agent.backfill import chunk_ends, read_samples
from agent.config import parse_config
from agent.instance_lock import InstanceLock
from agent.protocol.crashpoint import CRASH_ENV
from agent.store import Store
from indicators.data_rates import data_rates
from simulator.agent_config import export_agent_config
from simulator.history import generate_history
from simulator.model import load_factory

ROOT = Path(__file__).parents[2]
START = 1_767_196_800.0  # 2026-01-01T00:00:00+08:00
DAYS = 15
END = START + DAYS * 86400
CHUNK = 4000  # samples per transaction: two or more chunks per device (about 1,400 a day)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The history, the agent config and a one-shot import of it (the reference)."""
    tmp = tmp_path_factory.mktemp("resume")
    factory = load_factory(ROOT / "config" / "factories" / "demo.yaml")
    generate_history(factory, tmp / "history", START, END, seed=5, sample_interval_s=900.0)
    config = tmp / "agent.yaml"
    raw = export_agent_config(factory, "opc.tcp://127.0.0.1:4840", "127.0.0.1", 5020)
    config.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    proc = _backfill(config, tmp / "history", tmp / "oneshot")
    assert proc.returncode == 0, proc.stderr
    return tmp, config, tmp / "oneshot"


def _backfill(config: Path, history: Path, data: Path, *, crash_at: str | None = None,
              fsize: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at is not None:
        env[CRASH_ENV] = crash_at

    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))

    return subprocess.run(
        cli("backfill", "--config", str(config), "--history", str(history),
            "--data-dir", str(data), "--chunk-samples", str(CHUNK)),
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env, preexec_fn=limit,
    )


def _content(config: Path, data: Path) -> tuple[int, pd.DataFrame, pd.DataFrame]:
    store = Store.open(data / "agent.db", parse_config(yaml.safe_load(config.read_text())))
    try:
        samples = store._conn.execute("SELECT count(*) FROM samples").fetchone()[0]
        return samples, store.base_measures(START, END), store.sample_counts(START, END)
    finally:
        store.close()


def _progress(data: Path) -> list[tuple[str, float, int]]:
    db = sqlite3.connect(data / "agent.db")
    try:
        return db.execute("SELECT device_id, imported_through, done FROM backfill_progress "
                          "ORDER BY device_id").fetchall()
    finally:
        db.close()


def _collection_rate(measures: pd.DataFrame) -> float | None:
    totals = {c: float(measures[c].sum()) for c in (
        "samples_expected", "samples_received", "samples_on_time", "samples_with_source_ts",
        "samples_bad")}
    return data_rates(totals)[0].value


def test_a_killed_backfill_reads_as_partial_and_resumes_to_the_one_shot_store(
    setup: tuple[Path, Path, Path], tmp_path: Path,
) -> None:
    """If a backfill is SIGKILLed after the first chunk of its third device, then the store
    says so in backfill_progress (two devices done, one partial) and its data collection rate
    is below 1 with every device-hour expected; run again, it resumes (saying how many
    devices were done) and ends with the one-shot import's samples, base measures and sample
    counts exactly; a third run imports nothing."""
    tmp, config, oneshot = setup
    devices = [d.id for d in parse_config(yaml.safe_load(config.read_text())).devices
               if d.connection != "none"]
    chunks = [chunk_ends(read_samples(tmp / "history" / "samples" / f"{d}.npz").source_ts,
                         END, CHUNK) for d in devices[:3]]
    assert len(chunks[2]) >= 2
    data = tmp_path / "data"
    crash_at = f"backfill_chunk_{len(chunks[0]) + len(chunks[1]) + 1}"
    killed = _backfill(config, tmp / "history", data, crash_at=crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    progress = {device: (through, done) for device, through, done in _progress(data)}
    assert progress[devices[0]][1] and progress[devices[1]][1]
    assert progress[devices[2]] == (chunks[2][0], 0)  # one chunk in
    assert all(progress[d] == (START, 0) for d in devices[3:])
    samples, measures, _ = _content(config, data)
    full_samples, full_measures, full_counts = _content(config, oneshot)
    assert 0 < samples < full_samples
    # Every device-hour of the history is there, expected as in the complete import ...
    assert len(measures) == len(full_measures)
    assert measures["samples_expected"].sum() == full_measures["samples_expected"].sum()
    # ... but what is not imported is not received: never complete collection.
    rate = _collection_rate(measures)
    assert rate is not None and 0 < rate < 1
    assert _collection_rate(full_measures) == 1.0

    resumed = _backfill(config, tmp / "history", data)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed: 2 devices were already imported" in resumed.stdout
    samples, measures, counts = _content(config, data)
    assert samples == full_samples
    pd.testing.assert_frame_equal(measures, full_measures)
    pd.testing.assert_frame_equal(counts, full_counts)

    again = _backfill(config, tmp / "history", data)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr
    assert _content(config, data)[0] == full_samples


def test_a_full_disk_stops_the_import_counting_what_is_missing_and_it_resumes(
    setup: tuple[Path, Path, Path], tmp_path: Path,
) -> None:
    """If the store's files may not grow past 1 MB (EFBIG), then backfill exits 1 without a
    traceback, saying how many devices are imported and how many samples are not, and how to
    resume; without the limit the same command finishes it, equal to the one-shot import."""
    tmp, config, oneshot = setup
    data = tmp_path / "data"
    stopped = _backfill(config, tmp / "history", data, fsize=1_000_000)
    assert stopped.returncode == 1, stopped.stderr
    message = " ".join(stopped.stderr.split())
    assert "Traceback" not in message
    assert "devices are imported;" in message and "samples of" in message, message
    assert "run the same backfill again" in message
    resumed = _backfill(config, tmp / "history", data)
    assert resumed.returncode == 0, resumed.stderr
    samples, measures, _ = _content(config, data)
    full_samples, full_measures, _ = _content(config, oneshot)
    assert samples == full_samples
    pd.testing.assert_frame_equal(measures, full_measures)


def test_another_history_is_refused_while_one_is_partial(
    setup: tuple[Path, Path, Path], tmp_path: Path,
) -> None:
    """If a store holds a partial import, then a backfill of another history (another
    meta.json) exits 1 naming the partial one and how to go on, and changes nothing."""
    tmp, config, _ = setup
    data = tmp_path / "data"
    assert _backfill(config, tmp / "history", data, crash_at="backfill_chunk_2").returncode < 0
    other = tmp_path / "other"
    shutil.copytree(tmp / "history", other)
    meta = json.loads((other / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "note": "another one"}))
    before = _progress(data)
    refused = _backfill(config, other, data)
    assert refused.returncode == 1, refused.stderr
    message = " ".join(refused.stderr.split())
    assert "holds a partial import of another history" in message and "Traceback" not in message
    assert _progress(data) == before


def test_backfill_takes_the_data_directory_lock(setup: tuple[Path, Path, Path],
                                                tmp_path: Path) -> None:
    """If another process (here: this test, as a `tieragent run` would) holds the data
    directory's lock, then backfill exits 2 naming its pid and writes nothing."""
    tmp, config, _ = setup
    data = tmp_path / "data"
    with InstanceLock(data):
        locked = _backfill(config, tmp / "history", data)
    assert locked.returncode == 2, locked.stderr
    assert f"pid {os.getpid()}" in locked.stderr and "Traceback" not in locked.stderr
    assert not (data / "agent.db").exists()
