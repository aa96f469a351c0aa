"""`tieragent sim`: serve the simulated factory, inject faults, generate history.

    tieragent sim --factory config/factories/demo.yaml [--profile compressed] [--seed N]
    tieragent sim fault freeze --device CNC-01 --control http://127.0.0.1:PORT
    tieragent sim history --factory F --start 2026-01-01 --end 2027-01-01 --out DIR
    tieragent sim certs --out pki/
    tieragent sim agent-config --factory F

Serving prints the OPC UA endpoint, the Modbus address and the control URL, then runs
until Ctrl-C or SIGTERM and exits 0. User mistakes print one clear message and exit 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from simulator.certs import (
    CLIENT_APPLICATION_URI,
    SERVER_APPLICATION_URI,
    ensure_certificate,
    generate_certificate,
)
from simulator.control import ControlError, send_command
from simulator.model import load_factory
from simulator.opcua_face import SECURITY_ENDPOINTS
from tieragent.console import InvalidInput, handle_errors

DEFAULT_ENDPOINTS = ("None", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt")
SECURITY_SHORTCUTS: dict[str, tuple[str, ...]] = {
    "none": ("None",),
    "default": DEFAULT_ENDPOINTS,
    "basic256sha256": ("Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"),
    "all": tuple(SECURITY_ENDPOINTS),
}

app = typer.Typer(
    help="Run the factory simulator: OPC UA and Modbus faces, faults, history.",
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


def _endpoints(security: list[str]) -> tuple[str, ...]:
    chosen: list[str] = []
    for name in security or ["default"]:
        expanded = SECURITY_SHORTCUTS.get(name.lower(), (name,))
        for endpoint in expanded:
            if endpoint not in SECURITY_ENDPOINTS:
                choices = sorted({*SECURITY_SHORTCUTS, *SECURITY_ENDPOINTS})
                raise InvalidInput(f"unknown --security {name!r}; choose from {', '.join(choices)}")
            if endpoint not in chosen:
                chosen.append(endpoint)
    return tuple(chosen)


def _users(pairs: list[str]) -> dict[str, str]:
    users: dict[str, str] = {}
    for pair in pairs:
        name, sep, password = pair.partition(":")
        if not sep or not name or not password:
            raise InvalidInput(f"--user wants NAME:PASSWORD, not {pair!r}")
        users[name] = password
    return users


@app.callback(invoke_without_command=True)
@handle_errors
def serve(
    ctx: typer.Context,
    factory: Path | None = typer.Option(None, "--factory", "-f", help="Factory YAML to simulate."),
    profile: str = typer.Option("normal", help="Time profile of the factory, e.g. compressed."),
    seed: int = typer.Option(0, help="Random seed: same seed, same factory behaviour."),
    host: str = typer.Option("127.0.0.1", help="Address both faces listen on."),
    opcua_port: int = typer.Option(4840, min=0, max=65535, help="OPC UA port (0 = any free)."),
    modbus_port: int = typer.Option(5020, min=0, max=65535, help="Modbus TCP port (0 = any free)."),
    control_port: int = typer.Option(0, min=0, max=65535, help="Control endpoint port (0 = any)."),
    ledger_dir: Path | None = typer.Option(None, help="Write the ground-truth ledger here."),
    security: list[str] = typer.Option(
        [],
        help="OPC UA endpoints (repeatable): none, default, basic256sha256, all, or a "
        "name such as Aes256_Sha256_RsaPss_SignAndEncrypt.",
    ),
    strict: bool = typer.Option(
        False, help="Offer only the chosen secure endpoints; no anonymous."
    ),
    user: list[str] = typer.Option([], help="OPC UA user NAME:PASSWORD (repeatable)."),
    pki_dir: Path = typer.Option(
        Path.home() / ".tieragent" / "sim-pki",
        help="Where the server certificate is created or reused.",
    ),
    tick: float = typer.Option(0.1, min=0.01, max=10.0, help="Seconds between value updates."),
    scale: int = typer.Option(0, min=0, help="Extra synthetic OPC UA tags, each changing at 1 Hz."),
    max_nodes_per_read: int = typer.Option(0, min=0, help="OPC UA limit (0 = none)."),
    max_monitored_items_per_call: int = typer.Option(0, min=0, help="OPC UA limit (0 = none)."),
    max_nodes_per_browse: int = typer.Option(0, min=0, help="OPC UA limit (0 = none)."),
    verbose: bool = typer.Option(False, help="Show the OPC UA / Modbus libraries' logs."),
) -> None:
    """Serve the factory over OPC UA and Modbus TCP until Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    if factory is None:
        raise InvalidInput("give the factory to simulate: tieragent sim --factory FILE.yaml")
    from simulator.live import LiveFactory
    from simulator.modbus_face import ModbusFaceConfig
    from simulator.opcua_face import OpcUaFaceConfig
    from simulator.opcua_server import OperationLimits

    model = load_factory(factory)
    try:
        model.profile(profile)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    endpoints = _endpoints(security)
    users = _users(user)
    tokens = [*([] if strict else ["anonymous"]), *(["username"] if users else [])]
    if strict and not users:
        tokens.append("certificate")
    certificate = private_key = None
    if any(name != "None" for name in endpoints):
        try:
            pair = ensure_certificate(pki_dir, "server", SERVER_APPLICATION_URI)
        except OSError as exc:
            raise InvalidInput(
                f"cannot write the server certificate into {pki_dir}: {exc}"
            ) from None
        certificate, private_key = pair.certificate, pair.private_key
    opcua = OpcUaFaceConfig(
        host=host,
        port=opcua_port,
        tick_s=tick,
        endpoints=endpoints,
        identity_tokens=tuple(tokens),
        users=users,
        strict=strict,
        certificate=certificate,
        private_key=private_key,
        scale_tags=scale,
        limits=OperationLimits(
            max_nodes_per_read, max_monitored_items_per_call, max_nodes_per_browse
        ),
    )
    problems = opcua.problems()
    if problems:
        raise InvalidInput("; ".join(problems))
    _quiet_libraries(verbose)
    from tieragent.clock import wall_clock

    clock = wall_clock()
    opcua = dataclasses.replace(opcua, clock=clock)
    live = LiveFactory(model, seed=seed, profile=profile, clock=clock)
    try:
        asyncio.run(
            _serve(
                live,
                opcua,
                ModbusFaceConfig(host=host, port=modbus_port, tick_s=tick, clock=clock),
                control_port,
                ledger_dir,
            )
        )
    except OSError as exc:  # a port in use, an unwritable ledger folder, ...
        raise InvalidInput(f"the simulator could not run: {exc}") from None


