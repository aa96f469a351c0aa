"""`tieragent`: the one command. Sub-commands live next to the code they drive."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

from agent.config import ConfigError, json_schema, load_config

app = typer.Typer(
    name="tieragent",
    help="Measured, signed evidence for smart-factory tier evaluation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)

EXIT_INVALID = 2


def report_config_error(error: ConfigError) -> None:
    err_console.print(f"[bold red]Invalid configuration[/] ({len(error.problems)} problem(s)):")
    for problem in error.problems:
        err_console.print(
            f"  {problem.file}: [bold]{problem.key}[/]: {problem.message}", highlight=False
        )


@app.command("check-config")
def check_config(file: Path = typer.Argument(..., help="Factory configuration YAML.")) -> None:
    """Validate a factory configuration and print every problem with its key."""
    try:
        config = load_config(file)
    except ConfigError as error:
        report_config_error(error)
        raise typer.Exit(EXIT_INVALID) from None
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


def _register_subcommands() -> None:
    """Sub-apps are imported here, not at module top, so `check-config` stays fast."""
    from agent import evaluate_cli, report_cli, run_cli
    from bureau.cli import bureau_app
    from simulator.cli import app as sim_app

    run_cli.register(app)
    evaluate_cli.register(app)
    report_cli.register(app)
    app.add_typer(sim_app, name="sim", help="Run the factory simulator.")
    app.add_typer(bureau_app, name="bureau", help="The bureau side: receiver, keys, evaluation.")


def main() -> None:
    _register_subcommands()
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
