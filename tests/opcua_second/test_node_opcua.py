"""The agent against a second OPC UA stack: node-opcua (issue 16, "Done when").

The behaviours that depend on the server stack, tested against the simulator's asyncua
servers elsewhere (tests/connectors/test_big_integers.py, test_opcua_first_values.py,
tests/e2e/test_live_collection.py, test_live_faults.py), here against server.js, a
node-opcua server the tests start on a free loopback port: the agent runtime with its real
OPC UA connector and store (tests/e2e/live_support.running_agent) collects from it.

Figures of one run are printed (`pytest -s`) so they can be quoted.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from node_opcua_server import (
    BEHIND_S,
    I64_MAX,
    I64_MIN,
    OLD_AGE_S,
    STILL_AGE_S,
    U64_MAX,
    U64_TOP_BIT,
    NodeOpcUaServer,
)

from agent.config import FactoryConfig, declared_inventory, parse_config
from agent.derive.sample_columns import MAX_SOURCE_SKEW_S
from agent.store import Store
from connectors.opcua import OpcUaConnector
from indicators.kpi import compute
from tests.e2e.live_support import link_log, measures_so_far, query, running_agent
from tests.support.waiting import wait_until_async

LIVE_S = 10.0  # the first test's collection window
RESTARTS = 3  # the stack-dependent path; the simulator test repeats it 20 times
RESUME_BOUND_S = 5.0  # data again within 5 s of the server being up (issue 16 item 4)
CONNECTION = "second"
# Signals whose value never changes while the agent runs, and the value each must keep.
UNCHANGED: dict[tuple[str, str], int | float] = {
    ("STILL-01", "state"): 1,
    ("STILL-01", "good"): 1234,
    ("STILL-01", "reject"): 5,
    ("STILL-01", "auto"): 1,  # a Boolean true; the store gives bools back as 0 / 1
    ("BIG-01", "u64_max"): U64_MAX,
    ("BIG-01", "u64_top_bit"): U64_TOP_BIT,
    ("BIG-01", "i64_min"): I64_MIN,
    ("BIG-01", "i64_max"): I64_MAX,
    ("CLOCK-01", "old"): 21.5,
}


def _config(server: NodeOpcUaServer) -> FactoryConfig:
    """Three devices on the node-opcua server, default connection settings: STILL-01 (a
    machine whose state and counters never change), BIG-01 (64-bit extremes), CLOCK-01 (a
    value unchanged for 2 h, a counter that moves, and, not required, a counter stamped by
    a source clock 2 h behind)."""

    def signal_(signal_id: str, role: str, path: str, **extra: Any) -> dict[str, Any]:
        return {"id": signal_id, "role": role, "opcua": {"node": server.node(path)}, **extra}

    def device(device_id: str, *signals: dict[str, Any]) -> dict[str, Any]:
        return {"id": device_id, "line": "L1", "process_step": "mill", "kind": "cnc",
                "digital": True, "connection": CONNECTION, "signals": list(signals)}

    return parse_config({
        "schema": "tieragent/config/v1",
        "factory": {"enterprise_id": "E1", "factory_id": "f-1", "industry_code": "C3484"},
        "connections": {CONNECTION: {"protocol": "opcua", "endpoint": server.endpoint}},
        "devices": [
            device("STILL-01",
                   signal_("state", "state", "Still/State", state_map="plain"),
                   signal_("good", "good_count", "Still/Good"),
                   signal_("reject", "reject_count", "Still/Reject"),
                   signal_("auto", "auto_mode", "Still/Auto")),
            device("BIG-01",
                   signal_("u64_max", "process", "Big/U64Max"),
                   signal_("u64_top_bit", "process", "Big/U64TopBit"),
                   signal_("i64_min", "process", "Big/I64Min"),
                   signal_("i64_max", "process", "Big/I64Max")),
            device("CLOCK-01",
                   signal_("old", "process", "Clock/Old"),
                   signal_("moving", "process", "Moving/Count"),
                   signal_("behind", "process", "Clock/Behind", required=False)),
        ],
    })


def _signal(raw: pd.DataFrame, device_id: str, signal_id: str) -> pd.DataFrame:
    rows = raw[(raw["device_id"] == device_id) & (raw["signal_id"] == signal_id)]
    return rows.sort_values("received_ts", kind="stable")


def _same(got: Any, expected: int | float) -> bool:
    """Exactly equal, type included (an int must not come back as a rounded float)."""
    if isinstance(got, np.generic):
        got = got.item()
    return type(got) is type(expected) and got == expected


@pytest.mark.slow
async def test_node_opcua_values_are_stored_exactly_once_and_on_time(tmp_path: Path) -> None:
    """If a fresh agent collects from a node-opcua server for 10 s, then:
    - UInt64 2^64-1 and 2^63 and Int64 -2^63 and 2^63-1 are stored exactly, as integers;
    - a state and counters that never change (last changed 700 s before) are collected:
      data_collection_rate and realtime_rate 1.0, every device networked, each value
      stored once (the read after subscribing; node-opcua's initial notification repeats
      it and is dropped), none flagged;
    - a value unchanged for 2 h keeps its 2 h old source timestamp and is not flagged,
      while every change stamped by a source clock 2 h behind is flagged uncertain and
      counted by the skew metric with its sign."""
    db = tmp_path / "agent.db"
    with NodeOpcUaServer(tmp_path / "server") as server:
        config = _config(server)
        async with running_agent(config, db) as runtime:
            await asyncio.sleep(LIVE_S)
        connector = runtime.connectors[CONNECTION]
        registry = runtime.metrics.registry
    store = Store.open(db, config)
    try:
        base = measures_so_far(store)
        raw = store.raw_samples(0, 4e9)
    finally:
        store.close()
    assert isinstance(connector, OpcUaConnector)
    assert connector.stats.sessions == 1, connector.stats

    # Never-changing values, 64-bit extremes and the 2 h old value: once each, exact, good.
    for (device_id, signal_id), value in UNCHANGED.items():
        rows = _signal(raw, device_id, signal_id)
        assert len(rows) == 1, (device_id, signal_id, rows[["value", "source_ts"]])
        got = rows["value"].iloc[0]
        assert _same(got, value), (device_id, signal_id, got, type(got), value)
        assert rows["quality"].iloc[0] == 0, (device_id, signal_id)
        age = OLD_AGE_S if signal_id == "old" else STILL_AGE_S
        # node-opcua keeps a timestamp as a JavaScript Date: whole milliseconds.
        expected_ts = server.epoch - age
        assert rows["source_ts"].iloc[0] == pytest.approx(expected_ts, abs=0.002), signal_id

    # The collection rates over the window the agent measured.
    rates = compute(base, declared_inventory(config))
    collection = rates["data_collection_rate"]
    assert collection.value == 1.0, collection
    assert rates["realtime_rate"].value == 1.0, rates["realtime_rate"]
    assert rates["networking_rate"].value == 1.0, rates["networking_rate"]
    assert set(base["device_id"]) == {d.id for d in config.devices}
    required = sum(s.required for d in config.devices for s in d.signals)
    measured_s = LIVE_S - config.collection.realtime_bound_s - 2
    assert base["samples_expected"].sum() >= required * measured_s

    # A source clock 2 h behind: the read of its current value cannot be told from a value
    # unchanged for 2 h (held, kept as it is); each change after it is flagged.
    behind = _signal(raw, "CLOCK-01", "behind")
    assert len(behind) >= LIVE_S / 0.5 / 2, len(behind)  # it changes every 0.5 s
    skew = behind["source_ts"] - behind["received_ts"]
    assert np.allclose(skew, -BEHIND_S, atol=5.0), skew.describe()
    assert behind["quality"].iloc[0] == 0 and (behind["quality"].iloc[1:] == 1).all()
    flagged = int((behind["quality"] == 1).sum())
    labels = {"device": "CLOCK-01"}
    assert registry.get_sample_value("tieragent_samples_skewed_total", labels) == flagged
    worst = registry.get_sample_value("tieragent_source_skew_seconds", labels)
    assert worst is not None and abs(worst + BEHIND_S) < 5.0, worst
    # Nothing else is flagged: a clock bound of 600 s, every other value's clock is right.
    others = raw.drop(behind.index)
    assert (others["quality"] == 0).all(), others[others["quality"] != 0]
    assert ((others["source_ts"] - others["received_ts"]) < MAX_SOURCE_SKEW_S).all()

    # A value that changes (with a right clock) arrives change by change, none twice. (By
    # source time: when it changed between subscribing and the read after it, the
    # subscription's initial notification brings the older value after the read's newer
    # one; it is stored, and derivation skips such an older sample: Deriver._in_order.)
    moving = raw[(raw["device_id"] == "CLOCK-01") & (raw["signal_id"] == "moving")]
    values = moving.sort_values("source_ts")["value"].astype(int).to_numpy()
    # It changes every 0.2 s; the server samples it every 0.25 s (the default interval).
    assert len(values) >= LIVE_S / 0.25 / 2 and (np.diff(values) > 0).all(), values
    print(
        f"\nnode-opcua, {LIVE_S:.0f} s: data_collection_rate {collection.value} "
        f"({collection.inputs}), realtime_rate {rates['realtime_rate'].value}, "
        f"networking_rate {rates['networking_rate'].value}; {len(UNCHANGED)} unchanged "
        f"values stored once each; {flagged} of {len(behind)} samples of the clock 2 h "
        f"behind flagged; {len(values)} changes of the moving counter"
    )


async def _first_sample_after(db: Path, since: float, timeout: float) -> float:
    """The receive time of the first stored sample received after `since`."""
    first: list[float] = []

    def back() -> bool:
        value = query(db, "SELECT min(received_ts) FROM samples WHERE received_ts > ?",
                      (since,))[0][0]
        if value is not None:
            first.append(float(value))
        return bool(first)

    await wait_until_async(back, timeout, step=0.05)
    return first[0]


def _changes_after(db: Path, since: float) -> int:
    """How many changes of the moving counter were received after `since`."""
    sql = ("SELECT count(*) FROM samples WHERE device_id = 'CLOCK-01' "
           "AND signal_id = 'moving' AND received_ts > ?")
    return int(query(db, sql, (since,))[0][0])


@pytest.mark.slow
async def test_node_opcua_restarts_each_resume_within_5_s(tmp_path: Path) -> None:
    """If the node-opcua server process is stopped (SIGTERM, node-opcua's graceful shutdown,
    and SIGKILL, a crash, in turn) and started again on the same port 5 times, down for
    1-2 s each time, then with the default reconnect settings stored data resumes within
    5 s of every restart, with a new session each time, the subscription's changes flow
    again after the last one, and each unchanged value is stored once per session."""
    db = tmp_path / "agent.db"
    rng = np.random.default_rng(16)
    took: list[float] = []
    downs: list[float] = []
    server = NodeOpcUaServer(tmp_path / "server")
    server.start()
    try:
        config = _config(server)
        assert config.connections[CONNECTION].reconnect_max_s == 30.0  # the defaults
        async with running_agent(config, db) as runtime:
            started = time.time()
            await _first_sample_after(db, 0, 10)
            for restart in range(RESTARTS):
                how = signal.SIGKILL if restart % 2 else signal.SIGTERM
                stopped, up = await server.restart(
                    how, after_s=float(rng.uniform(0.3, 1.0)), down_s=float(rng.uniform(1.0, 2.0))
                )
                downs.append(up - stopped)
                resumed = await _first_sample_after(db, up, 15)
                took.append(resumed - up)
            # Changes flow again after the last restart, not only the read after subscribing
            # (whose samples were all received at `resumed`).
            await wait_until_async(lambda: _changes_after(db, resumed) >= 3, 5)
            connector = runtime.connectors[CONNECTION]
    finally:
        server.stop()
    assert isinstance(connector, OpcUaConnector)
    sessions = RESTARTS + 1
    assert connector.stats.sessions == sessions, connector.stats  # one per server start
    assert max(took) <= RESUME_BOUND_S, [round(t, 2) for t in took]
    links = link_log(db)
    lost = links[(links["state"] == "disconnected") & (links["ts"] >= started)]
    assert len(lost) >= RESTARTS, links
    raw = pd.DataFrame(
        query(db, "SELECT device_id, signal_id, received_ts, quality FROM samples"),
        columns=["device_id", "signal_id", "received_ts", "quality"],
    )
    for device_id, signal_id in UNCHANGED:
        assert len(_signal(raw, device_id, signal_id)) == sessions, (device_id, signal_id)
    print(
        f"\nnode-opcua, {RESTARTS} restarts (down "
        f"{', '.join(f'{d:.1f}' for d in downs)} s): data back after "
        f"{', '.join(f'{t:.2f}' for t in took)} s (max {max(took):.2f} s)"
    )