async def _serve(
    live: Any, opcua: Any, modbus: Any, control_port: int, ledger_dir: Path | None
) -> None:
    from simulator.server import SimulatorServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with SimulatorServer(
        live, opcua=opcua, modbus=modbus, control_port=control_port, ledger_dir=ledger_dir,
        clock=opcua.clock,
    ) as sim:
        assert sim.modbus_address is not None
        modbus_host, modbus_port = sim.modbus_address
        # Plain, flushed lines: scripts and tests read them from a pipe.
        print(f"OPC UA endpoint: {sim.opcua_endpoint}", flush=True)
        print(f"Modbus TCP: {modbus_host}:{modbus_port}", flush=True)
        print(f"Control: {sim.control_url}", flush=True)
        if ledger_dir is not None:
            print(f"Ledger: {ledger_dir}", flush=True)
        print("Serving; press Ctrl-C to stop.", flush=True)
        await stop.wait()
    with contextlib.suppress(BrokenPipeError):  # whoever read our output may be gone
        print("Stopped.", flush=True)


def _quiet_libraries(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.ERROR
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("asyncua", "pymodbus"):
        logging.getLogger(name).setLevel(level)


@app.command()
@handle_errors
def fault(
    action: str = typer.Argument(
        ...,
        help="stop, start, restart, freeze, unfreeze, reset_counters, opcua_status, "
        "modbus_exception, drop_connections, skew, suspend_notifications, resume_notifications, "
        "clear, status.",
    ),
    control: str = typer.Option(
        ..., envvar="TIERAGENT_SIM_CONTROL", help="Control URL printed by `tieragent sim`."
    ),
    device: str | None = typer.Option(None, help="Device id."),
    signal_id: str | None = typer.Option(None, "--signal", help="Signal id."),
    face: str | None = typer.Option(None, help="opcua or modbus (stop/start/restart/drop)."),
    status: str | None = typer.Option(
        None, help="OPC UA status, e.g. BadSensorFailure; omit = Good."
    ),
    code: int | None = typer.Option(None, help="Modbus exception code, e.g. 2 or 6; omit = clear."),
    unit: int | None = typer.Option(None, help="Modbus unit id (with --table and --address)."),
    table: str | None = typer.Option(
        None, help="Modbus table: coil, discrete_input, holding, input."
    ),
    address: int | None = typer.Option(None, help="Modbus address."),
    seconds: float | None = typer.Option(None, help="Timestamp skew in seconds (skew)."),
    down_s: float = typer.Option(0.0, help="Seconds to stay down (restart)."),
) -> None:
    """Inject a fault into a running simulator through its control endpoint."""
    aliases: dict[str, dict[str, Any]] = {
        "unfreeze": {"action": "freeze", "on": False},
        "resume_notifications": {"action": "suspend_notifications", "on": False},
    }
    command: dict[str, Any] = {"action": action.replace("-", "_")}
    command.update(aliases.get(command["action"], {}))
    fields = {
        "device": device,
        "signal": signal_id,
        "face": face,
        "status": status,
        "code": code,
        "unit": unit,
        "table": table,
        "address": address,
        "seconds": seconds,
    }
    command.update({key: value for key, value in fields.items() if value is not None})
    if command["action"] == "restart":
        command["down_s"] = down_s
    try:
        reply = send_command(control, command)
    except ControlError as exc:  # not in console.USER_ERRORS: simulator.control imports asyncua
        raise InvalidInput(str(exc)) from None
    out.print_json(json.dumps(reply))


def _epoch(day: str, zone: str, option: str) -> float:
    try:
        return datetime.fromisoformat(day).replace(tzinfo=ZoneInfo(zone)).timestamp()
    except ValueError:
        raise InvalidInput(f"{option} wants a date like 2026-01-01, not {day!r}") from None


@app.command()
@handle_errors
def history(
    factory: Path = typer.Option(..., "--factory", "-f", help="Factory YAML."),
    start: str = typer.Option(..., help="First day, e.g. 2026-01-01 (factory time zone)."),
    end: str = typer.Option(..., help="Day after the last, e.g. 2027-01-01 (factory time zone)."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for the ledger and samples."),
    seed: int = typer.Option(0, help="Random seed."),
    sample_interval: float = typer.Option(300.0, min=0.001, help="Seconds between samples."),
    profile: str = typer.Option("normal", help="Time profile."),
) -> None:
    """Generate a period of history offline: ledger plus the samples a collector stores."""
    from simulator.history import generate_history

    model = load_factory(factory)
    zone = model.identity.time_zone
    begin, finish = _epoch(start, zone, "--start"), _epoch(end, zone, "--end")
    if finish <= begin:
        raise InvalidInput("--end must be after --start")
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err) as progress:
        task = progress.add_task("devices", total=len(model.devices))

        def advance(device_id: str, done: int, total: int) -> None:
            progress.update(task, completed=done, description=f"devices ({device_id})")

        try:
            generate_history(
                model,
                out_dir,
                begin,
                finish,
                seed,
                sample_interval,
                progress=advance,
                profile=profile,
            )
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        except OSError as exc:
            raise InvalidInput(f"cannot write into {out_dir}: {exc}") from None
    out.print(f"wrote {out_dir}")


@app.command()
@handle_errors
def certs(
    out_dir: Path = typer.Option(Path("pki"), "--out", help="Folder for the certificates."),
    hostname: list[str] = typer.Option(["localhost"], help="DNS names in the certificates."),
    days: float = typer.Option(365.0, min=1.0, help="Validity in days."),
) -> None:
    """Create a server and a client certificate (DER) with private keys (PEM, mode 0600)."""
    try:
        server = generate_certificate(
            out_dir, "server", SERVER_APPLICATION_URI, hostnames=tuple(hostname), valid_days=days
        )
        client = generate_certificate(
            out_dir, "client", CLIENT_APPLICATION_URI, hostnames=tuple(hostname), valid_days=days
        )
    except OSError as exc:
        raise InvalidInput(f"cannot write into {out_dir}: {exc}") from None
    for role, pair in (("server", server), ("client", client)):
        out.print(f"{role}: {pair.certificate} {pair.private_key}", highlight=False)


@app.command("agent-config")
@handle_errors
def agent_config(
    factory: Path = typer.Option(..., "--factory", "-f", help="Factory YAML."),
    opcua_endpoint: str = typer.Option(
        "opc.tcp://127.0.0.1:4840", help="Simulator OPC UA endpoint."
    ),
    modbus_host: str = typer.Option("127.0.0.1", help="Simulator Modbus host."),
    modbus_port: int = typer.Option(5020, min=1, max=65535, help="Simulator Modbus port."),
    profile: str = typer.Option("normal", help="Time profile the simulator runs."),
) -> None:
    """Print the agent configuration (YAML) that collects this simulated factory."""
    from simulator.agent_config import render_agent_config

    model = load_factory(factory)
    try:
        text = render_agent_config(
            model,
            str(factory),
            opcua_endpoint=opcua_endpoint,
            modbus_host=modbus_host,
            modbus_port=modbus_port,
            profile=profile,
        )
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    sys.stdout.write(text)
