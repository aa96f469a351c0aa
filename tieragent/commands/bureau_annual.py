"""`tieragent bureau evaluate|evidence|verify-evidence`: the annual evaluation at the bureau.

tieragent bureau evaluate --db bureau.db --factory F --year 2026 [--policy P] [--benchmarks B]
    [--declarations D] [--baseline-year 2025] [--through 2026-06-30] [--json]
tieragent bureau evidence --db bureau.db --factory F --year 2026 --out DIR [same options]
tieragent bureau verify-evidence DIR

User mistakes (unknown factory, no reports, unreadable or invalid files, a non-empty output
folder) print one sentence and exit 2; a failed verification exits 1.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import typer
from joserfc.jwk import OKPKey
from rich.console import Console
from rich.table import Table

from bureau.annual import AnnualEvaluation
from bureau.evidence_export import evaluate_from_store, export_evidence
from bureau.evidence_verify import verify_evidence_dir
from bureau.store import SqlReportStore
from indicators.policy import PolicyFiles
from tieragent.commands.bureau_store import DATABASE_URL_OPTION, DB_OPTION, open_store
from tieragent.console import (
    BENCHMARKS_OPTION,
    DECLARATIONS_OPTION,
    POLICY_OPTION,
    InvalidInput,
    handle_errors,
    print_verification,
)
from tieragent.evaluation_view import render_evaluation

_FACTORY = typer.Option(..., "--factory", help="Factory id.")
_YEAR = typer.Option(..., "--year", help="Calendar year evaluated.")
_BASE = typer.Option(
    None, "--baseline-year", help="Baseline year (default: the declarations' baseline)."
)
_THROUGH = typer.Option(
    None, "--through", help="Last day evaluated, YYYY-MM-DD (default: Dec 31 or yesterday)."
)
_INDUSTRY = typer.Option(None, "--industry-code", help="Override the reports' industry code.")
_PROVINCE = typer.Option(None, "--province", help="Override the reports' province.")


def _open(db: Path | None, database_url: str | None) -> SqlReportStore:
    return open_store(db, database_url)


def _existing(path: Path | None, what: str) -> Path | None:
    if path is not None and not path.is_file():
        raise InvalidInput(f"{path}: the {what} file does not exist.")
    return path


def _through(year: int, through: str | None) -> date | None:
    if through is not None:
        try:
            return date.fromisoformat(through)
        except ValueError:
            raise InvalidInput(f"--through {through!r} is not a date (YYYY-MM-DD).") from None
    # A year still running is evaluated up to its last complete day (bureau time zone: China).
    yesterday = datetime.now(ZoneInfo("Asia/Shanghai")).date() - timedelta(days=1)
    return yesterday if yesterday.year == year else None


def _baseline_year(year: int, option: int | None, declarations: Path | None) -> int | None:
    if option is not None:
        return option
    if declarations is not None:
        from indicators.evaluate import load_declarations

        baseline = load_declarations(declarations).baseline
        if baseline is not None and baseline.period.isdigit() and int(baseline.period) < year:
            return int(baseline.period)
    return year - 1


def _run(
    db: Path | None,
    database_url: str | None,
    factory: str,
    year: int,
    policy: Path,
    benchmarks: Path | None,
    declarations: Path | None,
    baseline_year: int | None,
    through: str | None,
    industry_code: str | None,
    province: str | None,
    out: Path | None = None,
    key: Path | None = None,
) -> AnnualEvaluation:
    files = PolicyFiles(
        _existing(policy, "policy") or policy,
        _existing(benchmarks, "benchmarks"),
        _existing(declarations, "declarations"),
    )
    overrides: dict[str, Any] = {}
    if industry_code is not None:
        overrides["industry_code"] = industry_code
    if province is not None:
        overrides["province"] = province
    store = _open(db, database_url)
    try:
        files.load()  # file problems first, whatever the store holds
        baseline = _baseline_year(year, baseline_year, declarations)
        last = _through(year, through)
        if out is not None:
            assert key is not None
            return export_evidence(
                store,
                factory,
                year,
                out,
                files,
                baseline_year=baseline,
                through=last,
                overrides=overrides,
                bureau_key=_bureau_key(key),
            ).evaluation
        result, _, _ = evaluate_from_store(
            store, factory, year, files, baseline_year=baseline, through=last, overrides=overrides
        )
        return result
    finally:
        store.close()


@handle_errors
def evaluate_command(
    db: Path | None = DB_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
    factory: str = _FACTORY,
    year: int = _YEAR,
    policy: Path = POLICY_OPTION,
    benchmarks: Path | None = BENCHMARKS_OPTION,
    declarations: Path | None = DECLARATIONS_OPTION,
    baseline_year: int | None = _BASE,
    through: str | None = _THROUGH,
    industry_code: str | None = _INDUSTRY,
    province: str | None = _PROVINCE,
    as_json: bool = typer.Option(False, "--json", help="Print the evaluation as JSON."),
) -> None:
    """Evaluate a factory's year from its accepted daily reports."""
    result = _run(
        db,
        database_url,
        factory,
        year,
        policy,
        benchmarks,
        declarations,
        baseline_year,
        through,
        industry_code,
        province,
    )
    if as_json:
        typer.echo(json.dumps(result.to_json(), ensure_ascii=False, sort_keys=True, indent=2))
        return
    console = Console()
    render_summary(result, console)
    render_evaluation(result.evaluation, console)


