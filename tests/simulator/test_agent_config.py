"""The exported agent configuration for the simulated factory."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import parse_config
from indicators.vocabulary import Role
from simulator.agent_config import export_agent_config, main, render_agent_config
from simulator.model import SimFactory, load_factory

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "factories" / "demo.yaml"
COMMITTED = ROOT / "config" / "demo-agent.yaml"


@pytest.fixture(scope="module")
def demo() -> SimFactory:
    return load_factory(DEMO)


def test_export_validates_as_the_agent_config(demo: SimFactory) -> None:
    config = parse_config(export_agent_config(demo, "opc.tcp://127.0.0.1:4840", "127.0.0.1", 5020))
    assert config.factory.factory_id == "demo-tj-001"
    assert len(config.devices) == len(demo.devices)
    for device in config.devices:
        sim = demo.device(device.id)
        if not sim.networked:
            assert device.connection == "none" and not device.signals
            continue
        state = device.signal(Role.STATE)
        assert state is not None and state.state_map == sim.state_preset
        for signal in device.signals:
            assert signal.required == (
                signal.role not in (Role.PROCESS, Role.ALARM, Role.IDEAL_CYCLE_TIME_S)
            )
            if sim.face == "opcua":
                assert signal.opcua is not None
                assert signal.opcua.node == f"ns=2;s=Factory/{sim.line}/{sim.id}/{signal.id}"
            else:
                assert signal.modbus is not None and device.unit_id == sim.unit_id


def test_committed_demo_agent_config_matches_a_fresh_export(demo: SimFactory) -> None:
    """If config/factories/demo.yaml changes, then config/demo-agent.yaml must be
    regenerated (python -m simulator.agent_config config/factories/demo.yaml
    config/demo-agent.yaml)."""
    fresh = render_agent_config(demo, "config/factories/demo.yaml")
    assert COMMITTED.read_text(encoding="utf-8") == fresh


def test_compressed_profile_scales_ideal_cycle_times(demo: SimFactory) -> None:
    normal = export_agent_config(demo, "opc.tcp://127.0.0.1:1", "127.0.0.1", 1)
    fast = export_agent_config(demo, "opc.tcp://127.0.0.1:1", "127.0.0.1", 1, profile="compressed")
    scale = demo.profile("compressed").cycle_time_scale
    for a, b in zip(normal["devices"], fast["devices"], strict=True):
        assert b["ideal_cycle_time_s"] == pytest.approx(a["ideal_cycle_time_s"] * scale)


def test_cli_writes_the_file_and_reports_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "agent.yaml"
    assert main([str(DEMO), str(out)]) == 0
    assert "demo-tj-001" in out.read_text(encoding="utf-8")
    assert main([str(tmp_path / "missing.yaml"), str(out)]) == 2
    assert "missing.yaml: (file)" in capsys.readouterr().err
