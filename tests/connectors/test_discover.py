"""`discover` browses a real server within its limits and drafts a valid signal map."""

from __future__ import annotations

import pytest
import yaml
from connector_opcua_server import OpcUaTestServer

from agent.config import Signal
from connectors.discover import discover, guess_role, render_signal_map
from tests.support.ports import free_port

VARIABLES = {
    "L1/CNC-01/MachineState": 6,
    "L1/CNC-01/GoodCount": 120,
    "L1/CNC-01/NGCount": 3,
    "L1/CNC-01/TotalCount": 123,
    "L1/CNC-01/EnergyKWh": 5.5,
    "L1/CNC-01/AutoMode": True,
    "L1/CNC-01/AlarmActive": False,
    "L1/CNC-01/SpindleSpeed": 1200.0,
    "L1/CNC-02/MachineState": 4,
    "L1/CNC-02/Program": "O1000",
    **{f"L2/Press-{i:02d}/Strokes": i for i in range(20)},
}


async def test_discover_finds_every_variable_within_small_limits() -> None:
    """If the server allows 2 nodes per browse and 5 per read, then discover still finds all
    30 variables, with node ids, browse paths, data types and guessed roles."""
    server = OpcUaTestServer(
        free_port(),
        VARIABLES,
        advertise={"browse": 2, "read": 5},
        enforce={"browse": 2, "read": 5},
    )
    async with server:
        found = await discover(server.endpoint, timeout_s=5)
        sizes = {kind: list(values) for kind, values in server.sizes.items()}
    by_path = {f["browse_path"]: f for f in found}
    assert set(by_path) == {f"Factory/{path}" for path in VARIABLES}
    state = by_path["Factory/L1/CNC-01/MachineState"]
    assert state == {
        "node": server.node_id("L1/CNC-01/MachineState"),
        "browse_path": "Factory/L1/CNC-01/MachineState",
        "name": "MachineState",
        "role": "state",
        "data_type": "Int32",
    }
    assert by_path["Factory/L1/CNC-01/EnergyKWh"]["data_type"] == "Double"
    assert by_path["Factory/L1/CNC-02/Program"]["data_type"] == "String"
    assert by_path["Factory/L1/CNC-01/AutoMode"]["data_type"] == "Boolean"
    assert max(sizes["browse"]) <= 2 and max(sizes["read"]) <= 5


async def test_rendered_map_is_valid_config() -> None:
    """If the discovered list is rendered, then it parses as YAML and every entry is a valid
    `Signal` of the factory configuration, with unique ids."""
    server = OpcUaTestServer(free_port(), VARIABLES)
    async with server:
        found = await discover(server.endpoint, timeout_s=5)
    text = render_signal_map(found)
    assert text.startswith("# 30 variables discovered.")
    assert "# Factory/L1/CNC-01/MachineState (Int32)" in text
    signals = [Signal.model_validate(item) for item in yaml.safe_load(text)]
    assert len(signals) == 30 and len({s.id for s in signals}) == 30
    roles = {s.id: s.role.value for s in signals}
    assert roles["GoodCount"] == "good_count" and roles["NGCount"] == "reject_count"
    assert roles["MachineState"] == "state" and roles["Strokes"] == "process"
    state = next(s for s in signals if s.id == "MachineState")
    assert state.state_map == "plain" and state.opcua is not None


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("MachineState", "state"),
        ("StatusWord", "state"),
        ("GoodParts", "good_count"),
        ("NGCount", "reject_count"),
        ("count_ng", "reject_count"),
        ("ScrapQty", "reject_count"),
        ("RejectCounter", "reject_count"),
        ("TotalCount", "total_count"),
        ("PartCount", "total_count"),
        ("EnergyTotal", "energy_kwh"),
        ("kWhMeter", "energy_kwh"),
        ("AutoMode", "auto_mode"),
        ("AlarmActive", "alarm"),
        ("Running", "process"),
        ("SpindleSpeed", "process"),
    ],
)
def test_guess_role(name: str, role: str) -> None:
    """If a variable is named like a role, then that role is guessed; else process."""
    assert guess_role(name) == role
