"""The ground-truth ledger files and their invariants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulator.ledger import device_hourly, load_ledger, write_ledger
from simulator.model import SimFactory, load_factory
from simulator.timeline import RUNNING, _assemble, generate_timeline

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "factories" / "demo.yaml"
T0 = 1767196800.0  # 2026-01-01 00:00 Asia/Shanghai
FILES = ("intervals.csv", "hourly.csv", "devices.csv", "meta.json")


@pytest.fixture(scope="module")
def demo() -> SimFactory:
    return load_factory(DEMO)


def _write(demo: SimFactory, out: Path, seed: int, start: float, end: float) -> Path:
    timelines = generate_timeline(demo, start, end, seed)
    return write_ledger(out, demo, timelines, start=start, end=end, seed=seed, profile="normal")


def test_same_seed_gives_identical_bytes_other_seed_differs(
    demo: SimFactory, tmp_path: Path
) -> None:
    end = T0 + 3 * 86400
    a = _write(demo, tmp_path / "a", 11, T0, end)
    b = _write(demo, tmp_path / "b", 11, T0, end)
    c = _write(demo, tmp_path / "c", 12, T0, end)
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "intervals.csv").read_bytes() != (c / "intervals.csv").read_bytes()
    assert (a / "hourly.csv").read_bytes() != (c / "hourly.csv").read_bytes()


def test_ledger_invariants(demo: SimFactory, tmp_path: Path) -> None:
    """If a ledger is loaded, then per device the intervals tile the simulated time,
    good + scrap = produced, energy is never negative and the inventory is complete."""
    start, end = T0 + 1234.5, T0 + 4 * 86400 + 99.25  # deliberately not hour-aligned
    ledger = load_ledger(_write(demo, tmp_path, 13, start, end))
    intervals, hourly = ledger.intervals, ledger.hourly
    assert list(intervals.columns) == ["device_id", "start", "end", "state", "auto"]
    assert intervals["auto"].dtype == bool
    for _, group in intervals.groupby("device_id"):
        assert group["start"].iloc[0] == start and group["end"].iloc[-1] == end
        assert (group["end"].to_numpy() > group["start"].to_numpy()).all()
        assert np.array_equal(group["start"].to_numpy()[1:], group["end"].to_numpy()[:-1])
        assert (group["end"] - group["start"]).sum() == pytest.approx(end - start, abs=1e-6)
    assert set(intervals["state"]) <= {"running", "idle", "setup", "planned_stop", "unplanned_stop"}
    assert (hourly["good"] + hourly["scrap"] == hourly["produced"]).all()
    assert (hourly[["produced", "good", "scrap", "energy_kwh", "ideal_time_s"]] >= 0).all().all()
    assert (hourly["hour_start"] % 3600 == 0).all()
    per_device = hourly.groupby("device_id")["hour_start"].agg(["min", "max", "count"])
    assert (per_device["min"] == np.floor(start / 3600) * 3600).all()
    assert (per_device["count"] == (per_device["max"] - per_device["min"]) / 3600 + 1).all()
    assert set(ledger.devices["device_id"]) == {d.id for d in demo.devices}
    assert set(ledger.devices["connection"]) == {"opcua", "modbus", "none"}
    assert ledger.meta["seed"] == 13 and ledger.meta["start"] == start
    assert ledger.meta["factory_sha256"] == demo.digest()


def test_hourly_totals_match_the_timeline(demo: SimFactory, tmp_path: Path) -> None:
    end = T0 + 2 * 86400
    timelines = generate_timeline(demo, T0, end, 14)
    ledger = load_ledger(
        write_ledger(tmp_path, demo, timelines, start=T0, end=end, seed=14, profile="normal")
    )
    sums = ledger.hourly.groupby("device_id")[["produced", "scrap", "energy_kwh"]].sum()
    for device_id, tl in timelines.items():
        produced, _, scrap = tl.counts_at(end)
        assert sums.loc[device_id, "produced"] == produced
        assert sums.loc[device_id, "scrap"] == scrap
        assert sums.loc[device_id, "energy_kwh"] == pytest.approx(tl.total_energy, rel=1e-9)
        running = ledger.intervals[
            (ledger.intervals["device_id"] == device_id) & (ledger.intervals["state"] == "running")
        ]
        assert (running["end"] - running["start"]).sum() == pytest.approx(
            float((tl.ends - tl.starts)[tl.states == RUNNING].sum())
        )


def test_a_completion_on_the_hour_belongs_to_the_hour_before() -> None:
    """If a cycle completes exactly at 01:00, then it counts in hour 00:00 (h*3600 < t <=
    (h+1)*3600), and one just after counts in the next hour."""
    start = 1767225600.0  # a whole hour
    starts = np.array([start])
    tl = _assemble(
        "X",
        start,
        start + 7200,
        starts,
        np.array([RUNNING], np.int8),
        np.array([True]),
        np.array([3.6]),
        np.array([start + 3600.0, start + 3600.001, start + 7200.0]),
        np.array([False, True, False]),
        10.0,
    )
    rows = device_hourly("X", tl)
    assert rows["produced"].tolist() == [1, 2]
    assert rows["scrap"].tolist() == [0, 1]
    assert rows["energy_kwh"].tolist() == [3.6, 3.6]
    assert rows["ideal_time_s"].tolist() == [10.0, 20.0]
