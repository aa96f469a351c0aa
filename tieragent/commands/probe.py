"""`tieragent probe --config FILE`: read every mapped signal once and say what is wrong.

Each connection is opened once with the agent's own connector (`agent.runtime.build_connectors`,
OPC UA switched to polling so that the first read comes at once; Modbus reads as it always
does, isolating a failing address by bisection), so what probe reads is what `run` would
collect. Per device it prints each signal's value, quality (with the OPC UA status name or
the Modbus exception) and the problem, if any: a node the server does not know, a Modbus
exception, a state code outside the signal's state map, a value of the wrong kind.

Exit 0 when every signal read well, 1 when any signal or connection has a problem, 2 for a
configuration that does not load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from agent.config import Device, FactoryConfig, Signal, load_config
from connectors.base import Connector, LinkEvent, LinkState, SignalBinding
from connectors.config import OpcUaConnection
from connectors.sample import Quality, Sample
from connectors.status import MODBUS_EXCEPTIONS, opcua_status_name
from indicators.vocabulary import COUNTER_ROLES, Role
from tieragent.console import EXIT_FAILED, InvalidInput, handle_errors

console = Console()
NONE = "—"
# Modbus exception codes (Modbus Application Protocol 1.1b3, section 7).
_NODE_UNKNOWN = {"BadNodeIdUnknown", "BadNodeIdInvalid"}
_NOT_READABLE = {"BadNotReadable", "BadUserAccessDenied", "BadSecurityModeInsufficient"}


@dataclass(frozen=True)
class Row:
    device_id: str
    signal_id: str
    role: str
    value: str
    quality: str
    problem: str


@dataclass(frozen=True)
class Reading:
    """What one connection gave: the first sample of each signal, or why nothing came."""

    samples: dict[tuple[str, str], Sample]
    failure: str | None


async def read_once(
    connector: Connector, bindings: Sequence[SignalBinding], timeout_s: float
) -> Reading:
    """Run `connector` until every binding has a sample, the link fails, or `timeout_s`."""
    expected = {(b.device_id, b.signal_id) for b in bindings}
    got: dict[tuple[str, str], Sample] = {}
    failures: list[str] = []
    done = asyncio.Event()

    async def sink(batch: Sequence[Sample]) -> None:
        for sample in batch:
            got.setdefault((sample.device_id, sample.signal_id), sample)
        if expected <= got.keys():
            done.set()

    def links(event: LinkEvent) -> None:
        if event.state == LinkState.DISCONNECTED:
            failures.append(event.reason or "the connection was lost")
            done.set()

    task = asyncio.create_task(connector.run(sink, links))
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout_s)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 5.0)
    if not failures and not expected <= got.keys():
        failures.append(f"no reply within {timeout_s:g} s")
    return Reading(got, failures[0] if failures else None)


def _for_probe(config: FactoryConfig, timeout_s: float) -> FactoryConfig:
    """OPC UA connections poll (the first read comes at once) and wait at most `timeout_s`."""
    connections = {}
    for name, connection in config.connections.items():
        if isinstance(connection, OpcUaConnection):
            connection = connection.model_copy(
                update={
                    "mode": "poll",
                    "request_timeout_s": min(connection.request_timeout_s, timeout_s / 6),
                }
            )
        else:
            connection = connection.model_copy(
                update={"timeout_s": min(connection.timeout_s, timeout_s / 3)}
            )
        connections[name] = connection
    return config.model_copy(update={"connections": connections})


async def probe_config(config: FactoryConfig, timeout_s: float) -> dict[str, Reading]:
    """One `Reading` per used connection, all connections read at the same time."""
    from agent.runtime import bindings_by_connection, build_connectors

    probing = _for_probe(config, timeout_s)
    connectors = build_connectors(probing)
    bindings = bindings_by_connection(probing)
    names = list(connectors)
    readings = await asyncio.gather(
        *(read_once(connectors[name], bindings[name], timeout_s) for name in names)
    )
    return dict(zip(names, readings, strict=True))


def _bad(sample: Sample, opcua: bool) -> tuple[str, str]:
    """(quality text, problem) of a sample that is not good."""
    if opcua:
        name = opcua_status_name(sample.status)
        if name in _NODE_UNKNOWN:
            return f"bad {name}", "node not found: check opcua.node"
        if name in _NOT_READABLE:
            return f"bad {name}", "not readable: check the server's access rights for the agent"
        return f"{sample.quality.value} {name}", f"the server answers {name}"
    from connectors.modbus import STATUS_DECODE_ERROR

    if sample.status == STATUS_DECODE_ERROR:
        return "bad undecodable", "value cannot be decoded: check type, length and word order"
    meaning = MODBUS_EXCEPTIONS.get(sample.status, "unknown exception")
    quality = f"bad exception {sample.status:02d}"
    return quality, f"Modbus exception {sample.status:02d}: {meaning}; check modbus.table/address"


def shown(value: object) -> str:
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _value_problem(config: FactoryConfig, signal: Signal, value: object) -> str:
    """What is wrong with a good value for its role, or ''."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if signal.role == Role.STATE and signal.state_map is not None:
        if not isinstance(value, int) or isinstance(value, bool):
            return f"state value {shown(value)} is not an integer code"
        if value not in config.state_map(signal.state_map):
            return f"state code {value} not in state map {signal.state_map}"
    elif signal.role in COUNTER_ROLES or signal.role == Role.IDEAL_CYCLE_TIME_S:
        if not number:
            return f"{signal.role.value} needs a number, not {shown(value)}"
        assert isinstance(value, int | float)
        if signal.role == Role.IDEAL_CYCLE_TIME_S and not value > 0:
            return f"ideal cycle time {shown(value)} s is not positive"
        if signal.role in COUNTER_ROLES and value < 0:
            return f"counter {shown(value)} is negative"
    if signal.valid_range is not None:
        low, high = signal.valid_range
        if not number or not low <= value <= high:  # type: ignore[operator]
            return f"value {shown(value)} outside valid_range [{low:g}, {high:g}]"
    return ""


