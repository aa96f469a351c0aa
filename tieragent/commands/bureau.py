"""`tieragent bureau`: run the receiver and manage enrolled keys.

tieragent bureau serve --db bureau.db --broker mqtt://127.0.0.1:1883 [--share-group G]
    [--ca-file CA.pem --cert-file CLIENT.pem --key-file CLIENT-KEY.pem]  (with mqtts://)

Every command that opens the bureau database takes `--db FILE` (SQLite, the default) or
PostgreSQL through TIERAGENT_BUREAU_DATABASE_URL=postgresql://... (or `--database-url`, for a
URL without a password); see tieragent/commands/bureau_store.py. Several `serve` processes
with one `--share-group` on one PostgreSQL split the reports between them.
tieragent bureau enroll --db bureau.db --factory F --jwk agent-key.jwk.json
tieragent bureau revoke --db bureau.db --kid KID
tieragent bureau rotate --db bureau.db --statement rotation-KID.json
tieragent bureau list --db bureau.db
tieragent bureau rejections --db bureau.db [--factory F] [--json]
tieragent bureau init-key --key bureau-key.pem   (once; never implicitly)
tieragent bureau show-key --key bureau-key.pem
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import typer
from joserfc.jwk import OKPKey
from rich.console import Console
from rich.table import Table

from agent.protocol.envelope import EnvelopeError, strict_loads
from agent.protocol.mqtt import BrokerError, parse_broker_url
from bureau.receipts import (
    BureauKeyMissing,
    bureau_public,
    create_bureau_key,
    load_bureau_key,
)
from bureau.receiver import Receiver, ReceiverSettings
from bureau.registry import KeyRegistry
from tieragent.commands.bureau_store import (
    DATABASE_URL_OPTION,
    DB_OPTION,
    database_target,
    describe,
    open_store,
)
from tieragent.console import InvalidInput, handle_errors

bureau_app = typer.Typer(help="The bureau side: receiver and key registry.", no_args_is_help=True)

_KEY = typer.Option(
    Path("bureau-key.pem"), "--key",
    help="Receipt-signing key (0600), made once by `tieragent bureau init-key`.")

@contextmanager
def _registry(db: Path | None, database_url: str | None) -> Iterator[KeyRegistry]:
    """The key registry of the bureau database, changed in one transaction."""
    store = open_store(db, database_url, must_exist=False)
    try:
        with store.transaction():
            yield KeyRegistry(store.db)
    finally:
        store.close()


@bureau_app.command("serve")
@handle_errors
def serve(
    db: Path | None = DB_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
    broker: str = typer.Option(..., "--broker", help="mqtt://host:port or mqtts://host:port"),
    key: Path = _KEY,
    bureau_id: str = typer.Option("bureau", "--bureau-id", help="This bureau's id (report aud)."),
    share_group: str | None = typer.Option(
        None, "--share-group",
        help="Share reports with the other receivers of this group "
        "($share/NAME/tieragent/v1/+/report); give them one PostgreSQL."),
    protocol: str = typer.Option(
        "auto", "--protocol", help="MQTT protocol: auto (5, then 3.1.1 if refused), 5 or 3.1.1."),
    client_id: str = typer.Option("tieragent-bureau", "--client-id"),
    reorder_timeout_s: float = typer.Option(86_400.0, help="Alert when a chain gap stays open."),
    ca_file: Path | None = typer.Option(None, "--ca-file", help="CA of the broker (mqtts://)."),
    cert_file: Path | None = typer.Option(None, "--cert-file", help="TLS client certificate."),
    key_file: Path | None = typer.Option(None, "--key-file", help="TLS client key."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Receive reports, verify, store, and answer each one with a signed receipt."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if protocol not in ("auto", "5", "3.1.1"):
        raise InvalidInput(f"--protocol {protocol!r} is not auto, 5 or 3.1.1.")
    parse_broker_url(broker)
    if share_group is not None and not _valid_share_group(share_group):
        raise InvalidInput(
            f"--share-group {share_group!r}: a name without '/', '+', '#' or spaces.")
    signing_key = _load_key(key)
    target = database_target(db, database_url)
    settings = ReceiverSettings(
        db=target,
        broker_url=broker,
        bureau_id=bureau_id,
        client_id=client_id,
        share_group=share_group,
        protocol=protocol,
        reorder_timeout_s=reorder_timeout_s,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
    )
    from tieragent.clock import wall_clock

    receiver = Receiver(settings, signing_key, clock=wall_clock())
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        receiver.start()
    except BrokerError:  # unreadable TLS files, or TLS files with mqtt://
        receiver.stop()
        raise
    group = f", share group {share_group}" if share_group else ""
    typer.echo(f"Bureau {bureau_id} receiving on {broker}{group} (db {describe(target)}).",
               err=True)
    while not stop.wait(1.0):
        receiver.tick()
    receiver.stop()
    typer.echo(json.dumps(dict(receiver.metrics), sort_keys=True), err=True)
    time.sleep(0)


@bureau_app.command("enroll")
@handle_errors
def enroll(
    factory: str = typer.Option(..., "--factory", help="Factory id issued by the bureau."),
    jwk: Path = typer.Option(..., "--jwk", help="The agent's public JWK file (keys show)."),
    db: Path | None = DB_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Register an agent's public key for a factory (offline enrollment)."""
    try:  # these errors do not name the file: add it
        value = strict_loads(jwk.read_bytes())
    except OSError as error:
        raise InvalidInput(f"{jwk}: cannot read ({error.strerror}).") from None
    except EnvelopeError as error:
        raise InvalidInput(f"{jwk}: {error}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{jwk}: not a JWK object.")
    with _registry(db, database_url) as registry:
        key = registry.enroll(factory, value)
    typer.echo(f"Enrolled key {key.kid} for factory {key.factory_id}.")


