"""Reconnect benchmark: time from an OPC UA server's restart to data again, over many restarts
(issue 16 item 4; docs/reliability.md F1).

    .venv/bin/python bench/reconnect.py [--restarts 100] [--down 1 2] [--seed 1] [--full]

The demo factory's simulator (real asyncua server, free loopback port) and the agent's OPC UA
connector with the default reconnect settings run in this process. Each round restarts the
server with a downtime drawn from `--down` (uniform, seconds) and measures from the moment it
accepts connections again to the first sample batch the connector delivers. The fast restart
(default) closes every session and the listener and keeps the address space, so the server is
back within milliseconds of the downtime; `--full` rebuilds the whole server instead (seconds
of start-up, which also stall this shared event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import time
from collections.abc import Sequence

import _paths  # noqa: F401  (the import path: before anything of the project)

from agent.config import parse_config
from agent.runtime import bindings_by_connection
from connectors.opcua import OpcUaConnector
from connectors.sample import Sample
from tests.e2e.live_support import agent_config, demo_factory, demo_server

BOUND_S = 5.0
GIVE_UP_S = 60.0


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bench(restarts: int, down: tuple[float, float], seed: int, full: bool) -> None:
    factory = demo_factory()
    sim = demo_server(factory, None)
    async with sim:
        config = parse_config(agent_config(factory, sim))
        connection = config.connections["sim-opcua"]
        connector = OpcUaConnector(
            "sim-opcua", connection, bindings_by_connection(config)["sim-opcua"]
        )
        last = [0.0]

        async def sink(batch: Sequence[Sample]) -> None:
            if batch:
                last[0] = time.monotonic()

        task = asyncio.create_task(connector.run(sink, lambda _event: None))
        rng = random.Random(seed)
        took: list[float] = []
        downs: list[float] = []
        started = time.monotonic()
        try:
            while last[0] == 0.0:
                await asyncio.sleep(0.05)
            for _ in range(restarts):
                await asyncio.sleep(rng.uniform(0.5, 1.5))
                seconds = rng.uniform(*down)
                downs.append(seconds)
                await sim.faults.restart_face("opcua", seconds, fast=not full)
                up = time.monotonic()
                while last[0] <= up and time.monotonic() - up < GIVE_UP_S:
                    await asyncio.sleep(0.01)
                took.append(last[0] - up if last[0] > up else float("inf"))
        finally:
            task.cancel()
            await asyncio.wait([task], timeout=10)
        elapsed = time.monotonic() - started

    over = sum(t > BOUND_S for t in took)
    print(
        f"{restarts} {'full' if full else 'fast'} restarts, down {down[0]:g}-{down[1]:g} s "
        f"(mean {statistics.mean(downs):.2f} s), defaults: reconnect_fast_s "
        f"{connection.reconnect_fast_s:g}, reconnect_fast_window_s "
        f"{connection.reconnect_fast_window_s:g}, reconnect_min_s {connection.reconnect_min_s:g}"
    )
    print("time from the server accepting connections again to the first sample batch:")
    for label, q in (("min", 0.0), ("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99),
                     ("max", 1.0)):
        print(f"  {label:>4}  {quantile(took, q):6.2f} s")
    print(f"  mean  {statistics.mean(took):6.2f} s")
    print(f"  over {BOUND_S:g} s: {over} of {len(took)}")
    edges = [0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0]
    low = 0.0
    for edge in [*edges, float("inf")]:
        count = sum(low <= t < edge for t in took)
        label = f"[{low:g}, {edge:g}) s" if edge != float("inf") else f">= {low:g} s"
        print(f"  {label:>14}  {count:4d}  {'#' * count}")
        low = edge
    print(f"sessions {connector.stats.sessions}, failed attempts "
          f"{connector.stats.failed_attempts}, wall time {elapsed:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--restarts", type=int, default=100)
    parser.add_argument("--down", type=float, nargs=2, default=(1.0, 2.0))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--full", action="store_true", help="rebuild the server each time")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    asyncio.run(bench(args.restarts, tuple(args.down), args.seed, args.full))


if __name__ == "__main__":
    main()
