"""`discover` browses a real server within its limits, groups what it finds by device and
drafts a configuration that validates as written."""

from __future__ import annotations

import pytest
import yaml
from connector_opcua_server import OpcUaTestServer

from agent.config import FactoryConfig, Signal, parse_config
from connectors.config import OpcUaSecurity
from connectors.discover import Variable, discover, group_devices, guess_role, render_devices
from tests.support.ports import free_port
from tieragent.commands.init import Draft, OpcUaTarget, render_config, validated

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
# Companion-specification shapes: PackML (OPC 30050) Status/Admin folders and OPC 40001
# Machinery building blocks, plus two counters that both look like a total.
COMPANIONS = {
    "L3/Filler-01/Status/StateCurrent": 2,
    "L3/Filler-01/Status/UnitModeCurrent": 1,
    "L3/Filler-01/Admin/ProdProcessedCount": 500,
    "L3/Filler-01/Admin/ProdDefectiveCount": 4,
    "L3/Filler-01/Admin/IdealCycleTimeS": 1.5,
    "L4/Mill-01/Identification/Manufacturer": "ACME",
    "L4/Mill-01/MachineryBuildingBlocks/MachineryItemState/StateNumber": 3,
    "L4/Mill-01/MachineryBuildingBlocks/MachineryOperationMode/StateNumber": 3,
    "L4/Mill-01/Monitoring/PartCount": 77,
    "L4/Mill-01/Monitoring/TotalParts": 80,
    "L4/Mill-01/Monitoring/IdealCycleTimeS": 12.5,
}


def _config(text_devices: list[str], endpoint: str) -> FactoryConfig:
    head = [
        "factory: {enterprise_id: E1, factory_id: f-1, industry_code: C3484}",
        f"connections: {{opcua-1: {{protocol: opcua, endpoint: '{endpoint}'}}}}",
        "devices:",
    ]
    return parse_config(yaml.safe_load("\n".join([*head, *text_devices])))


def _signals(config: FactoryConfig, device_id: str) -> dict[str, Signal]:
    return {s.id: s for s in config.device(device_id).signals}


async def test_discover_finds_every_variable_within_small_limits() -> None:
    """If the server allows 2 nodes per browse and 5 per read, then discover still finds all
    30 variables, with node ids, browse paths, data types and current values."""
    server = OpcUaTestServer(
        free_port(),
        VARIABLES,
        advertise={"browse": 2, "read": 5},
        enforce={"browse": 2, "read": 5},
    )
    async with server:
        found = await discover(server.endpoint, timeout_s=5)
        sizes = {kind: list(values) for kind, values in server.sizes.items()}
    by_path = {f.browse_path: f for f in found}
    assert set(by_path) == {f"Factory/{path}" for path in VARIABLES}
    state = by_path["Factory/L1/CNC-01/MachineState"]
    assert state == Variable(
        node=server.node_id("L1/CNC-01/MachineState"),
        browse_path="Factory/L1/CNC-01/MachineState",
        name="MachineState",
        data_type="Int32",
        value=6,
        codes=[6],
        history=[6],
    )
    assert by_path["Factory/L1/CNC-01/EnergyKWh"].data_type == "Double"
    assert by_path["Factory/L1/CNC-02/Program"].data_type == "String"
    assert by_path["Factory/L1/CNC-01/AutoMode"].value is True
    assert max(sizes["browse"]) <= 2 and max(sizes["read"]) <= 5


async def test_devices_are_grouped_and_the_draft_validates_as_written() -> None:
    """If a server holds 23 machines (and companion-spec components), then discover drafts
    one device per machine with its own signals (no State_2 ... across machines), and the
    rendered devices validate as a configuration with no change."""
    server = OpcUaTestServer(free_port(), {**VARIABLES, **COMPANIONS})
    async with server:
        found = await discover(server.endpoint, timeout_s=5)
    devices = group_devices(found)
    assert [d.id for d in devices][:3] == ["CNC-01", "CNC-02", "Press-00"]
    assert {d.id for d in devices} >= {"Filler-01", "Mill-01"} and len(devices) == 24
    config = _config(render_devices(devices, "opcua-1"), server.endpoint)
    cnc = config.device("CNC-01")
    assert cnc.line == "L1" and cnc.kind == "cnc" and cnc.connection == "opcua-1"
    roles = {s.id: s.role.value for s in cnc.signals}
    assert roles == {
        "MachineState": "state", "GoodCount": "good_count", "NGCount": "reject_count",
        "TotalCount": "total_count", "EnergyKWh": "energy_kwh", "AutoMode": "auto_mode",
        "AlarmActive": "alarm", "SpindleSpeed": "process",
    }
    # Code 6 is beyond the plain map (0-5): PackML.
    assert _signals(config, "CNC-01")["MachineState"].state_map == "packml"
    # A text variable is written commented out: CNC-02 keeps only its state.
    assert [s.id for s in config.device("CNC-02").signals] == ["MachineState"]
    assert config.device("CNC-02").signals[0].state_map == "plain"


