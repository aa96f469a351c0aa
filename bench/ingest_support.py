"""Processes of the ingest benchmark (bench/ingest.py), one role per subcommand:

    ingest_support.py opcua-server --port P --tags N     simulator OpcUaFace, N synthetic 1 Hz tags
    ingest_support.py modbus-server --port P --registers N   simulator ModbusFace, N 1 Hz registers
    ingest_support.py bare-client --endpoint URL --tags N    plain asyncua subscription, counts
    ingest_support.py agent --profile OUT -- run ...     `tieragent ...` under cProfile

Every role prints `READY` on stdout once it serves (or is subscribed) and then answers each
line read on stdin with one JSON line of its counters, so the benchmark reads them at the
same moments it reads /proc. Also holds the generated agent configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import threading
from pathlib import Path
from typing import Any

import _paths  # noqa: F401  (the import path: before anything of the project)

from simulator.api import ModbusSpec, SignalSpec, SignalValue

TAGS_PER_DEVICE = 100  # = simulator.opcua_nodes.SYNTHETIC_GROUP: one device per tag folder
FACTORY_ID = "example-001"


# --- generated agent configuration ---------------------------------------------------------


def opcua_tag_path(index: int) -> str:
    from simulator.opcua_nodes import synthetic_path

    return synthetic_path(index)


def bench_config(
    opcua: list[tuple[str, int]], modbus: tuple[str, int, int] | None
) -> dict[str, Any]:
    """A FactoryConfig (as YAML data) with every synthetic tag as a `process` signal.

    `opcua`: (endpoint, tags) per server; `modbus`: (host, port, registers) or None.
    One device per 100 tags (an OPC UA tag folder, or a Modbus unit id).
    """
    connections: dict[str, Any] = {}
    devices: list[dict[str, Any]] = []
    for server, (endpoint, tags) in enumerate(opcua):
        name = f"opcua-{server}"
        connections[name] = {"protocol": "opcua", "endpoint": endpoint}
        for first in range(0, tags, TAGS_PER_DEVICE):
            indexes = range(first, min(tags, first + TAGS_PER_DEVICE))
            devices.append(_device(
                f"UA{server}-G{first // TAGS_PER_DEVICE:03d}", name, None,
                [{"id": f"t{i - first:02d}", "role": "process",
                  "opcua": {"node": f"ns=2;s={opcua_tag_path(i)}"}} for i in indexes],
            ))
    if modbus is not None:
        host, port, registers = modbus
        connections["modbus"] = {"protocol": "modbus", "host": host, "port": port}
        for unit, first in enumerate(range(0, registers, TAGS_PER_DEVICE), start=1):
            count = min(TAGS_PER_DEVICE, registers - first)
            devices.append(_device(
                f"MB-U{unit:03d}", "modbus", unit,
                [{"id": f"r{a:02d}", "role": "process",
                  "modbus": {"table": "holding", "address": a, "type": "uint16"}}
                 for a in range(count)],
            ))
    return {
        "schema": "tieragent/config/v1",
        "factory": {"enterprise_id": "91120116MA0000000X", "factory_id": FACTORY_ID,
                    "name": "Ingest benchmark", "industry_code": "C3484"},
        "collection": {"default_interval_s": 1.0},
        "connections": connections,
        "devices": devices,
    }


def _device(
    device_id: str, connection: str, unit: int | None, signals: list[dict[str, Any]]
) -> dict[str, Any]:
    device: dict[str, Any] = {
        "id": device_id, "line": "BENCH", "process_step": "synthetic", "kind": "other",
        "digital": True, "connection": connection, "signals": signals,
    }
    if unit is not None:
        device["unit_id"] = unit
    return device


# --- synthetic live sources --------------------------------------------------------------


class NoSignals:
    """A LiveSource without model signals: the OPC UA face's `scale_tags` are the load."""

    def signal_specs(self) -> list[SignalSpec]:
        return []

    def values_at(self, t: float) -> dict[tuple[str, str], SignalValue]:
        return {}


class SyntheticRegisters:
    """`registers` uint16 holding registers, 100 per unit id, each changing once a second."""

    def __init__(self, registers: int) -> None:
        self._specs = [
            SignalSpec(
                device_id=f"U{i // TAGS_PER_DEVICE + 1:03d}", line="BENCH",
                signal_id=f"r{i % TAGS_PER_DEVICE:02d}", role="process", value_type="int",
                face="modbus", modbus=ModbusSpec("holding", i % TAGS_PER_DEVICE, "uint16"),
                unit_id=i // TAGS_PER_DEVICE + 1,
            )
            for i in range(registers)
        ]
        self._keys = [(s.device_id, s.signal_id) for s in self._specs]

    def signal_specs(self) -> list[SignalSpec]:
        return list(self._specs)

    def values_at(self, t: float) -> dict[tuple[str, str], SignalValue]:
        second = math.floor(t)
        return {
            key: SignalValue((second * 7 + i) % 65536, float(second))
            for i, key in enumerate(self._keys)
        }


# --- the stdin/stdout protocol -----------------------------------------------------------


def answer_stdin(counters: Any) -> None:
    """Print READY, then one JSON line of `counters()` per stdin line (in a daemon thread)."""

    def serve() -> None:
        for _line in sys.stdin:
            print(json.dumps(counters()), flush=True)

    print("READY", flush=True)
    threading.Thread(target=serve, daemon=True, name="bench-stdin").start()


async def _forever() -> None:
    await asyncio.Event().wait()


