"""Fault matrix row F8 (docs/reliability.md §c): counter resets and rollovers, produced by
the simulator's real servers (the demo factory, compressed profile) and read by the agent's
runtime; its deltas are compared with the simulator's ledger of completions, exactly.

CNC-05's 16-bit good counter starts at 65,500 and rolls over within the first minutes (the
demo factory's design); CNC-01 (OPC UA) has its counters reset by the simulator's fault
hook in the middle of the run. OPC UA samples carry the source timestamp the simulator set
for the completion they report, so the ledger's count at each sample's instant is exact;
the reset makes the counter's value useless for that, so the ledger is read by time.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from live_support import (
    LedgerCounts,
    agent_config,
    count_checks,
    counter_roles,
    demo_factory,
    event_time,
    running_agent,
)

from agent.config import parse_config
from agent.store import Store
from simulator.live import LiveFactory
from simulator.modbus_face import ModbusFaceConfig
from simulator.opcua_face import OpcUaFaceConfig
from simulator.server import SimulatorServer

RESET_DEVICE = "CNC-01"  # OPC UA
WRAP_DEVICE = "CNC-05"  # Modbus, 16-bit, counter_initial 65,500
LIVE_S = 40.0
MODBUS_LAG_S = 1.5
SEED = 7


@pytest.mark.slow
async def test_F8_a_reset_and_a_rollover_are_counted_exactly_against_the_ledger(
        tmp_path: Path) -> None:
    """If a device's counters are reset by the simulator in the middle of the run and
    another's 16-bit counter rolls over, then the counter values really drop on the wire,
    and the agent's summed deltas equal the ledger's completions over the window it
    measured, for both devices and every counter role (±0 pieces)."""
    factory = demo_factory()
    db = tmp_path / "agent.db"
    # Start the factory's timeline so that CNC-05's rollover falls in the middle of the run.
    probe = LiveFactory(factory, profile="compressed", seed=SEED, start=0.0)
    previous, wrap_at = None, None
    for second in range(3600):  # bounded: the demo rolls over within minutes
        value = probe.values_at(float(second))[(WRAP_DEVICE, "good_count")].value
        if previous is not None and value < previous:
            wrap_at = float(second)
            break
        previous = value
    assert wrap_at is not None, "the demo's 16-bit counter did not roll over in an hour"
    source = LiveFactory(factory, profile="compressed", seed=SEED,
                         start=time.time() + LIVE_S / 2 + 5.0 - wrap_at)
    sim = SimulatorServer(source, opcua=OpcUaFaceConfig(), modbus=ModbusFaceConfig(),
                          control_port=None)
    async with sim:
        config = parse_config(agent_config(factory, sim))
        async with running_agent(config, db):
            await asyncio.sleep(LIVE_S / 2)
            sim.faults.reset_counters(RESET_DEVICE)
            await asyncio.sleep(LIVE_S / 2)
        assert isinstance(sim.source, LiveFactory)
        ledger = LedgerCounts(sim.source, tmp_path / "ledger-at")
        store = Store.open(db, config)
        try:
            deltas = store.deltas(0, 4e9)
            raw = store.raw_samples(0, 4e9)
        finally:
            store.close()
        roles = counter_roles(config)
        good = raw[(raw["quality"] != 2)].copy()
        good["et"] = event_time(good)
        dropped: dict[str, bool] = {}
        for device in (RESET_DEVICE, WRAP_DEVICE):
            for (device_id, signal_id), role in roles.items():
                if device_id != device or role not in ("good_count", "total_count"):
                    continue
                values = good[(good["device_id"] == device_id)
                              & (good["signal_id"] == signal_id)].sort_values("et")["value"]
                dropped[device] = bool((values.astype(float).diff() < 0).any())
        assert dropped == {RESET_DEVICE: True, WRAP_DEVICE: True}, dropped

        # The rollover: the value maps to the ledger's count modulo 2**16 (count_checks).
        wrapped = count_checks(factory, config, raw, deltas, ledger, MODBUS_LAG_S, {WRAP_DEVICE})
        assert wrapped and all(c.ok for c in wrapped), wrapped
        # The reset: the ledger's completions between the first and the last sample's
        # source timestamps, whatever the values.
        checked: dict[str, int] = {}
        for (device_id, signal_id), role in roles.items():
            if device_id != RESET_DEVICE:
                continue
            rows = good[(good["device_id"] == device_id)
                        & (good["signal_id"] == signal_id)].sort_values("et")
            first, last = float(rows["et"].iloc[0]), float(rows["et"].iloc[-1])
            truth = ledger.count(device_id, role, last) - ledger.count(device_id, role, first)
            picked = deltas[(deltas["device_id"] == device_id) & (deltas["role"] == role)]
            assert float(picked["delta"].sum()) == truth, (role, truth)
            checked[role] = truth
    assert checked.get("good_count", 0) > 0, checked  # pieces were made across the reset
