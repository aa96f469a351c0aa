"""`tieragent`: the one command. Sub-commands live next to the code they drive."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

from agent.config import json_schema
from tieragent.console import EXIT_INVALID, err_console, load_config_or_exit

app = typer.Typer(
    name="tieragent",
    help="Measured, signed evidence for smart-factory tier evaluation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()


@app.command("check-config")
def check_config(file: Path = typer.Argument(..., help="Factory configuration YAML.")) -> None:
    """Validate a factory configuration and print every problem with its key."""
    config = load_config_or_exit(file)
    connected = sum(1 for d in config.devices if d.connection != "none")
    signals = sum(len(d.signals) for d in config.devices)
    console.print(
        f"[green]OK[/] {file}: factory {config.factory.factory_id}, {len(config.devices)} devices "
        f"({connected} connected), {signals} signals, {len(config.connections)} connections"
    )


@app.command("config-schema")
def config_schema(
    out: Path = typer.Option(
        Path("config/schemas/config.schema.json"), help="Where to write the JSON Schema."
    ),
) -> None:
    """Write the JSON Schema of the factory configuration (for editors)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    console.print(f"wrote {out}")


@app.command("discover")
def discover_command(
    url: str = typer.Argument(..., help="opc.tcp://HOST:PORT of an OPC UA server."),
    timeout_s: float = typer.Option(10.0, "--timeout", help="Seconds for the whole browse."),
) -> None:
    """Browse an OPC UA server (security None) and print a signal map for the config."""
    import asyncio

    from pydantic import ValidationError

    from connectors.config import OpcUaConnection
    from connectors.discover import discover, render_signal_map
    from connectors.errors import ConnectorError

    try:
        OpcUaConnection(endpoint=url)  # the same endpoint check as the config
    except ValidationError as error:
        message = error.errors()[0]["msg"].removeprefix("Value error, ")
        err_console.print(f"[bold red]{message}[/]", highlight=False)
        raise typer.Exit(EXIT_INVALID) from None
    try:
        found = asyncio.run(discover(url, timeout_s=timeout_s))
    except (ValueError, ConnectorError, OSError, TimeoutError) as error:
        err_console.print(f"[bold red]Cannot discover {url}:[/] {error}", highlight=False)
        raise typer.Exit(EXIT_INVALID) from None
    typer.echo(render_signal_map(found))


@app.command("demo")
def demo(
    broker: str | None = typer.Option(
        None, "--broker", help="Use this MQTT broker (mqtt://host:port) instead of amqtt."
    ),
    out: Path = typer.Option(Path("demo-output"), "--out", help="Folder for everything made."),
    live_seconds: float = typer.Option(60.0, "--live-seconds", help="Live collection time."),
    year: int | None = typer.Option(None, "--year", help="Year to evaluate (default: this year)."),
    history_days: int | None = typer.Option(
        None, "--history-days", min=1, help="Only the last N days of history (quick runs)."
    ),
) -> None:
    """Simulator → agent → signed reports → bureau → verified annual evidence, in one go."""
    from datetime import date

    from tieragent.demo import DemoError, run_demo

    try:
        code = run_demo(
            out, broker, live_seconds, year or date.today().year, console,
            history_days=history_days,
        )
    except DemoError as error:
        err_console.print(f"[bold red]Demo failed:[/] {error}")
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def _register_subcommands() -> None:
    """Sub-apps are imported here, not at module top, so `check-config` stays fast."""
    from tieragent.commands import bureau_annual, evaluate, report, run
    from tieragent.commands.bureau import bureau_app
    from tieragent.commands.keys import keys_app
    from tieragent.commands.sim import app as sim_app

    run.register(app)
    evaluate.register(app)
    report.register(app)
    app.add_typer(keys_app, name="keys")
    app.add_typer(sim_app, name="sim", help="Run the factory simulator.")
    bureau_annual.register(bureau_app)
    app.add_typer(bureau_app, name="bureau", help="The bureau side: receiver, keys, evaluation.")


def main() -> None:
    _register_subcommands()
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
