"""`tieragent keys init|show|rotate`: the agent's Ed25519 signing key (0600, never logged)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from agent.protocol.keys import (
    PASSPHRASE_ENV,
    PRIVATE_NAME,
    init_keys,
    load_private_key,
    public_record,
    read_passphrase,
    rotate_keys,
)
from tieragent.console import handle_errors

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
    directory: Path = _DIR,
    factory: str = typer.Option(..., "--factory", help="Factory id the key signs for."),
    effective_from_seq: int | None = typer.Option(None, help="First report seq under the new key."),
    passphrase_file: Path | None = _PASSFILE,
) -> None:
    """Create a new key and a rotation statement signed by the old and the new key."""
    record, statement = rotate_keys(
        directory,
        read_passphrase(passphrase_file),
        factory_id=factory,
        effective_from_seq=effective_from_seq,
    )
    typer.echo(json.dumps(record, indent=2))
    typer.echo(f"Rotation statement written to {statement}; send it to the bureau.", err=True)
