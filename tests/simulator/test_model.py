"""The factory model (YAML → pydantic) and the vectorised timeline."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from indicators.vocabulary import PRESETS
from simulator.device_model import STATE_CODES
from simulator.model import FactoryError, SimFactory, load_factory, parse_factory
from simulator.timeline import (
    PLANNED_STOP,
    RUNNING,
    SETUP,
    STATES,
    generate_device_timeline,
    generate_timeline,
)

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "factories" / "demo.yaml"
T0 = 1767196800.0  # 2026-01-01 00:00 Asia/Shanghai


@pytest.fixture(scope="module")
def demo() -> SimFactory:
    return load_factory(DEMO)


def _demo_raw() -> dict[str, Any]:
    return yaml.safe_load(DEMO.read_text(encoding="utf-8"))


# --- the demo factory -------------------------------------------------------------------


def test_demo_has_lines_devices_and_unconnected_equipment(demo: SimFactory) -> None:
    """If the demo is loaded, then it has >= 3 lines, >= 24 devices of every kind, and
    devices that are not networked (not digital, or digital but unconnected)."""
    assert demo.identity.factory_id == "demo-tj-001"
    assert demo.identity.time_zone == "Asia/Shanghai"
    assert len(demo.lines) >= 3
    assert len(demo.devices) >= 24
    assert {"cnc", "robot", "plc_automated", "manual"} <= {d.kind for d in demo.devices}
    faces = [d.face for d in demo.devices]
    assert {"opcua", "modbus", "none"} <= set(faces)
    offline = [d for d in demo.devices if d.face == "none"]
    assert any(not d.digital for d in offline)
    assert any(d.digital for d in offline)
    assert 0 < sum(d.networked for d in demo.devices) < len(demo.devices)
    assert any(d.manual_share > 0 and d.networked for d in demo.devices)
    assert any(d.key_process for d in offline)


def test_demo_modbus_maps_mix_types_orders_scales_and_short_counters(demo: SimFactory) -> None:
    """If the demo's Modbus maps are read, then they mix every required type, both word
    orders, scaled integers and 16-bit counters."""
    addresses = [(s, d) for d in demo.devices if d.face == "modbus" for s in demo.signals_of(d)]
    types = {s.modbus.type for s, _ in addresses if s.modbus}
    assert {"bool", "uint16", "int16", "uint32", "int32", "float32", "float64"} <= types
    assert {"coil", "discrete_input", "holding", "input"} <= {
        s.modbus.table for s, _ in addresses if s.modbus
    }
    multi = [s.modbus for s, _ in addresses if s.modbus and s.modbus.width > 1]
    assert {"big", "little"} <= {m.word_order for m in multi}
    assert any(
        m.scale != 1 and m.type.startswith(("int", "uint"))
        for m in multi + [s.modbus for s, _ in addresses if s.modbus]
    )
    assert any(demo.counter_bits(d, s) == 16 for s, d in addresses if s.role.endswith("_count"))


def test_state_codes_agree_with_the_agent_presets() -> None:
    """If the simulator encodes a state, then the agent's preset maps it back to it."""
    for preset, codes in STATE_CODES.items():
        for state, code in codes.items():
            assert PRESETS[preset][code].value == state


def test_simulator_never_imports_the_agent_connectors_or_indicators() -> None:
    """If any simulator module imports agent/connectors/indicators, then this fails."""
    for path in (ROOT / "simulator").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in {"agent", "connectors", "indicators"}, path


# --- validation errors ------------------------------------------------------------------


def _problems(tmp_path: Path, raw: object) -> str:
    path = tmp_path / "factory.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(FactoryError) as info:
        load_factory(path)
    text = str(info.value)
    assert all(line.startswith(str(path)) for line in text.splitlines())
    return text


def test_modbus_device_without_unit_id_names_file_and_key(tmp_path: Path) -> None:
    raw = _demo_raw()
    target = next(i for i, d in enumerate(raw["devices"]) if d["face"] == "modbus")
    del raw["devices"][target]["unit_id"]
    assert f"devices[{target}] ({raw['devices'][target]['id']}).unit_id" in _problems(tmp_path, raw)


def test_machinery_preset_cannot_be_scheduled_setup_or_planned_stop(tmp_path: Path) -> None:
    """If an opcua_machinery device gets setups or a calendar with planned stops, then
    loading fails naming both keys."""
    raw = _demo_raw()
    target = next(
        i for i, d in enumerate(raw["devices"]) if d.get("state_preset") == "opcua_machinery"
    )
    raw["devices"][target]["setups"] = {"every": 3600, "duration": 60}
    raw["devices"][target]["calendar"] = "default"
    text = _problems(tmp_path, raw)
    assert f"devices[{target}]" in text and ".setups:" in text and ".calendar:" in text


def test_unknown_key_and_missing_key_are_reported(tmp_path: Path) -> None:
    raw = _demo_raw()
    raw["devices"][0]["colour"] = "red"
    del raw["devices"][1]["power_kw"]
    text = _problems(tmp_path, raw)
    assert "devices[0].colour: unknown key" in text
    assert "devices[1].power_kw: missing" in text


def test_counter_register_must_match_counter_width(tmp_path: Path) -> None:
    raw = _demo_raw()
    raw["layouts"]["mb_a"][1]["modbus"]["type"] = "uint32"
    assert "a 16-bit counter is an unscaled uint16" in _problems(tmp_path, raw)