def device_rows(
    config: FactoryConfig, device: Device, reading: Reading, opcua: bool
) -> list[Row]:
    rows: list[Row] = []
    for signal in device.signals:
        sample = reading.samples.get((device.id, signal.id))
        role = signal.role.value
        if sample is None:
            why = reading.failure or "no value came"
            rows.append(Row(device.id, signal.id, role, NONE, "none", f"not read: {why}"))
            continue
        if sample.quality is Quality.GOOD:
            problem = _value_problem(config, signal, sample.value)
            quality = "good"
        else:
            quality, problem = _bad(sample, opcua)
        rows.append(Row(device.id, signal.id, role, shown(sample.value), quality, problem))
    return rows


def _table(title: str, rows: Sequence[Row]) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("signal", overflow="fold")
    table.add_column("role", overflow="fold")
    table.add_column("value", overflow="fold")
    table.add_column("quality", overflow="fold")
    table.add_column("problem", overflow="fold")
    for row in rows:
        style = "red" if row.problem else None
        table.add_row(
            row.signal_id, row.role, row.value, row.quality, row.problem or "ok", style=style
        )
    return table


def _quiet_libraries() -> None:
    """Probe reports every failure in its table; the libraries' own lines would repeat it."""
    for name in ("asyncua", "pymodbus", "connectors"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


@handle_errors
def probe(
    config_file: Path = typer.Option(..., "--config", help="Factory configuration YAML."),
    timeout_s: float = typer.Option(
        10.0, "--timeout", min=0.5, max=300.0, help="Seconds to wait for each connection."
    ),
) -> None:
    """Read every mapped signal once: value, quality and problem per device."""
    config = load_config(config_file, resolve_secrets=True)
    _quiet_libraries()
    try:
        started = time.monotonic()
        readings = asyncio.run(probe_config(config, timeout_s))
    except ValueError as exc:  # a binding the connector cannot serve (e.g. a bad node id)
        raise InvalidInput(f"{config_file}: {exc}") from None
    problems = signals = 0
    for name, reading in readings.items():
        opcua = isinstance(config.connections[name], OpcUaConnection)
        devices = [d for d in config.devices if d.connection == name]
        if reading.failure is not None and not reading.samples:
            problems += 1
            console.print(
                f"[bold red]connection {name}[/]: cannot read ({len(devices)} device(s)): "
                f"{reading.failure}",
                highlight=False,
            )
            continue
        for device in devices:
            rows = device_rows(config, device, reading, opcua)
            signals += len(rows)
            problems += sum(1 for row in rows if row.problem)
            console.print(_table(f"{device.id} ({name})", rows))
    idle = [d.id for d in config.devices if d.connection == "none"]
    if idle:
        console.print(f"Not connected (connection none): {', '.join(idle)}", highlight=False)
    took = time.monotonic() - started
    verdict = f"{problems} problem(s)" if problems else "all good"
    console.print(f"{signals} signal(s) read in {took:.1f} s: {verdict}.", highlight=False)
    if problems:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)
