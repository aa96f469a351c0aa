"""Fault matrix row F7 (docs/reliability.md §c): Modbus exception replies, injected by the
simulator's real Modbus server (the demo factory), read by the agent's Modbus connector."""

from __future__ import annotations

from pathlib import Path

from connector_helpers import Recorder, running
from test_against_simulator import _bindings

from agent.config import parse_config
from connectors.config import ModbusConnection
from connectors.modbus import ModbusConnector
from connectors.sample import Quality
from simulator.agent_config import export_agent_config
from simulator.live import LiveFactory
from simulator.modbus_face import ModbusFaceConfig
from simulator.model import load_factory
from simulator.server import SimulatorServer
from tests.support.waiting import wait_until_async

DEMO = Path(__file__).resolve().parents[2] / "config" / "factories" / "demo.yaml"
DEVICE, SIGNAL = "CNC-05", "good_count"


async def test_F7_busy_and_illegal_address_replies_flag_the_signal_and_polling_goes_on() -> None:
    """If the device answers 0x06 (busy), then 0x02 (illegal address) for one signal's
    register, then every sample of that signal meanwhile is BAD with the exception code as
    its status and no value; the device's other signals read in the same request carry the
    busy code too (never a stale value), and after an illegal address they read GOOD again
    (the address is isolated); polling never stops, and once the fault clears the signal
    is GOOD again."""
    factory = load_factory(DEMO)
    source = LiveFactory(factory, profile="compressed", seed=3)
    async with SimulatorServer(source, opcua=None, modbus=ModbusFaceConfig(tick_s=0.1),
                               control_port=None) as sim:
        assert sim.modbus_address is not None
        host, port = sim.modbus_address
        config = parse_config(export_agent_config(factory, "opc.tcp://127.0.0.1:1", host, port))
        name, connection = next((n, c) for n, c in config.connections.items()
                                if isinstance(c, ModbusConnection))
        bindings = _bindings(config, name)
        assert any(b.device_id == DEVICE and b.signal_id == SIGNAL for b in bindings)
        connector = ModbusConnector(name, connection.model_copy(
            update={"timeout_s": 1.0, "poll_interval_s": 0.2}), bindings)
        recorder = Recorder()

        def of_signal() -> list:  # type: ignore[type-arg]
            return [s for s in recorder.samples
                    if (s.device_id, s.signal_id) == (DEVICE, SIGNAL)]

        async with running(connector, recorder):
            await wait_until_async(lambda: any(s.quality == Quality.GOOD for s in of_signal()), 10)
            phases: dict[int, tuple[int, int]] = {}
            for code in (0x06, 0x02):
                sim.faults.set_modbus_exception(DEVICE, SIGNAL, code)
                start = len(recorder.samples)
                await wait_until_async(lambda code=code, start=start: sum(
                    1 for s in recorder.samples[start:] if (s.device_id, s.signal_id) ==
                    (DEVICE, SIGNAL) and s.status == code) >= 5, 10)
                phases[code] = (start, len(recorder.samples))
            sim.faults.set_modbus_exception(DEVICE, SIGNAL, None)
            cleared = len(recorder.samples)
            await wait_until_async(lambda: any(
                s.quality == Quality.GOOD for s in recorder.samples[cleared:]
                if (s.device_id, s.signal_id) == (DEVICE, SIGNAL)), 10)
    for code, (start, end) in phases.items():
        window = recorder.samples[start:end]
        mine = [s for s in window if (s.device_id, s.signal_id) == (DEVICE, SIGNAL)]
        flagged = [s for s in mine if s.quality == Quality.BAD and s.status == code
                   and s.value is None]
        # The first poll of a phase may still be answered with the previous phase's code.
        assert len(flagged) >= len(mine) - 1 and len(flagged) >= 5, (code, mine[:3])
        others = [s for s in window if s.device_id == DEVICE and s.signal_id != SIGNAL]
        assert others, code
        if code == 0x02:  # an address that does not exist is isolated: the rest read GOOD
            assert all(s.quality == Quality.GOOD for s in others[-5:]), (code, others[-5:])
        else:  # busy answers the whole read: its other signals are flagged too, never guessed
            assert all(s.quality == Quality.GOOD or (s.status == code and s.value is None)
                       for s in others), (code, others[:3])
