"""`tieragent check-config|config-schema|discover`: write and check the factory configuration."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from agent.config import json_schema, load_config, secret_keys
from tieragent.console import InvalidInput, handle_errors

console = Console()


@handle_errors
def check_config(
    file: Path = typer.Argument(..., help="Factory configuration YAML."),
    secrets: bool = typer.Option(
        True,
        "--secrets/--no-secrets",
        help="Resolve every {env: ...}/{file: ...} secret as `run` will (--no-secrets: on a "
        "machine without the agent's environment).",
    ),
) -> None:
    """Validate a factory configuration and print every problem with its key."""
    config = load_config(file, resolve_secrets=secrets)
    connected = sum(1 for d in config.devices if d.connection != "none")
    signals = sum(len(d.signals) for d in config.devices)
    count = len(secret_keys(config))
    resolved = f", {count} secret(s) {'resolved' if secrets else 'not resolved'}" if count else ""
    console.print(
        f"[green]OK[/] {file}: factory {config.factory.factory_id}, {len(config.devices)} devices "
        f"({connected} connected), {signals} signals, {len(config.connections)} connections"
        f"{resolved}",
        soft_wrap=True,
    )


@handle_errors
def config_schema(
    out: Path = typer.Option(
        Path("config/schemas/config.schema.json"), help="Where to write the JSON Schema."
    ),
) -> None:
    """Write the JSON Schema of the factory configuration (for editors)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    console.print(f"wrote {out}")


@handle_errors
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
    except ValidationError as error:  # pydantic's wording, reduced to our sentence
        raise InvalidInput(error.errors()[0]["msg"].removeprefix("Value error, ")) from None
    try:
        found = asyncio.run(discover(url, timeout_s=timeout_s))
    except (ValueError, ConnectorError, OSError, TimeoutError) as error:
        raise InvalidInput(f"Cannot discover {url}: {error}") from None
    typer.echo(render_signal_map(found))


def register(app: typer.Typer) -> None:
    """Add `check-config`, `config-schema` and `discover` to the `tieragent` app."""
    app.command("check-config")(check_config)
    app.command("config-schema")(config_schema)
    app.command("discover")(discover_command)
