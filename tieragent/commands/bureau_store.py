"""Which bureau database a `tieragent bureau ...` command opens: `--db FILE` (SQLite, the
default `bureau.db`) or PostgreSQL by URL.

The URL comes from `--database-url` or, better, the environment variable
TIERAGENT_BUREAU_DATABASE_URL: a URL with a password must not sit on a command line (it
shows in `ps` and shell history). Without a password in the URL, libpq's own PGPASSWORD and
~/.pgpass work too. An explicit `--db` wins over the environment variable; `--db` and
`--database-url` together are a mistake.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from bureau.database import DATABASE_URL_ENV, safe_name
from bureau.store import SqlReportStore
from tieragent.console import InvalidInput

DEFAULT_DB = Path("bureau.db")

DB_OPTION = typer.Option(
    None, "--db", help=f"Bureau SQLite database file (default {DEFAULT_DB}).",
    show_default=False)
DATABASE_URL_OPTION = typer.Option(
    None, "--database-url",
    help=f"PostgreSQL instead of SQLite: postgresql://USER@HOST:PORT/DB. Keep passwords off "
    f"the command line: set ${DATABASE_URL_ENV} instead (or use ~/.pgpass).")


def database_target(db: Path | None, database_url: str | None) -> Path | str:
    """The file or URL to open, from the options and the environment."""
    if db is not None and database_url is not None:
        raise InvalidInput("Give --db FILE (SQLite) or --database-url (PostgreSQL), not both.")
    if db is not None:
        return db
    url = database_url or os.environ.get(DATABASE_URL_ENV) or None
    return url if url is not None else DEFAULT_DB


def open_store(db: Path | None, database_url: str | None, *, must_exist: bool = True
               ) -> SqlReportStore:
    """The bureau store; with `must_exist`, a SQLite file that is not there is a mistake
    (a read command must not create an empty database next to the real one)."""
    target = database_target(db, database_url)
    if must_exist and isinstance(target, Path) and not target.is_file():
        raise InvalidInput(
            f"{target} does not exist: no bureau database here (give --db the file "
            f"`bureau serve` writes, or ${DATABASE_URL_ENV} for PostgreSQL)."
        )
    return SqlReportStore(target)


def describe(target: Path | str) -> str:
    """The database as messages name it (a URL without its password)."""
    return safe_name(target)
