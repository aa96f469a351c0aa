"""`tieragent report --from D --to D` and `tieragent report release`: the outbox by the day.

tieragent report --config FILE --from 2026-03-01 --to 2026-03-31   (every day, oldest first)
tieragent report release --outbox outbox.db REPORT_ID | --all     (quarantine -> pending)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agent.errors import AgentError
from agent.outbox import REJECTED, Outbox
from agent.reporter import (
    PeriodNotOver,
    PeriodReport,
    ReportContext,
    build_period_reports,
    days_between,
)
from tieragent.console import EXIT_INVALID, InvalidInput, err_console, handle_errors, print_error


def _day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{option} {value!r} is not a day (YYYY-MM-DD).") from None


def range_days(first: str | None, last: str | None, period: str | None) -> list[str]:
    """The days `--from`/`--to` ask for, oldest first; both are needed, `--period` excluded."""
    if period is not None:
        raise InvalidInput(
            "Give either --period (one period) or --from/--to (every day in a range), not both."
        )
    if first is None or last is None:
        raise InvalidInput("Give both --from and --to (YYYY-MM-DD, inclusive).")
    begin, end = _day(first, "--from"), _day(last, "--to")
    if end < begin:
        raise InvalidInput(f"--to {last} is before --from {first}.")
    return days_between(begin, end)


@dataclass
class RangeSummary:
    built: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)  # already queued, data unchanged
    empty: list[str] = field(default_factory=list)  # built or queued, without any sample

    def line(self) -> str:
        def days(items: list[str]) -> str:
            if not items:
                return ""
            return f" ({items[0]})" if len(items) == 1 else f" ({items[0]} … {items[-1]})"

        return (
            f"Built {len(self.built)} day report(s){days(self.built)}, "
            f"{len(self.queued)} already queued and unchanged, "
            f"{len(self.empty)} without data{days(self.empty)}."
        )


def build_range(context: ReportContext, days: list[str]) -> RangeSummary:
    """Build every day of `days` in order; stop at the first day not over (exit 2) or at the
    first error, after saying what was done."""
    summary = RangeSummary()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    stopped: AgentError | None = None
    with Progress(*columns, console=err_console, disable=not err_console.is_terminal) as bar:
        task = bar.add_task("days", total=len(days))

        def record(day: str, built: PeriodReport) -> None:
            (summary.built if built.created else summary.queued).append(day)
            if not built.has_data:
                summary.empty.append(day)
            bar.update(task, advance=1, description=f"day {day}")

        try:
            # One batch: the key, inventory and base measures are read once, and long
            # ranges compute days ahead in worker processes (agent.reporter).
            build_period_reports(context, days, record)
        except AgentError as error:  # PeriodNotOver, PeriodDataChanged, …
            stopped = error
    typer.echo(summary.line())
    if stopped is not None:
        typer.echo(f"Built: {', '.join(summary.built) or 'none'}.")
        done = len(summary.built) + len(summary.queued)
        print_error(f"stopped at day {days[done]}: {stopped}")
        if isinstance(stopped, PeriodNotOver) and done < len(days):
            err_console.print(
                f"{len(days) - done} day(s) from {days[done]} on were not built; run again "
                "once they are over.", highlight=False,
            )
        raise typer.Exit(stopped.exit_code)
    return summary


@handle_errors
def report_release(
    report_ids: list[str] | None = typer.Argument(None, help="Report id(s) to release."),
    outbox_path: Path = typer.Option(..., "--outbox", help="Outbox database (outbox.db)."),
    release_all: bool = typer.Option(False, "--all", help="Release every quarantined report."),
) -> None:
    """Send quarantined (rejected) reports again, once the cause of the rejection is fixed."""
    ids = list(report_ids or [])
    if bool(ids) == release_all:
        raise InvalidInput("Give the REPORT_ID(s) to release, or --all (not both).")
    if not outbox_path.is_file():
        raise InvalidInput(
            f"{outbox_path} does not exist: give the outbox that `tieragent report` queued into "
            "(<data-dir>/outbox.db)."
        )
    outbox = Outbox(outbox_path)
    try:
        items = {item.report_id: item for item in outbox.items()}
        if release_all:
            ids = [i for i, item in items.items() if item.state == REJECTED]
            if not ids:
                typer.echo(f"No quarantined report in {outbox_path}; nothing released.")
                return
        unknown = [i for i in ids if i not in items]
        if unknown:
            raise InvalidInput(
                f"{outbox_path} has no report {', '.join(unknown)}: see `tieragent report "
                "status` or `tieragent status` for the quarantined reports' ids."
            )
        not_rejected = [i for i in ids if items[i].state != REJECTED]
        if not_rejected:
            raise InvalidInput(
                "not quarantined, nothing released: "
                + ", ".join(f"{i} is {items[i].state}" for i in not_rejected)
                + "; only rejected reports can be released."
            )
        for report_id in ids:
            item = items[report_id]
            if not outbox.release(report_id):  # another process changed it meanwhile
                print_error(f"{report_id} is no longer rejected; not released.")
                raise typer.Exit(EXIT_INVALID)
            typer.echo(
                f"Released {report_id} ({item.factory_id} seq {item.seq} {item.period_slot}; "
                f"was rejected: {item.last_error or 'no reason given'}) -> pending."
            )
    finally:
        outbox.close()
    typer.echo(f"{len(ids)} report(s) pending again; `tieragent report send` resends them.")
