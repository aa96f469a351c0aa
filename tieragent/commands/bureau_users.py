"""`tieragent bureau users`: the portal's accounts (bureau/accounts.py).

tieragent bureau users add --db bureau.db --username U --role evaluator|admin [--password-file F]
tieragent bureau users list --db bureau.db
tieragent bureau users disable --db bureau.db --username U
tieragent bureau users token --db bureau.db --username U    (prints a new API token once)

Instead of --db (SQLite), PostgreSQL by --database-url or, better,
TIERAGENT_BUREAU_DATABASE_URL (as every bureau command; bureau_store.py).

The password never goes on the command line: it is asked twice at a terminal, or read from
the environment variable TIERAGENT_BUREAU_PASSWORD, or from --password-file (first line).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import typer

from bureau.accounts import Accounts
from tieragent.commands.bureau_store import DATABASE_URL_OPTION, DB_OPTION, open_store
from tieragent.console import InvalidInput, handle_errors

PASSWORD_ENV = "TIERAGENT_BUREAU_PASSWORD"
users_app = typer.Typer(help="Accounts of the bureau portal.", no_args_is_help=True)
_USERNAME = typer.Option(..., "--username", help="Account name.")


@contextmanager
def _accounts(db: Path | None, database_url: str | None) -> Iterator[Accounts]:
    store = open_store(db, database_url)
    try:
        with store.transaction():
            yield Accounts(store.db)
    finally:
        store.close()


def _password(password_file: Path | None) -> str:
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise InvalidInput(f"{password_file}: cannot read ({error.strerror}).") from None
        return lines[0] if lines else ""
    if PASSWORD_ENV in os.environ:
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise InvalidInput(f"No password: give it at a terminal, in {PASSWORD_ENV}, or with "
                           "--password-file.")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@users_app.command("add")
@handle_errors
def add(
    db: Path | None = DB_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
    username: str = _USERNAME,
    role: str = typer.Option(..., "--role", help="evaluator (reads) or admin (keys, accounts)."),
    password_file: Path | None = typer.Option(
        None, "--password-file", help="File whose first line is the password."),
) -> None:
    """Add an account (the password is asked for, or read from the env or a file)."""
    secret = _password(password_file)
    with _accounts(db, database_url) as accounts:
        user = accounts.add_user(username, role, secret)
        accounts.audit("cli", "accounts.add", f"{user.username} {user.role}")
    typer.echo(f"Added {user.role} {user.username}.")


@users_app.command("list")
@handle_errors
def list_users(
    db: Path | None = DB_OPTION, database_url: str | None = DATABASE_URL_OPTION
) -> None:
    """List accounts: name, role, enabled or disabled, created."""
    with _accounts(db, database_url) as accounts:
        users = accounts.users()
    for user in users:
        created = datetime.fromtimestamp(user.created_at, UTC).strftime("%Y-%m-%d %H:%M")
        state = "disabled" if user.disabled else "enabled"
        typer.echo(f"{user.username}\t{user.role}\t{state}\t{created} UTC")


@users_app.command("disable")
@handle_errors
def disable(
    db: Path | None = DB_OPTION, database_url: str | None = DATABASE_URL_OPTION,
    username: str = _USERNAME,
) -> None:
    """Disable an account: its sessions and API tokens stop working at once."""
    with _accounts(db, database_url) as accounts:
        accounts.disable(username)
        accounts.audit("cli", "accounts.disable", username)
    typer.echo(f"Disabled {username}.")


@users_app.command("token")
@handle_errors
def token(
    db: Path | None = DB_OPTION, database_url: str | None = DATABASE_URL_OPTION,
    username: str = _USERNAME,
) -> None:
    """Make an API token for scripts (Authorization: Bearer); shown once, only its hash is
    kept."""
    with _accounts(db, database_url) as accounts:
        secret = accounts.new_api_token(username)
        accounts.audit("cli", "accounts.token", username)
    typer.echo(secret)


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
