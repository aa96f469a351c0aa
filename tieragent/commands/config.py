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
    timeout_s: float = typer.Option(10.0, "--timeout", help="Seconds per request."),
    write_config: Path | None = typer.Option(
        None, "--write-config", help="Write a whole configuration draft to this file."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite --write-config's file."),
    observe_s: float = typer.Option(
        0.0, "--observe", min=0.0, max=600.0,
        help="Also watch integer values this many seconds (better state map guesses).",
    ),
    security_policy: str = typer.Option(
        "None", "--security-policy",
        help="None, Basic256Sha256, Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss.",
    ),
    mode: str | None = typer.Option(None, "--mode", help="Sign or SignAndEncrypt."),
    cert: Path | None = typer.Option(None, "--cert", help="Client certificate (DER or PEM)."),
    private_key: Path | None = typer.Option(None, "--private-key", help="Its private key (PEM)."),
    pki_dir: Path | None = typer.Option(
        None, "--pki-dir", help="Trust list folder (default: <folder of --cert>/pki)."
    ),
    username: str | None = typer.Option(None, "--username", help="OPC UA user name."),
    password_env: str | None = typer.Option(
        None, "--password-env", help="Environment variable holding the password."
    ),
) -> None:
    """Browse an OPC UA server and print its devices and signals as configuration."""
    from connectors.discover import render_devices
    from tieragent.commands.init import (
        Draft,
        OpcUaTarget,
        check_endpoint,
        discover_devices,
        security_from_options,
    )
    from tieragent.commands.init import write_config as write_draft

    check_endpoint(url)
    security = security_from_options(
        security_policy, mode, cert, private_key, pki_dir, username, password_env
    )
    if write_config is not None and write_config.exists() and not force:
        raise InvalidInput(f"{write_config} exists; give --force to overwrite it")
    target = OpcUaTarget("opcua-1", url, security)
    target.devices = discover_devices(url, security, timeout_s, observe_s)
    if write_config is None:
        from tieragent.commands.init import connection_lines

        draft = Draft("", "", "", opcua=[target])
        lines = [
            f"# {url}: {len(target.devices)} object(s) with variables. Roles and state maps",
            "# are guesses: check every `# check:` line. Paste into a configuration.",
            *connection_lines(draft),
            "devices:",
            *render_devices(target.devices, target.name),
        ]
        typer.echo("\n".join(lines))
        return
    draft = Draft("CHANGE-ME", "CHANGE-ME", "CHANGE-ME", opcua=[target],
                  source=f"tieragent discover {url}")
    config = write_draft(draft, write_config, force)
    signals = sum(len(d.signals) for d in config.devices)
    console.print(
        f"Wrote {write_config}: {len(config.devices)} device(s), {signals} signal(s). "
        f"Correct the lines marked # CHANGE ME, then: tieragent check-config {write_config}",
        soft_wrap=True, highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add `check-config`, `config-schema` and `discover` to the `tieragent` app."""
    app.command("check-config")(check_config)
    app.command("config-schema")(config_schema)
    app.command("discover")(discover_command)
