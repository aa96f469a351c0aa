"""What an operator sees when the bureau database cannot be used: one line naming the file
or the URL (never its password) and the next step, exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bureau.database import DATABASE_URL_ENV
from bureau.store import ReportStoreError, SqlReportStore
from tests.support.ports import free_port
from tieragent.cli import _register_subcommands, app


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    _register_subcommands()
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_an_unreachable_postgresql_is_one_line_without_the_password() -> None:
    """If the URL points at a port where no PostgreSQL listens, then `bureau list` exits 2
    with one line naming the URL without its password, and no traceback."""
    url = f"postgresql://bureau:s3cret-pw@127.0.0.1:{free_port()}/bureau"
    code, output = _run("bureau", "list", env={DATABASE_URL_ENV: url})
    assert code == 2, output
    assert "s3cret-pw" not in output and "Traceback" not in output
    assert "cannot connect to the bureau's PostgreSQL" in output and "127.0.0.1" in output
    assert "***" in output  # SQLAlchemy's masked password
    with pytest.raises(ReportStoreError) as caught:
        SqlReportStore(url)
    assert "s3cret-pw" not in str(caught.value) and "\n" not in str(caught.value)


def test_a_wrong_password_is_named_without_the_password(postgres_server) -> None:  # type: ignore[no-untyped-def]
    """If the server refuses the login, the message says so and still hides the password."""
    url = postgres_server.url("no_such_database").replace("postgres@", "postgres:pw-XYZ@")
    code, output = _run("bureau", "list", "--database-url", url)
    assert code == 2 and "pw-XYZ" not in output and "no_such_database" in output, output


def test_db_and_database_url_together_is_a_mistake(tmp_path: Path) -> None:
    code, output = _run("bureau", "list", "--db", str(tmp_path / "b.db"),
                        "--database-url", "postgresql://x@127.0.0.1:1/b")
    assert code == 2 and "not both" in output, output


def test_a_damaged_sqlite_file_names_the_file(tmp_path: Path) -> None:
    """If --db is not an SQLite database, the message names the file, exit 2."""
    damaged = tmp_path / "bureau.db"
    damaged.write_bytes(b"this is not a database" * 100)
    code, output = _run("bureau", "list", "--db", str(damaged))
    assert code == 2 and str(damaged) in output.replace("\n", "") and "Traceback" not in output


def test_a_share_group_with_a_wildcard_is_refused(tmp_path: Path) -> None:
    code, output = _run("bureau", "serve", "--db", str(tmp_path / "b.db"), "--broker",
                        "mqtt://127.0.0.1:1", "--share-group", "a/b")
    assert code == 2 and "--share-group" in output, output