@bureau_app.command("revoke")
@handle_errors
def revoke(
    kid: str = typer.Option(..., "--kid"),
    db: Path | None = DB_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Revoke a key: reports received from now on with it are rejected."""
    with _registry(db, database_url) as registry:
        key = registry.revoke(kid)
    typer.echo(f"Revoked key {key.kid} of factory {key.factory_id}.")


@bureau_app.command("rotate")
@handle_errors
def rotate(
    statement: Path = typer.Option(..., "--statement"),
    db: Path | None = DB_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
) -> None:
    """Accept a key-rotation statement (signed by the old and the new key)."""
    with _registry(db, database_url) as registry:
        key = registry.apply_rotation(statement.read_bytes())
    typer.echo(f"Added key {key.kid} for factory {key.factory_id}.")


@bureau_app.command("list")
@handle_errors
def list_keys(
    db: Path | None = DB_OPTION, database_url: str | None = DATABASE_URL_OPTION
) -> None:
    """List enrolled keys and report counts per factory."""
    store = open_store(db, database_url)
    try:
        for key in KeyRegistry(store.db).enrolled():
            reports = len(store.reports(key.factory_id))
            typer.echo(f"{key.factory_id}\t{key.kid}\t{key.status}\t{reports} reports")
    finally:
        store.close()


@bureau_app.command("rejections")
@handle_errors
def rejections(
    db: Path | None = DB_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
    factory: str | None = typer.Option(None, "--factory", help="Only this factory."),
    as_json: bool = typer.Option(False, "--json", help="One JSON list, for scripts."),
) -> None:
    """List refused reports, oldest first: when, factory, period, report id, reason."""
    store = open_store(db, database_url)
    try:
        rows = store.rejections(factory)
        where = store.name
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(
            [{k: v for k, v in asdict(r).items() if k != "jws"} for r in rows], indent=2))
        return
    table = Table(title=f"Rejected reports in {where} ({len(rows)})")
    for name in ("received (UTC)", "factory", "period", "report", "reason", "detail"):
        table.add_column(name, overflow="fold")
    for r in rows:
        period = f"{r.period_kind} {r.period_key}" if r.period_kind else "—"
        table.add_row(
            datetime.fromtimestamp(r.received_at, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            r.factory_id or "—", period, r.report_id or "—", r.reason, r.detail)
    Console().print(table)


@bureau_app.command("show-key")
@handle_errors
def show_key(key: Path = _KEY) -> None:
    """Print the public JWK of the receipt-signing key (agents pin it)."""
    typer.echo(json.dumps(bureau_public(_load_key(key)), indent=2))


@bureau_app.command("init-key")
@handle_errors
def init_key(key: Path = _KEY) -> None:
    """Create the bureau's receipt-signing key (once; an existing file is never replaced)."""
    try:
        public = bureau_public(create_bureau_key(key))
    except FileExistsError as error:
        raise InvalidInput(str(error)) from None
    typer.echo(f"Created {key} (0600). Give agents its public key: tieragent bureau show-key "
               f"--key {key}")
    typer.echo(json.dumps(public, indent=2))


def _load_key(key: Path) -> OKPKey:
    try:
        return load_bureau_key(key)
    except BureauKeyMissing as error:
        raise InvalidInput(str(error)) from None


def _valid_share_group(name: str) -> bool:
    """MQTT 5 §4.8.2: a ShareName has no '/', '+' or '#'; spaces are refused here too."""
    return bool(name) and not any(c in name for c in "/+# \t")
