"""`tieragent report --config FILE --period 2026-11-21 | 2026-11 | 2026`: from the store."""

from __future__ import annotations

from pathlib import Path

import typer

from agent.outbox import Outbox, OutboxError
from agent.protocol.keys import KeyFileError, read_passphrase
from agent.protocol.period import PeriodError
from agent.protocol.report import ReportError
from agent.reporter import ReportContext, build_period_report
from agent.store.store import Store, StoreError
from indicators.policy import (
    DEFAULT_POLICY,
    EXAMPLE_BENCHMARKS,
    EXAMPLE_DECLARATIONS,
    PolicyFileError,
    PolicyFiles,
)
from tieragent.console import EXIT_INVALID, err_console, load_config_or_exit


def report_from_store(
    ctx: typer.Context,
    config_path: Path | None = typer.Option(None, "--config", help="Factory configuration."),
    period: str | None = typer.Option(None, "--period", help="2026-11-21, 2026-11 or 2026."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Folder of agent.db."),
    key_dir: Path = typer.Option(Path("keys"), "--key-dir", help="Agent key folder."),
    policy: Path = typer.Option(DEFAULT_POLICY, "--policy", help="Tier policy YAML."),
    bureau_id: str = typer.Option("bureau", "--bureau-id", help="Audience (the bureau's id)."),
    revision: int = typer.Option(0, "--revision", help="Correction revision of the period."),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file"),
) -> None:
    """Build, sign and queue the report of a period (sub-commands: send, status, build)."""
    if ctx.invoked_subcommand is not None:
        return
    err = err_console
    if config_path is None or period is None:
        err.print("Give --config FILE and --period (2026-11-21, 2026-11 or 2026).")
        raise typer.Exit(EXIT_INVALID)
    config = load_config_or_exit(config_path)
    try:
        loaded = PolicyFiles(policy, EXAMPLE_BENCHMARKS, EXAMPLE_DECLARATIONS).load()
        store = Store.open(data_dir / "agent.db", config)
        outbox = Outbox(data_dir / "outbox.db")
        context = ReportContext(
            config=config, config_path=config_path, store=store, outbox=outbox,
            key_dir=key_dir, policy=loaded, bureau_id=bureau_id,
            passphrase=read_passphrase(passphrase_file),
        )
        item = build_period_report(context, period, revision=revision)
    except (PolicyFileError, PeriodError, ValueError, StoreError, OutboxError, KeyFileError,
            ReportError, OSError) as error:
        err.print(str(error), markup=False, highlight=False)
        raise typer.Exit(EXIT_INVALID) from None
    typer.echo(f"Queued report {item.report_id} for {period}: seq {item.seq}, state {item.state}.")
