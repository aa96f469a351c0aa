"""The portal's account tables (migration 0002) on SQLite and PostgreSQL, and a bureau.db
whose account tables a portal made before migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy.exc import IntegrityError

from bureau.accounts import Accounts
from bureau.migrations.run import head_revision
from bureau.store import SqlReportStore

# The account tables as bureau/accounts.py created them before migration 0002 (commit
# 80da53d), unchanged.
LEGACY_ACCOUNTS = """
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('evaluator','admin')),
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY,
    username TEXT NOT NULL REFERENCES users (username),
    csrf_token TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_at);
CREATE TABLE IF NOT EXISTS api_tokens (
    token_sha256 TEXT PRIMARY KEY,
    username TEXT NOT NULL REFERENCES users (username),
    created_at REAL NOT NULL,
    last_used_at REAL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
"""
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # argon2id, test-cheap


def test_accounts_on_each_back_end(bureau_database: Path | str) -> None:
    """If accounts, sessions, tokens and audit rows are written through the store, then they
    read back the same on SQLite and PostgreSQL: the disabled flag, the newest audit row
    first with increasing ids, the action filter; the role check holds in the schema."""
    store = SqlReportStore(bureau_database)
    try:
        accounts = Accounts(store.db, FAST)
        with store.transaction():
            accounts.add_user("ana", "evaluator", "a long password")
            accounts.audit("cli", "accounts.add", "ana evaluator")
        token, session = accounts.open_session(accounts.authenticate(
            "ana", "a long password") or pytest.fail("ana cannot log in"))
        assert accounts.session(token) == session
        api = accounts.new_api_token("ana")
        assert accounts.token_user(api) is not None
        for n in range(3):
            accounts.audit("ana", "download.evidence.html", f"evidence-f-{n}")
        rows = accounts.audit_rows()
        assert [r.target for r in rows] == [
            "evidence-f-2", "evidence-f-1", "evidence-f-0", "ana evaluator"]
        assert [r.id for r in rows] == sorted((r.id for r in rows), reverse=True)
        assert len(accounts.audit_rows(limit=2)) == 2
        assert [r.target for r in accounts.audit_rows(action="accounts.add")] == [
            "ana evaluator"]
        accounts.disable("ana")
        assert accounts.users()[0].disabled is True
        assert accounts.session(token) is None and accounts.token_user(api) is None
        with pytest.raises(IntegrityError), store.transaction():
            store.db.execute(
                "INSERT INTO users (username, role, password_hash, disabled, created_at) "
                "VALUES ('x', 'boss', 'h', 0, 0)")
    finally:
        store.close()


def test_account_tables_made_before_migrations_are_kept(tmp_path: Path) -> None:
    """If a bureau.db already has the account tables a portal made before migrations, with
    a user and audit rows, then opening it keeps every row, the user still logs in, and new
    audit rows get new ids after the old ones."""
    legacy = tmp_path / "bureau.db"
    with sqlite3.connect(legacy) as db:
        db.executescript(LEGACY_ACCOUNTS)
        db.execute("INSERT INTO users VALUES ('old', 'admin', ?, 0, 1.0)",
                   (FAST.hash("an old password"),))
        db.executemany("INSERT INTO audit (username, action, target, at) VALUES (?, ?, ?, ?)",
                       [("old", "keys.enrol", "f1 k1", 2.0), ("old", "keys.revoke", "f1 k1", 3.0)])
        db.execute("DELETE FROM audit WHERE id = 2")  # AUTOINCREMENT: id 2 is not reused
    store = SqlReportStore(legacy)
    try:
        assert store.db.scalar("SELECT version_num FROM alembic_version") == head_revision()
        accounts = Accounts(store.db, FAST)
        assert accounts.authenticate("old", "an old password") is not None
        accounts.audit("old", "accounts.list", "")
        assert [(r.id, r.action) for r in accounts.audit_rows()] == [
            (3, "accounts.list"), (1, "keys.enrol")]
    finally:
        store.close()