async def test_companion_specifications_give_roles_and_state_maps() -> None:
    """If a machine follows PackML or OPC 40001, then its state gets that state map, a second
    state-like variable and a second total count become process values (one role per
    device), IdealCycleTimeS is ideal_cycle_time_s, and unknown codes say `# check:`."""
    server = OpcUaTestServer(free_port(), {**VARIABLES, **COMPANIONS})
    async with server:
        found = await discover(server.endpoint, timeout_s=5)
    devices = group_devices(found)
    text = render_devices(devices, "opcua-1")
    config = _config(text, server.endpoint)
    filler = _signals(config, "Filler-01")
    assert filler["Status.StateCurrent"].role.value == "state"
    assert filler["Status.StateCurrent"].state_map == "packml"
    assert filler["Status.UnitModeCurrent"].role.value == "process"
    assert filler["Admin.ProdProcessedCount"].role.value == "total_count"
    assert filler["Admin.ProdDefectiveCount"].role.value == "reject_count"
    assert filler["Admin.IdealCycleTimeS"].role.value == "ideal_cycle_time_s"
    mill = _signals(config, "Mill-01")
    item = "MachineryBuildingBlocks.MachineryItemState.StateNumber"
    mode = "MachineryBuildingBlocks.MachineryOperationMode.StateNumber"
    assert mill[item].role.value == "state" and mill[item].state_map == "opcua_machinery"
    assert mill[mode].role.value == "process"
    assert mill["Monitoring.PartCount"].role.value == "total_count"
    assert mill["Monitoring.TotalParts"].role.value == "process"
    assert mill["Monitoring.IdealCycleTimeS"].role.value == "ideal_cycle_time_s"
    assert "Identification.Manufacturer" not in mill  # text: commented out
    joined = "\n".join(text)
    assert "# check: state codes unknown (seen: 4)" in joined  # CNC-02: plain, to check
    assert "# check: also looks like a state (operation_mode)" in joined
    assert "# check: also looks like total_count" in joined
    assert '#   opcua: {node: "' in joined  # Manufacturer, commented out


async def test_full_draft_passes_validation_with_placeholders() -> None:
    """If the whole configuration is drafted (identity placeholders), then it validates as
    written and keeps a reporting section."""
    server = OpcUaTestServer(free_port(), {**VARIABLES, **COMPANIONS})
    async with server:
        found = await discover(server.endpoint, timeout_s=5)
    target = OpcUaTarget("opcua-1", server.endpoint, OpcUaSecurity(), group_devices(found))
    text = render_config(Draft("CHANGE-ME", "CHANGE-ME", "CHANGE-ME", opcua=[target]))
    config = validated(text, "draft.yaml")
    assert config.factory.factory_id == "CHANGE-ME" and "# CHANGE ME" in text
    assert len(config.devices) == 24 and config.reporting is not None
    assert config.reporting.periods == ("day",) and config.delivery is None


@pytest.mark.parametrize(
    ("codes", "counts", "state_map", "note"),
    [
        ([3, 3, 3], [10, 11, 12], "opcua_machinery", "pieces were counted while the state was 3"),
        ([6, 6], [10, 11], "packml", "pieces were counted while the state was 6"),
        ([1, 1, 2], [10, 11, 11], "plain", "pieces were counted while the state was 1"),
        ([2, 2, 2], [10, 10, 10], "plain", "state codes unknown (seen: 2)"),
        ([4, 3], [10, 11], "plain", "state codes unknown (seen: 3, 4)"),  # changed: unsure
    ],
)
def test_state_map_from_the_code_held_while_pieces_are_counted(
    codes: list[int], counts: list[int], state_map: str, note: str
) -> None:
    """If a piece counter goes up while the state code stays X, then X means running, which
    names the preset (3 OPC 40001, 6 PackML, 1 plain); without that, plain and a check."""
    state = Variable("ns=2;s=M/State", "F/M/State", "State", "Int32", codes[-1],
                     sorted(set(codes)), list(codes))
    count = Variable("ns=2;s=M/Good", "F/M/GoodCount", "GoodCount", "UInt32", counts[-1],
                     [], list(counts))
    (device,) = group_devices([state, count])
    signal = device.signals[0]
    assert (signal.role, signal.state_map) == ("state", state_map)
    assert any(note in text for text in signal.notes)


@pytest.mark.parametrize(
    ("names", "state_map", "note"),
    [
        (["Undefined", "Clearing", "Stopped", "Starting", "Idle", "Suspended", "Execute",
          "Stopping", "Aborting", "Aborted", "Holding", "Held", "UnHolding", "Suspending",
          "Unsuspending", "Resetting", "Completing", "Complete"], "packml", None),
        (["NotAvailable", "OutOfService", "NotExecuting", "Executing"], "opcua_machinery", None),
        (["Offline", "Running", "Idle", "Setup", "Planned stop", "Unplanned stop"], "plain",
         None),
        (["Off", "Auto", "Manual"], "plain", "the server names the codes 0 Off, 1 Auto, 2 Manual"),
    ],
)
def test_state_map_from_the_names_the_server_gives_the_codes(
    names: list[str], state_map: str, note: str | None
) -> None:
    """If the state variable has EnumStrings naming its codes as a preset does, then that
    preset, even from a single code seen (2 is Stopped in PackML, idle in plain); names no
    preset has are quoted in a check note."""
    state = Variable("ns=2;s=M/State", "F/M/State", "State", "Int32", 2, [2], [2],
                     enum_names=names)
    (device,) = group_devices([state])
    signal = device.signals[0]
    assert (signal.role, signal.state_map) == ("state", state_map)
    if note is None:
        assert not any("state codes unknown" in text for text in signal.notes)
    else:
        assert any(note in text and "state_maps" in text for text in signal.notes)


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
        ("ProdDefectiveCount", "reject_count"),
        ("TotalCount", "total_count"),
        ("PartCount", "total_count"),
        ("EnergyTotal", "energy_kwh"),
        ("kWhMeter", "energy_kwh"),
        ("AutoMode", "auto_mode"),
        ("AlarmActive", "alarm"),
        ("IdealCycleTimeS", "ideal_cycle_time_s"),
        ("ideal_cycle_time_s", "ideal_cycle_time_s"),
        ("Running", "process"),
        ("SpindleSpeed", "process"),
    ],
)
def test_guess_role(name: str, role: str) -> None:
    """If a variable is named like a role, then that role is guessed; else process."""
    assert guess_role(name) == role