@handle_errors
def evidence_command(
    db: Path | None = DB_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
    factory: str = _FACTORY,
    year: int = _YEAR,
    out: Path = typer.Option(..., "--out", help="Evidence folder to create (new or empty)."),
    key: Path = typer.Option(
        Path("bureau-key.pem"), "--key", help="The bureau's key, which seals the folder."),
    policy: Path = POLICY_OPTION,
    benchmarks: Path | None = BENCHMARKS_OPTION,
    declarations: Path | None = DECLARATIONS_OPTION,
    baseline_year: int | None = _BASE,
    through: str | None = _THROUGH,
    industry_code: str | None = _INDUSTRY,
    province: str | None = _PROVINCE,
) -> None:
    """Write the evidence folder: signed reports, keys, evaluation, manifest, HTML and PDF
    report."""
    result = _run(
        db,
        database_url,
        factory,
        year,
        policy,
        benchmarks,
        declarations,
        baseline_year,
        through,
        industry_code,
        province,
        out,
        key,
    )
    typer.echo(
        f"Wrote the evidence of {factory} {result.first_day}..{result.last_day} to {out} "
        f"(open {out / 'report.html'} or print {out / 'report.pdf'}; check with "
        f"`tieragent verify {out}`)."
    )


@handle_errors
def verify_evidence_command(
    directory: Path = typer.Argument(..., help="Evidence folder."),
    bureau_key: Path | None = None,
) -> None:
    """Verify an evidence folder offline; exit 1 and name every problem if anything differs."""
    if not (directory / "manifest.json").is_file():
        raise InvalidInput(f"{directory}: no manifest.json; not an evidence folder.")
    pinned = None
    if bureau_key is not None:
        from agent.service import read_bureau_keys

        try:
            pinned = list(read_bureau_keys(bureau_key))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InvalidInput(
                f"--bureau-key {bureau_key}: not the bureau's public key JWK ({error}); save "
                "what `tieragent bureau show-key` prints") from None
    result = verify_evidence_dir(directory, pinned)
    for note in result.notes:
        typer.echo(note)
    print_verification(
        result.problems,
        f"{result.reports} signed report(s), {result.numbers} number(s) in report.html",
    )


def render_summary(result: AnnualEvaluation, console: Console) -> None:
    """Period, coverage per month, chain gaps and rejections."""
    coverage = result.coverage
    baseline = (
        f"baseline {result.baseline['year']} ({result.baseline['days']} day(s))"
        if result.baseline.get("year") is not None
        else "no baseline year"
    )
    console.print(
        f"[bold]{result.factory_id}[/] {result.first_day} .. {result.last_day} "
        f"({result.time_zone}); {baseline}"
    )
    table = Table(
        title="Coverage 覆盖率 (days with an accepted daily report)", title_justify="left"
    )
    for name in ("Month", "Days", "Accepted", "Missing", "No data", "Rejected", "Pending link",
                 "Share", ""):
        # Headers wrap at 80 columns rather than being cut ("Accept…").
        table.add_column(name, justify="right" if name not in ("Month", "") else "left",
                         overflow="fold")
    for month in [*coverage["months"], {**coverage, "month": "total"}]:
        table.add_row(
            month["month"],
            str(month["days"]),
            str(month["accepted"]),
            str(month["missing"]),
            str(month["no_data"]),
            str(month["rejected"]),
            str(month["pending_link"]),
            f"{month['share']:.1%}",
            "ok" if month["ok"] else f"[bold yellow]below {coverage['min_day_share']:.0%}[/]",
        )
    console.print(table)
    if result.chain["gaps"]:
        gaps = ", ".join(f"{g['after_seq']}→{g['next_seq']}" for g in result.chain["gaps"])
        console.print(f"[yellow]Chain gaps 链缺口:[/] {gaps}")
    for rejection in result.chain["rejections"]:
        console.print(
            f"[red]Rejected 拒绝:[/] {rejection['period_key']} {rejection['reason']} "
            f"({rejection['report_id']})",
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    """Add `evaluate`, `evidence` and `verify-evidence` to the `tieragent bureau` app."""
    app.command("evaluate")(evaluate_command)
    app.command("evidence")(evidence_command)
    app.command("verify-evidence")(verify_evidence_command)


def _bureau_key(path: Path) -> OKPKey:
    from bureau.receipts import BureauKeyMissing, load_bureau_key

    try:
        return load_bureau_key(path)
    except BureauKeyMissing as error:
        raise InvalidInput(str(error)) from None
