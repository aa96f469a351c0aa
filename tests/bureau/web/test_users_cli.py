"""`tieragent bureau users` and the argument checks of `tieragent bureau web`; the users
commands on a SQLite file (--db) and on PostgreSQL (its URL in the environment)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer import Typer
from typer.testing import CliRunner

from bureau.accounts import Accounts
from bureau.database import DATABASE_URL_ENV
from bureau.store import SqlReportStore
from tieragent.commands import bureau_users, bureau_web


def _app() -> Typer:
    app = Typer()
    bureau_users.register(app)
    bureau_web.register(app)
    return app


@pytest.fixture
def db(bureau_database: Path | str) -> Path | str:
    SqlReportStore(bureau_database).close()
    return bureau_database


def _where(db: Path | str) -> tuple[list[str], dict[str, str]]:
    """The command-line arguments and environment that name the database: --db FILE, or the
    URL in TIERAGENT_BUREAU_DATABASE_URL (as an operator should give a PostgreSQL URL)."""
    if isinstance(db, Path):
        return ["--db", str(db)], {}
    return [], {DATABASE_URL_ENV: db}


def test_users_add_list_disable_token(db: Path | str, tmp_path: Path) -> None:
    """If an operator adds accounts with the password in the environment or in a file, then
    they are listed with their roles; a token is printed once and only its hash is stored; a
    disabled account is listed as such and gets no new token."""
    runner = CliRunner()
    where, env = _where(db)
    added = runner.invoke(_app(), ["users", "add", *where, "--username", "ana",
                                   "--role", "evaluator"],
                          env={**env, "TIERAGENT_BUREAU_PASSWORD": "a long password"})
    assert added.exit_code == 0, added.output
    secret = tmp_path / "pw"
    secret.write_text("another long one\n")
    added = runner.invoke(_app(), ["users", "add", *where, "--username", "bo",
                                   "--role", "admin", "--password-file", str(secret)], env=env)
    assert added.exit_code == 0, added.output
    listed = runner.invoke(_app(), ["users", "list", *where], env=env)
    assert [line.split("\t")[:3] for line in listed.stdout.splitlines()] == [
        ["ana", "evaluator", "enabled"], ["bo", "admin", "enabled"]]
    token = runner.invoke(_app(), ["users", "token", *where, "--username", "ana"], env=env)
    assert token.exit_code == 0
    printed = token.stdout.strip()
    store = SqlReportStore(db)
    accounts = Accounts(store.db)
    assert accounts.authenticate("bo", "another long one") is not None
    assert accounts.token_user(printed) is not None
    assert printed not in str(store.db.rows("SELECT * FROM api_tokens"))
    assert [(r.username, r.action) for r in accounts.audit_rows()] == [
        ("cli", "accounts.token"), ("cli", "accounts.add"), ("cli", "accounts.add")]
    store.close()
    disabled = runner.invoke(_app(), ["users", "disable", *where, "--username", "ana"], env=env)
    assert disabled.exit_code == 0
    listed = runner.invoke(_app(), ["users", "list", *where], env=env)
    assert "ana\tevaluator\tdisabled" in listed.stdout
    again = runner.invoke(_app(), ["users", "token", *where, "--username", "ana"], env=env)
    assert again.exit_code == 2 and "disabled" in again.output


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--role", "evaluator"], {"TIERAGENT_BUREAU_PASSWORD": "short"}, "at least 10"),
        (["--role", "boss"], {"TIERAGENT_BUREAU_PASSWORD": "long enough!"}, "is not one of"),
        (["--role", "admin"], {}, "No password"),
        (["--role", "admin", "--password-file", "/nonexistent"], {}, "cannot read"),
    ],
)
def test_users_add_mistakes_exit_2(db: Path | str, args: list[str], env: dict[str, str],
                                   message: str) -> None:
    """If the password is too short, the role unknown, or no password is given (no terminal,
    no variable, no file), then the command says so and exits 2, adding nobody."""
    where, database_env = _where(db)
    result = CliRunner().invoke(
        _app(), ["users", "add", *where, "--username", "cy", *args],
        env={**database_env, **env})
    assert result.exit_code == 2 and message in result.output, result.output
    store = SqlReportStore(db)
    assert Accounts(store.db).users() == []
    store.close()


def test_users_add_twice_and_missing_db_exit_2(db: Path | str, tmp_path: Path) -> None:
    runner = CliRunner()
    where, env = _where(db)
    env = {**env, "TIERAGENT_BUREAU_PASSWORD": "long enough!"}
    args = ["users", "add", *where, "--username", "dup", "--role", "admin"]
    assert runner.invoke(_app(), args, env=env).exit_code == 0
    twice = runner.invoke(_app(), args, env=env)
    assert twice.exit_code == 2 and "exists already" in twice.output
    missing = runner.invoke(_app(), ["users", "list", "--db", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and "no bureau database" in missing.output
    assert not (tmp_path / "none.db").exists()


def test_web_refuses_missing_files(db: Path | str, tmp_path: Path) -> None:
    """If `bureau web` is given a database, key or declarations folder that does not exist,
    or both --db and --database-url, then it exits 2 naming it, before serving anything."""
    runner = CliRunner()
    where, env = _where(db)
    for args, message in (
        (["--db", str(tmp_path / "none.db")], "no bureau database"),
        ([*where, "--key", str(tmp_path / "k.pem")], "the key file does not exist"),
        ([*where, "--declarations-dir", str(tmp_path / "d")], "declarations folder"),
        (["--db", str(tmp_path / "b.db"), "--database-url", "postgresql://u@127.0.0.1:1/b"],
         "not both"),
    ):
        result = runner.invoke(_app(), ["web", *args], env=env)
        assert result.exit_code == 2 and message in result.output, result.output


def test_web_and_users_name_an_unreachable_postgresql_without_its_password(
    tmp_path: Path,
) -> None:
    """If the PostgreSQL URL points at nothing, then `users list` and `web` exit 2 with one
    line naming the server, without the password and without a traceback."""
    url = "postgresql://bureau:s3cret-pw@127.0.0.1:1/bureau"  # port 1: nothing listens
    for command in (["users", "list"], ["web"]):
        result = CliRunner().invoke(_app(), command, env={DATABASE_URL_ENV: url})
        assert result.exit_code == 2, result.output
        assert "cannot connect" in result.output and "127.0.0.1:1" in result.output
        assert "s3cret-pw" not in result.output and "Traceback" not in result.output
