"""Both connectors against the simulator's own OPC UA and Modbus faces (the demo factory):
every signal the exported agent config binds arrives with good quality."""

from __future__ import annotations

from pathlib import Path

from connector_helpers import Recorder, running

from agent.config import FactoryConfig, parse_config
from connectors.base import SignalBinding
from connectors.config import ModbusConnection, OpcUaConnection
from connectors.modbus import ModbusConnector
from connectors.opcua import OpcUaConnector
from connectors.sample import Quality
from simulator.agent_config import export_agent_config
from simulator.live import LiveFactory
from simulator.modbus_face import ModbusFaceConfig
from simulator.model import load_factory
from simulator.opcua_face import OpcUaFaceConfig
from simulator.server import SimulatorServer
from tests.support.waiting import wait_until_async

DEMO = Path(__file__).resolve().parents[2] / "config" / "factories" / "demo.yaml"


def _bindings(config: FactoryConfig, connection: str) -> list[SignalBinding]:
    return [
        SignalBinding(
            device.id,
            signal.id,
            config.interval_of(signal),
            opcua=signal.opcua,
            modbus=signal.modbus,
            unit_id=device.unit_id,
        )
        for device in config.devices
        if device.connection == connection
        for signal in device.signals
    ]


async def test_connectors_read_every_simulated_signal() -> None:
    """If the agent config exported by the simulator is used, then every bound signal of
    both faces yields a good sample."""
    factory = load_factory(DEMO)
    source = LiveFactory(factory, profile="compressed", seed=3)
    sim = SimulatorServer(
        source,
        opcua=OpcUaFaceConfig(tick_s=0.1),
        modbus=ModbusFaceConfig(tick_s=0.1),
        control_port=None,
    )
    async with sim:
        assert sim.opcua_endpoint is not None and sim.modbus_address is not None
        host, port = sim.modbus_address
        config = parse_config(export_agent_config(factory, sim.opcua_endpoint, host, port))
        connectors = []
        expected: set[tuple[str, str]] = set()
        for name, connection in config.connections.items():
            bindings = _bindings(config, name)
            expected |= {(b.device_id, b.signal_id) for b in bindings}
            if isinstance(connection, OpcUaConnection):
                connectors.append(OpcUaConnector(name, connection, bindings))
            else:
                assert isinstance(connection, ModbusConnection)
                fast = connection.model_copy(update={"timeout_s": 1.0})
                connectors.append(ModbusConnector(name, fast, bindings))
        recorder = Recorder()
        assert len(connectors) == 2 and expected

        def good() -> set[tuple[str, str]]:
            return {
                (s.device_id, s.signal_id) for s in recorder.samples if s.quality == Quality.GOOD
            }

        async with running(connectors[0], recorder), running(connectors[1], recorder):
            await wait_until_async(lambda: good() >= expected, 10)
    assert not [s for s in recorder.samples if s.quality != Quality.GOOD]
