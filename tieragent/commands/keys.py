"""`tieragent keys init|show|rotate`: the agent's Ed25519 signing key (0600, never logged)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from agent.config import load_config
from agent.instance_lock import InstanceLock
from agent.outbox import Outbox
from agent.protocol.keys import (
    PASSPHRASE_ENV,
    PRIVATE_NAME,
    init_keys,
    load_private_key,
    public_record,
    read_passphrase,
    rotate_keys,
)
from agent.service import OUTBOX_NAME
from agent.service_config import Reporting
from tieragent.console import InvalidInput, handle_errors

keys_app = typer.Typer(help="Manage the agent's Ed25519 signing key.", no_args_is_help=True)

_DIR = typer.Option(..., "--dir", help="Key directory (created if missing).")
_PASSFILE = typer.Option(
    None, "--passphrase-file", help=f"File holding the key passphrase (else ${PASSPHRASE_ENV})."
)


@keys_app.command("init")
@handle_errors
def keys_init(
    directory: Path = _DIR,
    passphrase_file: Path | None = _PASSFILE,
    force: bool = typer.Option(False, help="Overwrite an existing key (loses it)."),
) -> None:
    """Create a new signing key and print its public JWK and kid."""
    record = init_keys(directory, read_passphrase(passphrase_file), force=force)
    typer.echo(json.dumps(record, indent=2))


@keys_app.command("show")
@handle_errors
def keys_show(directory: Path = _DIR, passphrase_file: Path | None = _PASSFILE) -> None:
    """Print the public JWK and kid of the current key (never the private key)."""
    key = load_private_key(directory / PRIVATE_NAME, read_passphrase(passphrase_file))
    typer.echo(json.dumps(public_record(key), indent=2))


@keys_app.command("rotate")
@handle_errors
def keys_rotate(
    config_path: Path | None = typer.Option(
        None, "--config", help="Factory configuration: gives the factory, the key folder and, "
        "from the outbox, the first seq the new key signs."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir",
                                  help="With --config: the folder of outbox.db."),
    directory: Path | None = typer.Option(
        None, "--dir", help="Key folder [default: reporting.key_dir, else <data-dir>/keys]."),
    factory: str | None = typer.Option(None, "--factory", help="[default: factory.factory_id]"),
    effective_from_seq: int | None = typer.Option(
        None, "--effective-from-seq", min=1,
        help="First report seq under the new key [default with --config: the outbox's next]."),
    passphrase_file: Path | None = _PASSFILE,
) -> None:
    """Create a new key and a rotation statement signed by the old and the new key.

    The statement names the first report sequence number the new key signs; the bureau
    rejects reports by the old key from there on. With --config the agent's data directory
    is locked for the rotation, so no `tieragent run` signs with the old key meanwhile."""
    if config_path is None:
        missing = [flag for flag, value in (("--dir", directory), ("--factory", factory),
                                            ("--effective-from-seq", effective_from_seq))
                   if value is None]
        if missing:
            raise InvalidInput(f"Give {', '.join(missing)}, or --config FILE (and --data-dir).")
        assert directory is not None and factory is not None and effective_from_seq is not None
        record, statement = rotate_keys(directory, read_passphrase(passphrase_file),
                                        factory_id=factory, effective_from_seq=effective_from_seq)
        first_seq = effective_from_seq
    else:
        config = load_config(config_path)
        factory = factory or config.factory.factory_id
        reporting = config.reporting or Reporting()
        directory = directory or reporting.key_dir or data_dir / "keys"
        with InstanceLock(data_dir):
            next_seq = _next_seq(data_dir / OUTBOX_NAME, factory)
            if effective_from_seq is not None and effective_from_seq < next_seq:
                raise InvalidInput(
                    f"--effective-from-seq {effective_from_seq}: the outbox already holds seq "
                    f"{next_seq - 1} signed by the current key; give {next_seq} or more.")
            first_seq = effective_from_seq or next_seq
            record, statement = rotate_keys(directory, read_passphrase(passphrase_file),
                                            factory_id=factory, effective_from_seq=first_seq)
    typer.echo(json.dumps(record, indent=2))
    typer.echo(
        f"The new key signs from report seq {first_seq}. Rotation statement written to "
        f"{statement}: `tieragent run` and `report send` deliver it to the bureau (or give it "
        "to `tieragent bureau rotate --statement`); the old private key is deleted once the "
        "bureau acknowledges a report signed by the new key.", err=True)


def _next_seq(outbox_path: Path, factory_id: str) -> int:
    if not outbox_path.exists():
        return 1
    outbox = Outbox(outbox_path)
    try:
        return outbox.chain_head(factory_id)[0] + 1
    finally:
        outbox.close()
