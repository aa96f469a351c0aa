"""The live factory behind the protocol faces (simulator.live.LiveFactory)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from simulator.api import LiveSource
from simulator.device_model import STATE_CODES
from simulator.ledger import load_ledger
from simulator.live import LiveFactory
from simulator.model import SimFactory, load_factory

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "factories" / "demo.yaml"
T0 = 1_780_000_000.0


@pytest.fixture(scope="module")
def demo() -> SimFactory:
    return load_factory(DEMO)


def _live(demo: SimFactory) -> LiveFactory:
    return LiveFactory(
        demo, start=T0, seed=3, profile="compressed", horizon_s=120.0, clock=lambda: T0
    )


def test_values_cover_every_spec_with_encoded_states(demo: SimFactory) -> None:
    live = _live(demo)
    source: LiveSource = live  # structural check by mypy: LiveFactory is a LiveSource
    specs = source.signal_specs()
    assert {s.device_id for s in specs} == {d.id for d in demo.devices if d.networked}
    values = live.values_at(T0 + 30)
    assert set(values) == {(s.device_id, s.signal_id) for s in specs}
    for spec in specs:
        value = values[(spec.device_id, spec.signal_id)]
        assert value.changed_at <= T0 + 30
        if spec.role == "state":
            preset = demo.device(spec.device_id).state_preset
            assert value.value in STATE_CODES[preset].values()
        if spec.counter_bits is not None:
            assert isinstance(value.value, int) and 0 <= value.value < 2**spec.counter_bits
        if spec.value_type == "bool":
            assert isinstance(value.value, bool)


def test_wire_values_follow_the_ground_truth(demo: SimFactory) -> None:
    live = _live(demo)
    t = T0 + 250.0  # past the first 120 s chunk: extended lazily
    values = live.values_at(t)
    tl = live.timeline("PLC-02")
    _, good, scrap = tl.counts_at(t)
    initial = demo.device("PLC-02").counter_initial
    assert values[("PLC-02", "good_count")].value == (initial + good) % 2**32
    assert values[("PLC-02", "reject_count")].value == (initial + scrap) % 2**32
    state, auto, since = tl.state_at(t)
    assert values[("PLC-02", "state")].value == STATE_CODES["plain"][state]
    assert values[("PLC-02", "state")].changed_at == since
    assert values[("PLC-02", "auto_mode")].value is auto
    energy = values[("PLC-02", "energy_kwh")]
    assert energy.changed_at == np.floor(t) and energy.value == tl.energy_at(energy.changed_at)


def test_counters_never_go_back_across_chunks(demo: SimFactory) -> None:
    live = _live(demo)
    previous = -1
    for t in np.arange(T0, T0 + 400, 0.5):
        produced = live.timeline("PCK-02", until=float(t)).counts_at(float(t))[0]
        assert produced >= previous
        previous = produced
    assert previous > 100


def test_freeze_holds_values_and_reset_restarts_counters(demo: SimFactory, tmp_path: Path) -> None:
    live = _live(demo)
    live.freeze("CNC-01", True, at=T0 + 20)
    held = live.values_at(T0 + 20)
    later = live.values_at(T0 + 200)
    for key, value in later.items():
        if key[0] == "CNC-01":
            assert value == held[key]
    live.freeze("CNC-01", False)
    assert live.values_at(T0 + 200)[("CNC-01", "good_count")] != held[("CNC-01", "good_count")]

    before = live.values_at(T0 + 100)[("ROB-04", "total_count")].value
    live.reset_counters("ROB-04", at=T0 + 100)
    after = live.values_at(T0 + 160)[("ROB-04", "total_count")]
    tl = live.timeline("ROB-04")
    made = tl.counts_at(T0 + 160)[0] - tl.counts_at(T0 + 100)[0]
    assert after.value == made and made < int(before)
    assert after.changed_at >= T0 + 100

    ledger = load_ledger(live.write_ledger(tmp_path, until=T0 + 160))
    rows = ledger.hourly[ledger.hourly["device_id"] == "ROB-04"]
    assert rows["produced"].sum() == tl.counts_at(T0 + 160)[0]  # faults leave truth alone
    assert ledger.meta["end"] == T0 + 160 and ledger.meta["counter_resets"] == [
        ["ROB-04", T0 + 100]
    ]
    spans = ledger.intervals.groupby("device_id").apply(lambda g: (g["end"] - g["start"]).sum())
    assert np.allclose(spans.to_numpy(), 160.0)


def test_sixteen_bit_counter_wraps_on_the_wire(demo: SimFactory) -> None:
    live = _live(demo)
    readings = np.array(
        [live.values_at(T0 + s)[("CNC-05", "good_count")].value for s in range(0, 600, 5)],
        dtype=np.int64,
    )
    assert readings[0] == demo.device("CNC-05").counter_initial
    assert (np.diff(readings) < 0).any()


def test_values_at_is_cheap(demo: SimFactory) -> None:
    live = _live(demo)
    live.values_at(T0)
    began = time.perf_counter()
    for i in range(100):
        live.values_at(T0 + i * 0.1)
    assert time.perf_counter() - began < 2.0  # ~10 calls a second must be cheap
