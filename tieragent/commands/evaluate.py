"""`tieragent evaluate`: the tier evaluation of a period from the agent's own store."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from agent.assess import assess
from agent.config import load_config
from agent.protocol.period import Period
from agent.store.store import Store
from indicators.policy import PolicyFiles
from tieragent.console import (
    BENCHMARKS_OPTION,
    DECLARATIONS_OPTION,
    POLICY_OPTION,
    InvalidInput,
    err_console,
    handle_errors,
)
from tieragent.evaluation_view import evaluation_json, render_evaluation


@handle_errors
def evaluate_command(
    config_path: Path = typer.Option(..., "--config", help="Factory configuration YAML."),
    period: str = typer.Option(..., "--period", help="2026, 2026-11 or 2026-11-21 (local time)."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Folder of agent.db."),
    policy: Path = POLICY_OPTION,
    benchmarks: Path | None = BENCHMARKS_OPTION,
    declarations: Path | None = DECLARATIONS_OPTION,
    baseline: str | None = typer.Option(None, "--baseline", help="Baseline period, e.g. 2025."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Evaluate the tier conditions for a period from the measured base measures."""
    config = load_config(config_path)
    loaded = PolicyFiles(policy, benchmarks, declarations).load()
    start, end = Period.parse(period, config.factory.time_zone).bounds()
    baseline_bounds = (
        Period.parse(baseline, config.factory.time_zone).bounds() if baseline else None
    )
    db = data_dir / "agent.db"
    if not db.exists():
        raise InvalidInput(
            f"{db} does not exist: run `tieragent run` or `tieragent backfill` first."
        )
    store = Store.open(db, config)
    try:
        base = store.base_measures(start, end)
        baseline_base = store.base_measures(*baseline_bounds) if baseline_bounds else None
        inventory = store.inventory()
    finally:
        store.close()
    if base.empty:
        raise InvalidInput(f"No base measures in {db} for {period}.")
    evaluation = assess(config, base, inventory, loaded, baseline_base=baseline_base)
    if declarations is None:
        err_console.print("[yellow]No --declarations:[/] declared conditions are not_declared.")
    if benchmarks is None:
        err_console.print(
            "[yellow]No --benchmarks:[/] benchmark conditions are insufficient_data."
        )
    if as_json:
        typer.echo(evaluation_json(evaluation))
    else:
        render_evaluation(evaluation, Console())


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
