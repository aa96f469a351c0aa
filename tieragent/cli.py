"""`tieragent`: the one command. Sub-commands live next to the code they drive.

Errors are printed and mapped to exit codes in one place, `tieragent.console.handle_errors`,
which decorates every command (so `CliRunner` tests that invoke `app` or a sub-app see the
same messages and codes as the installed command).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import typer
from rich.console import Console

from tieragent.commands import config
from tieragent.console import EXIT_FAILED, err_console, handle_errors

app = typer.Typer(
    name="tieragent",
    help="Measured, signed evidence for smart-factory tier evaluation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
config.register(app)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tieragent")
    except PackageNotFoundError:  # a checkout that was never installed
        return "0+unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"tieragent {_version()}")
        raise typer.Exit()


@app.callback()
def _main(
    _show_version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Measured, signed evidence for smart-factory tier evaluation."""


@app.command("demo")
@handle_errors
def demo(
    broker: str | None = typer.Option(
        None, "--broker", help="Use this MQTT broker (mqtt://host:port) instead of amqtt."
    ),
    out: Path = typer.Option(Path("demo-output"), "--out", help="Folder for everything made."),
    live_seconds: float = typer.Option(20.0, "--live-seconds", help="Live collection time."),
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
    except DemoError as error:  # "Demo failed:", not "Error:": the demo says which step
        err_console.print(f"[bold red]Demo failed:[/] {error}")
        raise typer.Exit(EXIT_FAILED) from None
    raise typer.Exit(code)


@functools.cache  # once per process: `main` and tests both call it
def _register_subcommands() -> None:
    """Sub-apps are imported here, not at module top: importing this module stays light."""
    from tieragent.commands import (
        bureau_annual,
        bureau_log,
        bureau_users,
        bureau_web,
        evaluate,
        evidence_prove,
        init,
        probe,
        report,
        run,
        status,
    )
    from tieragent.commands.bureau import bureau_app
    from tieragent.commands.keys import keys_app
    from tieragent.commands.sim import app as sim_app

    run.register(app)
    init.register(app)
    probe.register(app)
    evaluate.register(app)
    report.register(app)
    evidence_prove.register(report.evidence_app)
    status.register(app)
    app.add_typer(keys_app, name="keys")
    app.add_typer(sim_app, name="sim", help="Run the factory simulator.")
    bureau_annual.register(bureau_app)
    bureau_log.register(bureau_app)
    bureau_web.register(bureau_app)
    bureau_users.register(bureau_app)
    app.add_typer(bureau_app, name="bureau", help="The bureau side: receiver, keys, evaluation.")


def main() -> None:
    if sys.argv[1:2] == ["run"]:
        # The collecting process stays up for years: it loads its own command only, not
        # the bureau, report and evaluation code (and pandas) the other commands import.
        from tieragent.commands import run

        run.register(app)
    else:
        _register_subcommands()
    try:
        app()
    except KeyboardInterrupt:  # Typer exits 130 on Ctrl-C in a command; this covers start-up
        sys.exit(130)


if __name__ == "__main__":
    main()
