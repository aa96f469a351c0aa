"""`tieragent report|evidence|verify`: signed reports, their delivery, and audit evidence.

tieragent report --config FILE --period 2026-11-21 | 2026-11 | 2026   (from the agent's store)
tieragent report --config FILE --from 2026-03-01 --to 2026-03-31     (every day, see report_range)
    [--declarations D] [--benchmarks B] [--revision N --reason TEXT]
tieragent report build --outbox outbox.db --key-dir keys --base B.csv --inventory I.csv ...
tieragent report send --outbox outbox.db --broker mqtt://host:port --bureau-key JWK ...
tieragent report status --outbox outbox.db
tieragent report release --outbox outbox.db REPORT_ID | --all
tieragent evidence export --config FILE --period 2026 --out DIR
tieragent verify DIR   (an agent audit bundle or a bureau evidence folder)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import pandas as pd
import typer

from agent.audit_bundle import BundleReport, export_bundle, verify_bundle
from agent.config import load_config
from agent.outbox import ACKED, REJECTED, Outbox
from agent.protocol.chain import chain_slice
from agent.protocol.envelope import (
    EnvelopeError,
    public_jwk,
    sha256_hex,
    strict_loads,
    thumbprint,
)
from agent.protocol.keys import PRIVATE_NAME, load_private_key, read_passphrase
from agent.protocol.period import Period, PeriodError
from agent.protocol.report import ReportMeta
from agent.publisher import Publisher, PublisherSettings
from agent.reporter import (
    ReportContext,
    agent_version,
    build_period_report,
    check_period_over,
    commit_signed_report,
)
from agent.service_config import Reporting
from agent.store.store import Store
from indicators.policy import DEFAULT_POLICY, PolicyFiles, file_sha256
from tieragent.commands.report_range import build_range, range_days, report_release
from tieragent.console import (
    BENCHMARKS_OPTION,
    DECLARATIONS_OPTION,
    EXIT_FAILED,
    InvalidInput,
    err_console,
    handle_errors,
    print_verification,
)

report_app = typer.Typer(
    help="Build, queue and send signed reports.", invoke_without_command=True
)
evidence_app = typer.Typer(help="Export evidence bundles.", no_args_is_help=True)


def _file_digest(path: Path | None) -> str:
    if path is None:
        return sha256_hex(b"")
    try:
        return file_sha256(path)
    except OSError as error:  # name the option's file, not only the OS error
        raise InvalidInput(f"{path}: cannot read ({error.strerror}).") from None


def _period(key: str, kind: str, time_zone: str) -> Period:
    period = Period.parse(key, time_zone)
    if period.kind != kind:
        raise PeriodError(f"period {key!r} is a {period.kind}, not a {kind}")
    return period


def _existing_outbox(path: Path) -> Outbox:
    """An outbox that must exist already (send, status): a typo must not create an empty one."""
    if not path.is_file():
        raise InvalidInput(
            f"{path} does not exist: give the outbox that `tieragent report` queued into "
            "(<data-dir>/outbox.db)."
        )
    return Outbox(path)


def _store_db(data_dir: Path) -> Path:
    db = data_dir / "agent.db"
    if not db.is_file():
        raise InvalidInput(
            f"{db} does not exist: give the --data-dir of `tieragent run` or `tieragent backfill`."
        )
    return db


def _warn_missing_inputs(benchmarks: Path | None, declarations: Path | None) -> None:
    if declarations is None:
        err_console.print("[yellow]No --declarations:[/] declared conditions are not_declared.")
    if benchmarks is None:
        err_console.print(
            "[yellow]No --benchmarks:[/] benchmark conditions are insufficient_data."
        )


@handle_errors
def report_from_store(
    ctx: typer.Context,
    config_path: Path | None = typer.Option(None, "--config", help="Factory configuration."),
    period: str | None = typer.Option(None, "--period", help="2026-11-21, 2026-11 or 2026."),
    first_day: str | None = typer.Option(
        None, "--from", help="First day of a range (YYYY-MM-DD); every day to --to is built."
    ),
    last_day: str | None = typer.Option(None, "--to", help="Last day of the range (inclusive)."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Folder of agent.db."),
    key_dir: Path | None = typer.Option(
        None, "--key-dir", help="Agent key folder [default: reporting.key_dir; with a "
        "reporting: section <data-dir>/keys, else ./keys]."),
    policy: Path | None = typer.Option(
        None, "--policy", help="Tier policy YAML [default: reporting.policy, else packaged]."),
    benchmarks: Path | None = BENCHMARKS_OPTION,
    declarations: Path | None = DECLARATIONS_OPTION,
    bureau_id: str | None = typer.Option(
        None, "--bureau-id", help="Audience [default: reporting.bureau_id, else bureau]."),
    revision: int = typer.Option(
        0, "--revision", min=0, help="Correction revision of the period (needs --reason)."
    ),
    reason: str | None = typer.Option(
        None, "--reason", help="Why this revision corrects the period (stored in the report)."
    ),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file"),
) -> None:
    """Build, sign and queue the report of a period that is over (sub-commands: send, status,
    build)."""
    if ctx.invoked_subcommand is not None:
        return
    days = None
    if first_day is not None or last_day is not None:
        days = range_days(first_day, last_day, period)
        if revision or reason:
            raise InvalidInput("--revision and --reason are for one --period, not a range.")
    if config_path is None or (period is None and days is None):
        raise InvalidInput(
            "Give --config FILE and --period (2026-11-21, 2026-11 or 2026) or --from/--to."
        )
    config = load_config(config_path)
    # Flags first, then the configuration's `reporting:` section (the one `run` uses).
    reporting = config.reporting or Reporting()
    policy = policy or reporting.policy or DEFAULT_POLICY
    benchmarks = benchmarks or reporting.benchmarks
    declarations = declarations or reporting.declarations
    if key_dir is None:  # as `run` signs: reporting.key_dir, else <data-dir>/keys
        key_dir = reporting.key_dir or (
            data_dir / "keys" if config.reporting is not None else Path("keys"))
    bureau_id = bureau_id or reporting.bureau_id
    passphrase = read_passphrase(passphrase_file)
    if passphrase is None and passphrase_file is None and reporting.passphrase is not None:
        try:
            passphrase = reporting.passphrase.resolve().encode()
        except LookupError as error:
            raise InvalidInput(f"{config_path}: reporting.passphrase: {error}") from None
    try:
        loaded = PolicyFiles(policy, benchmarks, declarations).load()
        db = _store_db(data_dir)
        store = Store.open(db, config)
        try:
            outbox = Outbox(data_dir / "outbox.db")
            context = ReportContext(
                config=config, config_path=config_path, store=store, outbox=outbox,
                key_dir=key_dir, policy=loaded, bureau_id=bureau_id, passphrase=passphrase,
            )
            if days is not None:
                if build_range(context, days).built:
                    _warn_missing_inputs(benchmarks, declarations)
                return
            assert period is not None
            built = build_period_report(context, period, revision=revision, reason=reason)
        finally:
            store.close()
    except ValueError as error:  # not only PeriodError: any value the report cannot take
        raise InvalidInput(str(error)) from None
    item = built.item
    if not built.created:
        typer.echo(
            f"Already queued: report {item.report_id} for {period} (revision {revision}, "
            f"seq {item.seq}, state {item.state}); the store's data for it is unchanged, "
            "nothing was signed."
        )
        return
    _warn_missing_inputs(benchmarks, declarations)
    if not built.has_data:
        err_console.print(
            f"[yellow]No data:[/] the store has no sample for {period}; the report says so "
            "(coverage 0, every condition insufficient_data)."
        )
    typer.echo(f"Queued report {item.report_id} for {period}: seq {item.seq}, state {item.state}.")


@report_app.command("build")
@handle_errors
def report_build(
    outbox_path: Path = typer.Option(..., "--outbox", help="Outbox database (outbox.db)."),
    key_dir: Path = typer.Option(..., "--key-dir"),
    factory: str = typer.Option(..., "--factory"),
    enterprise: str = typer.Option(..., "--enterprise"),
    bureau_id: str = typer.Option("bureau", "--bureau-id"),
    period_kind: str = typer.Option("day", "--period-kind", help="day, month or year"),
    period: str = typer.Option(..., "--period", help="2025-03-01, 2025-03 or 2025"),
    time_zone: str = typer.Option("Asia/Shanghai", "--time-zone"),
    base_csv: Path = typer.Option(..., "--base", help="Hourly base measures (CSV)."),
    inventory_csv: Path = typer.Option(..., "--inventory", help="Device inventory (CSV)."),
    evaluation_json: Path | None = typer.Option(None, "--evaluation"),
    config: Path | None = typer.Option(None, "--config", help="Config file (digest only)."),
    policy: Path | None = typer.Option(None, "--policy", help="Policy file (digest only)."),
    revision: int = typer.Option(0, "--revision"),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file"),
) -> None:
    """Build, sign and queue the report of one period that is over."""
    if period_kind not in ("day", "month", "year"):
        raise InvalidInput(f"--period-kind {period_kind!r} is not day, month or year.")
    built_period = _period(period, period_kind, time_zone)
    check_period_over(built_period, Reporting().grace_s, time.time())
    key = load_private_key(key_dir / PRIVATE_NAME, read_passphrase(passphrase_file))
    meta = ReportMeta(
        factory_id=factory,
        enterprise_id=enterprise,
        bureau_id=bureau_id,
        agent_version=agent_version(),
        kid=thumbprint(public_jwk(key)),
        config_sha256=_file_digest(config),
        policy_sha256=_file_digest(policy),
        period=built_period,
        issued_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        revision=revision,
    )
    evaluation = strict_loads(evaluation_json.read_bytes()) if evaluation_json else {}
    item = commit_signed_report(
        Outbox(outbox_path),
        meta,
        key,
        inventory=pd.read_csv(inventory_csv),
        base=pd.read_csv(base_csv),
        evaluation=evaluation,
        segment_digests=[],
    )
    typer.echo(f"Queued report {item.report_id} seq {item.seq} ({item.state}).")


def _bureau_keys(path: Path) -> tuple[dict[str, str], ...]:
    try:
        value = strict_loads(path.read_bytes())
    except (OSError, EnvelopeError) as error:  # say which file it is
        raise InvalidInput(f"{path}: cannot read the bureau key ({error}).") from None
    items = value if isinstance(value, list) else [value]
    return tuple({"kty": k["kty"], "crv": k["crv"], "x": k["x"]} for k in items)


@report_app.command("send")
@handle_errors
def report_send(
    config_path: Path | None = typer.Option(
        None, "--config", help="Factory configuration: its delivery: section gives the "
        "defaults of every flag below."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir",
                                  help="With --config: the folder of outbox.db."),
    outbox_path: Path | None = typer.Option(
        None, "--outbox", help="Outbox database [default: <data-dir>/outbox.db]."),
    broker: str | None = typer.Option(None, "--broker",
                                      help="mqtt://host:port or mqtts://host:port"),
    factory: str | None = typer.Option(None, "--factory", help="[default: factory.factory_id]"),
    bureau_key: Path | None = typer.Option(None, "--bureau-key",
                                           help="Pinned bureau receipt JWK(s)."),
    protocol: str | None = typer.Option(None, "--protocol",
                                        help="auto, 5 or 3.1.1 [default: auto]"),
    window: int | None = typer.Option(None, "--window", help="[default: 16]"),
    keepalive_s: int | None = typer.Option(None, "--keepalive-s", help="[default: 30]"),
    receipt_timeout_s: float | None = typer.Option(None, "--receipt-timeout-s",
                                                   help="[default: 30]"),
    reconnect_min_s: float | None = typer.Option(None, "--reconnect-min-s", help="[default: 1]"),
    reconnect_max_s: float | None = typer.Option(None, "--reconnect-max-s",
                                                 help="[default: 60]"),
    until_drained: bool = typer.Option(False, "--until-drained", help="Exit when all acked."),
    timeout_s: float = typer.Option(0.0, "--timeout-s", help="Give up after this (0: never)."),
    ca_file: Path | None = typer.Option(None, "--ca-file"),
    cert_file: Path | None = typer.Option(None, "--cert-file"),
    key_file: Path | None = typer.Option(None, "--key-file"),
    username: str | None = typer.Option(None, "--username"),
    password_file: Path | None = typer.Option(None, "--password-file"),
) -> None:
    """Deliver queued reports; a report leaves the queue only on a signed bureau receipt.

    With --until-drained: exit 0 when every report is acknowledged, 1 when reports are left
    unacknowledged at the timeout or quarantined (rejected by the bureau)."""
    from tieragent.commands.run_service import check_delivery

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if protocol not in (None, "auto", "5", "3.1.1"):
        raise InvalidInput(f"--protocol {protocol!r} is not auto, 5 or 3.1.1.")
    base: PublisherSettings | None = None
    if config_path is not None:
        config = load_config(config_path)
        base = check_delivery(config, config_path)
        factory = factory or config.factory.factory_id
        outbox_path = outbox_path or data_dir / "outbox.db"
    missing = [flag for flag, value in (("--outbox", outbox_path), ("--factory", factory))
               if value is None]
    if base is None:
        missing += [flag for flag, value in (("--broker", broker), ("--bureau-key", bureau_key))
                    if value is None]
    if missing:
        raise InvalidInput(
            f"Give {', '.join(missing)}, or --config FILE with a delivery: section.")
    assert outbox_path is not None and factory is not None
    overrides: dict[str, Any] = {
        name: value for name, value in (
            ("broker_url", broker), ("protocol", protocol), ("window", window),
            ("keepalive_s", keepalive_s), ("receipt_timeout_s", receipt_timeout_s),
            ("reconnect_min_s", reconnect_min_s), ("reconnect_max_s", reconnect_max_s),
            ("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file),
            ("username", username), ("password_file", password_file),
        ) if value is not None
    }
    if bureau_key is not None:
        overrides["bureau_keys"] = _bureau_keys(bureau_key)
    if base is None:
        settings = PublisherSettings(factory_id=factory, **overrides)
    else:
        reporting = config.reporting or Reporting()  # rotations: as `run` delivers them
        settings = dataclasses.replace(base, factory_id=factory, **overrides,
                                       key_dir=reporting.key_dir or data_dir / "keys")
    outbox = _existing_outbox(outbox_path)
    publisher = Publisher(settings, outbox)
    publisher.start()
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
    try:
        while not stop.is_set():
            publisher.step(0.1)
            if until_drained and outbox.unacked() == 0:
                break
            if deadline is not None and time.monotonic() > deadline:
                break
    finally:
        publisher.stop()
    counts = outbox.counts()
    typer.echo(json.dumps({"outbox": counts, **publisher.metrics}, sort_keys=True))
    if until_drained and (outbox.unacked() or counts.get(REJECTED)):
        if counts.get(REJECTED):
            err_console.print(
                f"[red]{counts[REJECTED]} report(s) quarantined[/]: rejected by the bureau; "
                "`tieragent status` shows why, `tieragent report release` sends them again "
                "after the fix.")
        raise typer.Exit(EXIT_FAILED)


@report_app.command("status")
@handle_errors
def report_status(outbox_path: Path = typer.Option(..., "--outbox")) -> None:
    """Show the outbox: counts per state and every unacknowledged report."""
    outbox = _existing_outbox(outbox_path)
    typer.echo(json.dumps(outbox.counts(), sort_keys=True))
    for item in outbox.items():
        if item.state != ACKED:
            typer.echo(
                f"{item.factory_id} seq {item.seq} {item.period_slot} {item.state} "
                f"attempts={item.attempts} {item.last_error or ''}"
            )


def _within(key: str, period: str) -> bool:
    """Whether period key `key` is `period` or a period inside it (2026-03-14 in 2026-03)."""
    return key == period or key.startswith(period + "-")


@evidence_app.command("export")
@handle_errors
def evidence_export(
    config_path: Path = typer.Option(..., "--config", help="Factory configuration YAML."),
    period: str = typer.Option(
        ..., "--period", help="A year, month or day (2026, 2026-03, 2026-03-14): its reports and "
        "those of the periods inside it."),
    out: Path = typer.Option(..., "--out", help="New folder for the bundle."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Folder of agent.db/outbox.db."),
    key_dir: Path = typer.Option(Path("keys"), "--key-dir", help="Key directory (public keys)."),
) -> None:
    """Write an audit bundle: the period's signed reports and the raw segments behind them,
    with the other reports of the chain signed between them (month and year reports,
    revisions), so that the bundle's chain is contiguous."""
    from agent.reporter import segments_of_report

    config = load_config(config_path)
    try:
        period = Period.parse(period, config.factory.time_zone).key
    except PeriodError as error:  # "2026-1" would match October to December as a prefix
        raise InvalidInput(f"--period: {error}") from None
    store = Store.open(_store_db(data_dir), config)
    try:
        outbox = _existing_outbox(data_dir / "outbox.db")
        jwks = [json.loads((key_dir / "agent-key.jwk.json").read_text())]
        jwks += [json.loads(p.read_text()) for p in sorted(key_dir.glob("retired/*.jwk.json"))]
        items = outbox.items(config.factory.factory_id)
        chosen = [i for i in items if _within(i.period_slot.split("/")[1], period)]
        if not chosen:
            raise InvalidInput(
                f"No report in {data_dir / 'outbox.db'} for a period starting with {period!r}."
            )
        ids = {i.report_id for i in chosen}
        between = [
            i
            for i in chain_slice(items, lambda i: i.seq, (i.seq for i in chosen))
            if i.report_id not in ids
        ]
        manifest = export_bundle(
            out,
            [BundleReport(i.jws, i.receipt_jws) for i in chosen],
            jwks,
            segments_for=segments_of_report(store),
            chain=[BundleReport(i.jws, i.receipt_jws) for i in between],
        )
    except ValueError as error:  # e.g. a key file that is not JSON
        raise InvalidInput(str(error)) from None
    finally:
        store.close()
    others = (
        f", and the {len(between)} other report(s) of the chain between them (no raw segments)"
        if between
        else ""
    )
    typer.echo(
        f"Wrote {len(chosen)} report(s) with their raw segments{others} to {manifest.parent}."
    )


@handle_errors
def verify_command(
    bundle: Path = typer.Argument(..., help="Evidence bundle directory."),
    bureau_key: Path | None = typer.Option(
        None, "--bureau-key", help="The bureau's published public key (JWK): a bureau evidence "
        "folder's seal must verify with it."),
) -> None:
    """Verify an agent audit bundle or a bureau evidence folder, offline."""
    from bureau.evidence_verify import is_evidence_dir

    if is_evidence_dir(bundle):
        from tieragent.commands.bureau_annual import verify_evidence_command

        verify_evidence_command(bundle, bureau_key)
        return
    result = verify_bundle(bundle)
    print_verification(
        result.problems, f"{result.reports} report(s), {result.segments} raw segment(s)"
    )


def register(app: typer.Typer) -> None:
    """Add `report`, `evidence` and `verify` to the `tieragent` app."""
    report_app.callback()(report_from_store)
    report_app.command("release")(report_release)
    app.add_typer(report_app, name="report")
    app.add_typer(evidence_app, name="evidence")
    app.command("verify")(verify_command)
