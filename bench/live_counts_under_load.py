"""Live count equality with the ledger, repeated, while a CPU hog runs beside the agent
(issue 16: "holds in 20 repeated runs while a CPU hog runs beside the agent").

    .venv/bin/python bench/live_counts_under_load.py [--runs 20] [--live-s 20] [--hogs 1]

Each run is `tests/e2e/test_live_collection.py`'s check, shortened: the simulator's demo
factory (compressed profile, OPC UA and Modbus faces, ground-truth ledger) and the agent
(real connectors, store) in this process for `--live-s`, then every counter of every device
whose link never dropped is compared with the ledger's completions over the window the
agent measured (exact equality, `live_support.count_checks`). `--hogs` busy-looping
processes run for the whole time (started here, stopped by PID). Prints one line per run
and the number of runs with every count exact. A counter is compared when the agent stored
two good samples of it in the window (a reject counter may not move in 20 s), so the number
compared varies between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _paths  # the import path: before anything of the project

sys.path.insert(0, str(_paths.ROOT / "tests" / "e2e"))  # live_support, as the tests use it

MODBUS_POLL_S = 0.5
MODBUS_LAG_S = MODBUS_POLL_S + 0.6


async def one_run(folder: Path, live_s: float) -> tuple[int, int, list[str], set[str]]:
    """(counters compared, counters exact, descriptions of the ones that differ, the
    connections that dropped: their devices' counters are not compared, as in the test)."""
    from live_support import (
        LedgerCounts,
        agent_config,
        count_checks,
        demo_factory,
        demo_server,
        link_log,
        running_agent,
    )

    from agent.config import parse_config
    from agent.store import Store
    from simulator.live import LiveFactory
    from simulator.modbus_face import ModbusFaceConfig

    factory = demo_factory()
    db = folder / "agent.db"
    sim = demo_server(factory, folder / "ledger", modbus=ModbusFaceConfig(tick_s=0.05))
    async with sim:
        raw_config = agent_config(factory, sim)
        for device in raw_config["devices"]:
            if device["connection"] == "sim-modbus":
                for item in device["signals"]:
                    item["interval_s"] = MODBUS_POLL_S
        config = parse_config(raw_config)
        async with running_agent(config, db):
            await asyncio.sleep(live_s)
        assert isinstance(sim.source, LiveFactory)
        counts = LedgerCounts(sim.source, folder / "ledger-at")
        store = Store.open(db, config)
        try:
            deltas = store.deltas(0, 4e9)
            raw = store.raw_samples(0, 4e9)
        finally:
            store.close()
        links = link_log(db)
        dropped = set(links[links["state"] == "disconnected"]["connection"])
        steady = {d.id for d in config.devices if d.connection not in dropped | {"none"}}
        checks = count_checks(factory, config, raw, deltas, counts, MODBUS_LAG_S, steady)
    bad = [f"{c.device_id} {c.role}: agent {c.agent}, ledger {c.ledger}" for c in checks
           if not c.ok]
    return len(checks), len(checks) - len(bad), bad, dropped


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--live-s", type=float, default=20.0)
    parser.add_argument("--hogs", type=int, default=1)
    args = parser.parse_args()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.hogs)]
    exact_runs = 0
    started = time.monotonic()
    try:
        for run in range(1, args.runs + 1):
            with tempfile.TemporaryDirectory() as tmp:
                compared, exact, bad, dropped = asyncio.run(one_run(Path(tmp), args.live_s))
            exact_runs += not bad and compared > 0
            print(f"run {run:2d}: {exact}/{compared} counters exact, load average "
                  f"{os.getloadavg()[0]:.2f}"
                  + (f", links dropped: {', '.join(sorted(dropped))}" if dropped else "")
                  + (f"; differ: {bad}" if bad else ""), flush=True)
    finally:
        for hog in hogs:
            os.kill(hog.pid, signal.SIGKILL)
            hog.wait()
    print(f"{exact_runs} of {args.runs} runs with every count exact ({args.hogs} CPU hog(s), "
          f"{args.live_s:g} s live each, {time.monotonic() - started:.0f} s in all, "
          f"{os.cpu_count()} CPUs)")
    print(f"$ .venv/bin/python bench/live_counts_under_load.py --runs {args.runs} "
          f"--live-s {args.live_s:g} --hogs {args.hogs}")


if __name__ == "__main__":
    main()
