"""Opening the agent database safely: integrity first, then WAL and synchronous=FULL.

An existing file is checked read-only (`PRAGMA quick_check`) before anything may write
to it; a damaged file is refused with a message naming it and is never modified.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from agent.errors import AgentError
from agent.store.schema import DDL, SCHEMA_VERSION

SQLITE_FULL = 13
SQLITE_IOERR = 10


class StoreError(AgentError):
    """A store problem; str() is one user-facing sentence."""


class StoreCorrupt(StoreError):
    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(
            f"{path}: the database failed its integrity check ({detail}). It was left "
            f"untouched. Move it aside (keep it for analysis) and start again, or restore a "
            f"backup; the agent never overwrites it."
        )
        self.path = path


def is_space_error(error: sqlite3.Error) -> bool:
    """Disk full or I/O failure: a counted gap, not a crash."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:
        return "disk is full" in str(error) or "disk I/O error" in str(error)
    return code & 0xFF in (SQLITE_FULL, SQLITE_IOERR)


def check_integrity(path: Path) -> None:
    """Raise StoreCorrupt unless `quick_check` says ok; opens the file read-only."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StoreCorrupt(path, str(exc)) from None
    result = "; ".join(str(row[0]) for row in rows[:5])
    if result != "ok":
        raise StoreCorrupt(path, result)


def open_database(path: Path) -> sqlite3.Connection:
    """Open (or create) the database with WAL + synchronous=FULL and the schema in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > 0:
        check_integrity(path)
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreCorrupt(path, str(exc)) from None
    if mode != "wal" or synchronous != 2:
        conn.close()
        raise StoreError(
            f"{path}: could not enable WAL with synchronous=FULL (got journal_mode={mode}, "
            f"synchronous={synchronous}); put the data directory on a local disk."
        )
    conn.execute("BEGIN IMMEDIATE")
    for statement in DDL:
        conn.execute(statement)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(samples)")}
    if "seg_ts" not in columns:  # schema 1: existing rows read NULL, without a rewrite
        conn.execute("ALTER TABLE samples ADD COLUMN seg_ts REAL")
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(SCHEMA_VERSION),),
    )
    conn.execute("COMMIT")
    return conn