def test_bad_yaml_and_missing_file_are_clear(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("identity: [unclosed\n", encoding="utf-8")
    with pytest.raises(FactoryError, match=r"broken.yaml: line \d+, column \d+: not valid YAML"):
        load_factory(path)
    with pytest.raises(FactoryError, match=r"nothing.yaml: \(file\)"):
        load_factory(tmp_path / "nothing.yaml")
    with pytest.raises(FactoryError, match="expected a YAML mapping"):
        parse_factory([1, 2])


# --- timeline ---------------------------------------------------------------------------


def test_same_seed_same_timeline_other_seed_differs(demo: SimFactory) -> None:
    a = generate_timeline(demo, T0, T0 + 2 * 86400, seed=1)
    b = generate_timeline(demo, T0, T0 + 2 * 86400, seed=1)
    c = generate_timeline(demo, T0, T0 + 2 * 86400, seed=2)
    for device_id in a:
        assert np.array_equal(a[device_id].starts, b[device_id].starts)
        assert np.array_equal(a[device_id].cycle_times, b[device_id].cycle_times)
        assert np.array_equal(a[device_id].scrap, b[device_id].scrap)
    assert any(not np.array_equal(a[d].starts, c[d].starts) for d in a)


def test_intervals_are_contiguous_and_cycles_fall_in_running_time(demo: SimFactory) -> None:
    end = T0 + 7 * 86400
    for tl in generate_timeline(demo, T0, end, seed=3).values():
        assert tl.starts[0] == T0 and tl.ends[-1] == end
        assert np.array_equal(tl.starts[1:], tl.ends[:-1])
        assert (tl.ends > tl.starts).all()
        assert np.isclose((tl.ends - tl.starts).sum(), end - T0)
        same = (tl.states[1:] == tl.states[:-1]) & (tl.autos[1:] == tl.autos[:-1])
        assert not same.any(), "neighbours with equal state and mode are merged"
        assert (np.diff(tl.cycle_times) >= 0).all()
        i = tl.indices_at(tl.cycle_times - 1e-6)
        assert (tl.states[i] == RUNNING).all()


def test_queries_agree_with_the_arrays(demo: SimFactory) -> None:
    tl = generate_device_timeline(demo, demo.device("CNC-01"), T0, T0 + 86400, seed=4)
    mid = 20
    t = float(tl.starts[mid] + (tl.ends[mid] - tl.starts[mid]) / 2)
    state, auto, since = tl.state_at(t)
    assert state == STATES[tl.states[mid]] and auto == bool(tl.autos[mid])
    assert since <= tl.starts[mid]
    produced, good, scrap = tl.counts_at(float(tl.cycle_times[100]))
    assert produced == 101 and good + scrap == produced
    assert scrap == int(tl.scrap[:101].sum())
    energies = [tl.energy_at(x) for x in np.linspace(T0, T0 + 86400, 500)]
    assert energies[0] == 0 and (np.diff(energies) >= 0).all()
    assert tl.energy_at(T0 + 86400) == pytest.approx(
        float(((tl.ends - tl.starts) * tl.power_kw).sum() / 3600)
    )


def test_machinery_devices_never_setup_or_planned_stop(demo: SimFactory) -> None:
    for device in demo.devices:
        if device.state_preset == "opcua_machinery":
            tl = generate_device_timeline(demo, device, T0, T0 + 30 * 86400, seed=5)
            assert not np.isin(tl.states, [SETUP, PLANNED_STOP]).any()


def test_manual_share_and_calendar_show_in_the_timeline(demo: SimFactory) -> None:
    tl = generate_device_timeline(demo, demo.device("CNC-06"), T0, T0 + 60 * 86400, seed=6)
    running = tl.states == RUNNING
    durations = tl.ends - tl.starts
    manual = durations[running & ~tl.autos].sum() / durations[running].sum()
    assert 0.15 < manual < 0.35  # declared 0.25
    # 2026-01-01 starts inside the night stop (22:00-06:00 local).
    assert tl.state_at(T0 + 3600)[0] == "planned_stop"


def test_compressed_profile_changes_state_many_times_a_minute(demo: SimFactory) -> None:
    """If the compressed profile runs for 5 minutes, then devices change state several
    times a minute and cycles take a few seconds."""
    timelines = generate_timeline(demo, T0, T0 + 300, seed=7, profile="compressed")
    per_minute = np.mean([len(tl.starts) / 5 for tl in timelines.values()])
    assert per_minute >= 4
    cnc = timelines["CNC-01"]
    assert 1.0 <= cnc.ideal_cycle_time_s <= 3.0
    assert (cnc.states == 4).sum() >= 5  # failures every ~15 s of running


def test_extending_a_timeline_keeps_the_past(demo: SimFactory) -> None:
    device = demo.device("PLC-01")
    first = generate_device_timeline(demo, device, T0, T0 + 3600, seed=8)
    second = generate_device_timeline(
        demo, device, T0 + 3600, T0 + 7200, seed=8, origin=T0, chunk=1
    )
    whole = first.extend(second)
    assert whole.end == T0 + 7200
    assert whole.counts_at(T0 + 3600) == first.counts_at(T0 + 3600)
    assert whole.energy_at(T0 + 1800) == pytest.approx(first.energy_at(T0 + 1800))
    assert whole.counts_at(T0 + 7200)[0] == len(first.cycle_times) + len(second.cycle_times)
    cut = whole.truncate(T0 + 3600)
    assert np.array_equal(cut.cycle_times, first.cycle_times)


def test_unknown_profile_is_a_clear_error(demo: SimFactory) -> None:
    with pytest.raises(ValueError, match="unknown profile 'fast'; known: compressed, normal"):
        generate_timeline(demo, T0, T0 + 60, seed=1, profile="fast")