async def opcua_server(port: int, tags: int) -> None:
    from simulator.opcua_face import OpcUaFace, OpcUaFaceConfig

    face = OpcUaFace(NoSignals(), OpcUaFaceConfig(port=port, scale_tags=tags))
    await face.start()
    answer_stdin(lambda: {"writes": face.stats.writes, "ticks": face.stats.ticks,
                          "overruns": face.stats.overruns,
                          "max_tick_s": round(face.stats.max_tick_s, 3)})
    await _forever()


async def modbus_server(port: int, registers: int) -> None:
    from simulator.modbus_face import ModbusFace, ModbusFaceConfig

    face = ModbusFace(SyntheticRegisters(registers), ModbusFaceConfig(port=port, tick_s=0.5))
    await face.start()
    answer_stdin(lambda: {"writes": face.stats.writes, "ticks": face.stats.ticks,
                          "overruns": face.stats.overruns,
                          "requests": sum(face.store.request_counts.values())})
    await _forever()


class _Counting:
    """asyncua's classic handler API: one task per notification."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        self.counts["notifications"] += 1


async def bare_client(endpoint: str, tags: int, handler: bool) -> None:
    """A plain asyncua subscription with the connector's default parameters, counting
    data-change notifications and doing nothing else with them: through the async
    iterator (as the connector does), or through a handler object with `handler`."""
    from asyncua import Client, ua
    from asyncua.common.subscription import DataChangeEvent, OverflowPolicy

    from simulator.opcua_nodes import string_node

    # A generous watchdog: the default 1 s probe timeout drops the session whenever the
    # shared machine stalls the server for a second, and this client does not reconnect.
    client = Client(endpoint, timeout=30, watchdog_intervall=10.0)
    await client.connect()
    params = ua.CreateSubscriptionParameters()
    params.RequestedPublishingInterval = 500
    params.RequestedMaxKeepAliveCount = 10
    params.RequestedLifetimeCount = 60
    params.MaxNotificationsPerPublish = 0
    params.PublishingEnabled = True
    params.Priority = 0
    counts = {"notifications": 0}
    sub = await client.create_subscription(
        params, _Counting(counts) if handler else None, queue_maxsize=max(10_000, 4 * tags),
        overflow=OverflowPolicy.DROP_OLDEST)
    requests = []
    for i in range(tags):
        item = ua.MonitoredItemCreateRequest()
        item.ItemToMonitor = ua.ReadValueId()
        item.ItemToMonitor.NodeId = string_node(opcua_tag_path(i))
        item.ItemToMonitor.AttributeId = ua.AttributeIds.Value
        item.MonitoringMode = ua.MonitoringMode.Reporting
        parameters = ua.MonitoringParameters()
        parameters.ClientHandle = i + 1
        parameters.SamplingInterval = 250
        parameters.QueueSize = 10
        parameters.DiscardOldest = True
        item.RequestedParameters = parameters
        requests.append(item)
    for start in range(0, tags, 1000):
        await sub.create_monitored_items(requests[start:start + 1000])
    answer_stdin(lambda: dict(counts))
    if handler:
        await _forever()
    async for event in sub:
        if isinstance(event, DataChangeEvent):
            counts["notifications"] += 1


# --- profiling the agent -------------------------------------------------------------------


def profiled_agent(out: Path, argv: list[str]) -> None:
    """`tieragent ARGV` with two cProfile profiles: the event loop (connectors, channel,
    metrics) and the store writer (every `Store.ingest` call, which runs in a worker
    thread that cProfile would not see otherwise). Calls never overlap: the writer awaits
    each commit."""
    import cProfile
    import io
    import pstats

    from agent.store import Store
    from tieragent.cli import main

    loop_profile, writer_profile = cProfile.Profile(), cProfile.Profile()
    ingest = Store.ingest

    def profiled_ingest(self: Store, *args: Any, **kwargs: Any) -> Any:
        writer_profile.enable()
        try:
            return ingest(self, *args, **kwargs)
        finally:
            writer_profile.disable()

    Store.ingest = profiled_ingest  # type: ignore[method-assign]
    sys.argv = ["tieragent", *argv]
    loop_profile.enable()
    try:
        main()
    except SystemExit:
        pass
    finally:
        loop_profile.disable()
        text = io.StringIO()
        for title, profile in (("event loop thread", loop_profile),
                               ("store writer (Store.ingest)", writer_profile)):
            stats = pstats.Stats(profile, stream=text)
            total = getattr(stats, "total_tt", 0.0)
            text.write(f"=== {title}: {total:.1f} s profiled (cProfile inflates)\n")
            stats.sort_stats("tottime").print_stats(20)
            stats.sort_stats("cumulative").print_stats(25)
        out.write_text(text.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("opcua-server")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tags", type=int, required=True)
    p = sub.add_parser("modbus-server")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--registers", type=int, required=True)
    p = sub.add_parser("bare-client")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--tags", type=int, required=True)
    p.add_argument("--handler", action="store_true")
    p = sub.add_parser("agent")
    p.add_argument("--profile", type=Path, required=True)
    p.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.role == "opcua-server":
        asyncio.run(opcua_server(args.port, args.tags))
    elif args.role == "modbus-server":
        asyncio.run(modbus_server(args.port, args.registers))
    elif args.role == "bare-client":
        asyncio.run(bare_client(args.endpoint, args.tags, args.handler))
    else:
        argv = [a for a in args.argv if a != "--"]
        profiled_agent(args.profile, argv)


if __name__ == "__main__":
    main()
