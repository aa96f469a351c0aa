"""`tieragent bureau`: run the receiver and manage enrolled keys.

tieragent bureau serve --db bureau.db --broker mqtt://127.0.0.1:1883 [--share-group G]
    [--ca-file CA.pem --cert-file CLIENT.pem --key-file CLIENT-KEY.pem]  (with mqtts://)
tieragent bureau enroll --db bureau.db --factory F --jwk agent-key.jwk.json
tieragent bureau revoke --db bureau.db --kid KID
tieragent bureau rotate --db bureau.db --statement rotation-KID.json
tieragent bureau list --db bureau.db
tieragent bureau show-key --key bureau-key.pem
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import typer

from agent.protocol.envelope import EnvelopeError, strict_loads
from agent.protocol.keys import KeyFileError
from agent.protocol.mqtt import BrokerError, parse_broker_url
from bureau.receipts import bureau_public, load_or_create_bureau_key
from bureau.receiver import Receiver, ReceiverSettings
from bureau.registry import KeyRegistry, RegistryError
from bureau.store import SqliteReportStore, StoreError

EXIT_INVALID = 2
bureau_app = typer.Typer(help="The bureau side: receiver and key registry.", no_args_is_help=True)

_DB = typer.Option(Path("bureau.db"), "--db", help="Bureau SQLite database.")
_KEY = typer.Option(Path("bureau-key.pem"), "--key", help="Receipt-signing key (0600; created).")


def _fail(message: str) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(EXIT_INVALID)


def _open(db: Path) -> SqliteReportStore:
    try:
        return SqliteReportStore(db)
    except StoreError as error:
        _fail(str(error))
        raise


@bureau_app.command("serve")
def serve(
    db: Path = _DB,
    broker: str = typer.Option(..., "--broker", help="mqtt://host:port or mqtts://host:port"),
    key: Path = _KEY,
    bureau_id: str = typer.Option("bureau", "--bureau-id", help="This bureau's id (report aud)."),
    share_group: str | None = typer.Option(None, "--share-group", help="$share group name."),
    protocol: str = typer.Option("5", "--protocol", help="MQTT protocol: 5 or 3.1.1."),
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
    if protocol not in ("5", "3.1.1"):
        _fail(f"--protocol {protocol!r} is not 5 or 3.1.1.")
    try:
        parse_broker_url(broker)
        signing_key = load_or_create_bureau_key(key)
    except (BrokerError, KeyFileError) as error:
        _fail(str(error))
        return
    settings = ReceiverSettings(
        db=db,
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
    try:
        receiver = Receiver(settings, signing_key)
    except StoreError as error:
        _fail(str(error))
        return
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        receiver.start()
    except BrokerError as error:  # unreadable TLS files, or TLS files with mqtt://
        receiver.stop()
        _fail(str(error))
        return
    typer.echo(f"Bureau {bureau_id} receiving on {broker} (db {db}).", err=True)
    while not stop.wait(1.0):
        receiver.tick()
    receiver.stop()
    typer.echo(json.dumps(dict(receiver.metrics), sort_keys=True), err=True)
    time.sleep(0)


@bureau_app.command("enroll")
def enroll(
    factory: str = typer.Option(..., "--factory", help="Factory id issued by the bureau."),
    jwk: Path = typer.Option(..., "--jwk", help="The agent's public JWK file (keys show)."),
    db: Path = _DB,
) -> None:
    """Register an agent's public key for a factory (offline enrollment)."""
    try:
        value = strict_loads(jwk.read_bytes())
    except OSError as error:
        _fail(f"{jwk}: cannot read ({error.strerror}).")
        return
    except EnvelopeError as error:
        _fail(f"{jwk}: {error}")
        return
    if not isinstance(value, dict):
        _fail(f"{jwk}: not a JWK object.")
        return
    store = _open(db)
    try:
        with store.transaction():
            key = KeyRegistry(store.db).enroll(factory, value)
    except RegistryError as error:
        _fail(str(error))
        return
    finally:
        store.close()
    typer.echo(f"Enrolled key {key.kid} for factory {key.factory_id}.")


@bureau_app.command("revoke")
def revoke(kid: str = typer.Option(..., "--kid"), db: Path = _DB) -> None:
    """Revoke a key: reports received from now on with it are rejected."""
    store = _open(db)
    try:
        with store.transaction():
            key = KeyRegistry(store.db).revoke(kid)
    except RegistryError as error:
        _fail(str(error))
        return
    finally:
        store.close()
    typer.echo(f"Revoked key {key.kid} of factory {key.factory_id}.")


@bureau_app.command("rotate")
def rotate(statement: Path = typer.Option(..., "--statement"), db: Path = _DB) -> None:
    """Accept a key-rotation statement (signed by the old and the new key)."""
    store = _open(db)
    try:
        with store.transaction():
            key = KeyRegistry(store.db).apply_rotation(statement.read_bytes())
    except (RegistryError, OSError) as error:
        _fail(str(error))
        return
    finally:
        store.close()
    typer.echo(f"Added key {key.kid} for factory {key.factory_id}.")


@bureau_app.command("list")
def list_keys(db: Path = _DB) -> None:
    """List enrolled keys and report counts per factory."""
    store = _open(db)
    try:
        for key in KeyRegistry(store.db).enrolled():
            reports = len(store.reports(key.factory_id))
            typer.echo(f"{key.factory_id}\t{key.kid}\t{key.status}\t{reports} reports")
    finally:
        store.close()


@bureau_app.command("show-key")
def show_key(key: Path = _KEY) -> None:
    """Print the public JWK of the receipt-signing key (agents pin it)."""
    try:
        typer.echo(json.dumps(bureau_public(load_or_create_bureau_key(key)), indent=2))
    except KeyFileError as error:
        _fail(str(error))
