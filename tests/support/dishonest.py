"""A dishonest bureau, for the transparency-log tests (docs/reliability.md §b.9): it deletes a
stored report and its log leaf by SQL and numbers the leaves again, so that its log looks
whole and its receiver signs new heads over what is left."""

from __future__ import annotations

import sqlite3

from bureau.database import Database


def remove_report(
    db: Database | sqlite3.Connection, report_id: str, *, keep_head: bool = False
) -> None:
    """Delete `report_id` from `reports` and `log_leaves` in one transaction, leaves numbered
    again without a hole; unless `keep_head`, the head signed last is forgotten too (so the
    bureau's own check of its log against that head has nothing to compare with).

    `db`: the store's database (SQLite or PostgreSQL), or a sqlite3 connection to the file of
    a bureau running in another process."""
    if isinstance(db, sqlite3.Connection):
        db = _SqliteFile(db)
    with db.transaction():
        db.execute("DELETE FROM reports WHERE report_id = :id", {"id": report_id})
        rows = db.rows(
            "SELECT leaf_hash, report_id, factory_id, payload_sha256, appended_at FROM "
            "log_leaves WHERE report_id != :id ORDER BY leaf_index", {"id": report_id})
        db.execute("DELETE FROM log_leaves")
        for index, row in enumerate(rows):
            db.execute(
                "INSERT INTO log_leaves (leaf_index, leaf_hash, report_id, factory_id, "
                "payload_sha256, appended_at) VALUES (:index, :hash, :report, :factory, "
                ":sha, :at)",
                {"index": index, "hash": row[0], "report": row[1], "factory": row[2],
                 "sha": row[3], "at": row[4]})
        if not keep_head:
            db.execute("DELETE FROM log_head")


class _SqliteFile:
    """The few Database methods remove_report uses, on a plain sqlite3 connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def transaction(self) -> _Immediate:
        return _Immediate(self.db)

    def execute(self, sql: str, params: dict[str, object] | None = None) -> None:
        self.db.execute(sql, params or {})

    def rows(self, sql: str, params: dict[str, object]) -> list[tuple[object, ...]]:
        return self.db.execute(sql, params).fetchall()


class _Immediate:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if kind is not None else "COMMIT")
