"""`tieragent bureau users` and the argument checks of `tieragent bureau web`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer import Typer
from typer.testing import CliRunner

from bureau.accounts import Accounts
from bureau.store import SqliteReportStore
from tieragent.commands import bureau_users, bureau_web


def _app() -> Typer:
    app = Typer()
    bureau_users.register(app)
    bureau_web.register(app)
    return app


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "bureau.db"
    SqliteReportStore(path).close()
    return path


def test_users_add_list_disable_token(db: Path, tmp_path: Path) -> None:
    """If an operator adds accounts with the password in the environment or in a file, then
    they are listed with their roles; a token is printed once and only its hash is stored; a
    disabled account is listed as such and gets no new token."""
    runner = CliRunner()
    added = runner.invoke(_app(), ["users", "add", "--db", str(db), "--username", "ana",
                                   "--role", "evaluator"],
                          env={"TIERAGENT_BUREAU_PASSWORD": "a long password"})
    assert added.exit_code == 0, added.output
    secret = tmp_path / "pw"
    secret.write_text("another long one\n")
    added = runner.invoke(_app(), ["users", "add", "--db", str(db), "--username", "bo",
                                   "--role", "admin", "--password-file", str(secret)])
    assert added.exit_code == 0, added.output
    listed = runner.invoke(_app(), ["users", "list", "--db", str(db)])
    assert [line.split("\t")[:3] for line in listed.stdout.splitlines()] == [
        ["ana", "evaluator", "enabled"], ["bo", "admin", "enabled"]]
    token = runner.invoke(_app(), ["users", "token", "--db", str(db), "--username", "ana"])
    assert token.exit_code == 0
    printed = token.stdout.strip()
    store = SqliteReportStore(db)
    accounts = Accounts(store.db)
    assert accounts.authenticate("bo", "another long one") is not None
    assert accounts.token_user(printed) is not None
    assert printed not in str(store.db.execute("SELECT * FROM api_tokens").fetchall())
    store.close()
    disabled = runner.invoke(_app(), ["users", "disable", "--db", str(db), "--username", "ana"])
    assert disabled.exit_code == 0
    listed = runner.invoke(_app(), ["users", "list", "--db", str(db)])
    assert "ana\tevaluator\tdisabled" in listed.stdout
    again = runner.invoke(_app(), ["users", "token", "--db", str(db), "--username", "ana"])
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
def test_users_add_mistakes_exit_2(db: Path, args: list[str], env: dict[str, str],
                                   message: str) -> None:
    """If the password is too short, the role unknown, or no password is given (no terminal,
    no variable, no file), then the command says so and exits 2, adding nobody."""
    result = CliRunner().invoke(
        _app(), ["users", "add", "--db", str(db), "--username", "cy", *args], env=env)
    assert result.exit_code == 2 and message in result.output, result.output
    store = SqliteReportStore(db)
    assert Accounts(store.db).users() == []
    store.close()


def test_users_add_twice_and_missing_db_exit_2(db: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"TIERAGENT_BUREAU_PASSWORD": "long enough!"}
    args = ["users", "add", "--db", str(db), "--username", "dup", "--role", "admin"]
    assert runner.invoke(_app(), args, env=env).exit_code == 0
    twice = runner.invoke(_app(), args, env=env)
    assert twice.exit_code == 2 and "exists already" in twice.output
    missing = runner.invoke(_app(), ["users", "list", "--db", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and "no bureau database" in missing.output


def test_web_refuses_missing_files(db: Path, tmp_path: Path) -> None:
    """If `bureau web` is given a database, key or declarations folder that does not exist,
    then it exits 2 naming it, before serving anything."""
    runner = CliRunner()
    for args, message in (
        (["--db", str(tmp_path / "none.db")], "no bureau database"),
        (["--db", str(db), "--key", str(tmp_path / "k.pem")], "the key file does not exist"),
        (["--db", str(db), "--declarations-dir", str(tmp_path / "d")], "declarations folder"),
    ):
        result = runner.invoke(_app(), ["web", *args])
        assert result.exit_code == 2 and message in result.output, result.output
