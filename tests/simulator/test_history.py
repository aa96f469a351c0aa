"""The offline history generator: ledger plus collector-style samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulator.history import Gap, generate_history, load_samples
from simulator.ledger import load_ledger
from simulator.model import SimFactory, load_factory
from simulator.timeline import generate_device_timeline

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "factories" / "demo.yaml"
T0 = 1767196800.0  # 2026-01-01 00:00 Asia/Shanghai
DAYS = 10
END = T0 + DAYS * 86400
GAP = Gap("CNC-02", T0 + 86400 + 1000.0, T0 + 86400 + 8000.0)


@pytest.fixture(scope="module")
def demo() -> SimFactory:
    return load_factory(DEMO)


@pytest.fixture(scope="module")
def history(demo: SimFactory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("history")
    seen: list[str] = []
    generate_history(
        demo,
        out,
        T0,
        END,
        seed=21,
        gaps=[GAP],
        progress=lambda device_id, done, total: seen.append(device_id),
    )
    assert seen == [d.id for d in demo.devices]
    return out


def _unwrap_deltas(values: np.ndarray, bits: int) -> np.ndarray:
    return np.mod(np.diff(values.astype(np.int64)), 2**bits)


def test_only_networked_devices_get_samples(demo: SimFactory, history: Path) -> None:
    files = {p.stem for p in (history / "samples").glob("*.npz")}
    assert files == {d.id for d in demo.devices if d.networked}
    meta = json.loads((history / "meta.json").read_text())
    assert meta["sample_interval_s"] == 300.0 and meta["seed"] == 21


def test_sample_arrays_have_the_contract_dtypes(history: Path) -> None:
    samples = load_samples(history / "samples" / "CNC-05.npz")
    n = len(samples["source_ts"])
    assert all(len(v) == n for v in samples.values())
    assert samples["signal_id"].dtype.kind == "U"
    assert samples["source_ts"].dtype == np.float64
    assert samples["received_ts"].dtype == np.float64
    assert samples["value"].dtype == np.float64
    assert samples["quality"].dtype == np.uint8 and samples["status"].dtype == np.int64
    latency = samples["received_ts"] - samples["source_ts"]
    assert (latency > 0).all() and (latency < 1).all()
    assert (np.diff(samples["source_ts"]) >= 0).all()


def test_grid_alignment_and_state_changes(demo: SimFactory, history: Path) -> None:
    """If history is generated, then counters and energy are sampled on every multiple of
    the interval from start to end inclusive, and states also at every change."""
    device = demo.device("CNC-01")
    samples = load_samples(history / "samples" / "CNC-01.npz")
    grid = np.arange(T0, END + 1, 300.0)
    for signal_id in ("good_count", "reject_count", "energy_kwh", "spindle_temp"):
        ts = samples["source_ts"][samples["signal_id"] == signal_id]
        assert np.array_equal(ts, grid), signal_id
    tl = generate_device_timeline(demo, device, T0, END, seed=21)
    changes = tl.starts[1:][tl.states[1:] != tl.states[:-1]]
    state_ts = samples["source_ts"][samples["signal_id"] == "state"]
    assert np.isin(changes, state_ts).all() and np.isin(grid, state_ts).all()
    assert len(state_ts) == len(np.union1d(changes, grid))
    codes = samples["value"][samples["signal_id"] == "state"]
    assert set(codes) <= {6.0, 4.0, 15.0, 2.0, 9.0}
    auto = samples["value"][samples["signal_id"] == "auto_mode"]
    assert set(auto) <= {0.0, 1.0}


@pytest.mark.parametrize("device_id", ["CNC-05", "PLC-02", "ROB-04", "CNC-01"])
def test_counter_deltas_add_up_to_the_ledger_exactly(
    demo: SimFactory, history: Path, device_id: str
) -> None:
    """If wrapped counter samples are differenced modulo 2**bits, then the hourly sums
    equal the ledger exactly, including across rollovers."""
    device = demo.device(device_id)
    samples = load_samples(history / "samples" / f"{device_id}.npz")
    hourly = load_ledger(history).hourly
    truth = hourly[hourly["device_id"] == device_id].set_index("hour_start")
    column = {"good_count": "good", "reject_count": "scrap", "total_count": "produced"}
    for signal in demo.signals_of(device):
        if signal.role not in column:
            continue
        mask = samples["signal_id"] == signal.id
        ts, values = samples["source_ts"][mask], samples["value"][mask]
        bits = demo.counter_bits(device, signal)
        assert values.max() < 2**bits
        deltas = _unwrap_deltas(values, bits)
        hours = (np.ceil(ts[1:] / 3600) - 1) * 3600  # a delta ending at t: hour h*3600 < t
        per_hour = pd.Series(deltas).groupby(hours.astype(np.int64)).sum()
        assert per_hour.to_dict() == truth[column[signal.role]].to_dict(), signal.id
    energy = samples["value"][samples["signal_id"] == "energy_kwh"]
    assert np.diff(energy).sum() == pytest.approx(truth["energy_kwh"].sum(), rel=1e-9)


def test_short_counters_roll_over(demo: SimFactory, history: Path) -> None:
    samples = load_samples(history / "samples" / "CNC-05.npz")
    good = samples["value"][samples["signal_id"] == "good_count"]
    assert good[0] == demo.device("CNC-05").counter_initial
    assert (np.diff(good) < 0).any(), "the 16-bit counter must wrap within the period"


def test_gap_has_no_samples(history: Path) -> None:
    samples = load_samples(history / "samples" / f"{GAP.device_id}.npz")
    ts = samples["source_ts"]
    assert not ((ts >= GAP.start) & (ts < GAP.end)).any()
    assert ((ts >= GAP.start - 300) & (ts < GAP.start)).any()
    other = load_samples(history / "samples" / "CNC-01.npz")["source_ts"]
    assert ((other >= GAP.start) & (other < GAP.end)).any()


def test_history_is_deterministic(demo: SimFactory, tmp_path: Path) -> None:
    end = T0 + 86400
    a = generate_history(demo, tmp_path / "a", T0, end, seed=5, sample_interval_s=60.0)
    b = generate_history(demo, tmp_path / "b", T0, end, seed=5, sample_interval_s=60.0)
    for path in sorted(a.rglob("*.*")):
        assert path.read_bytes() == (b / path.relative_to(a)).read_bytes(), path.name


def test_unaligned_period_includes_start_and_end(demo: SimFactory, tmp_path: Path) -> None:
    start, end = T0 + 10.5, T0 + 3600 + 7.25
    generate_history(demo, tmp_path, start, end, seed=5)
    samples = load_samples(tmp_path / "samples" / "PLC-01.npz")
    ts = samples["source_ts"][samples["signal_id"] == "total_count"]
    assert ts[0] == start and ts[-1] == end
    assert (ts[1:-1] % 300 == 0).all() and len(ts) == 2 + 12


def test_bad_arguments_are_clear(demo: SimFactory, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="end must be after start"):
        generate_history(demo, tmp_path, T0, T0, seed=1)
    with pytest.raises(ValueError, match="unknown device 'NOPE'"):
        generate_history(demo, tmp_path, T0, T0 + 60, seed=1, gaps=[("NOPE", T0, T0 + 1)])
