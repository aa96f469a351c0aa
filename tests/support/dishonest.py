"""A dishonest bureau, for the transparency-log tests (docs/reliability.md §b.9): it deletes a
stored report and its log leaf by SQL and numbers the leaves again, so that its log looks
whole and its receiver signs new heads over what is left."""

from __future__ import annotations

import sqlite3


def remove_report(db: sqlite3.Connection, report_id: str, *, keep_head: bool = False) -> None:
    """Delete `report_id` from `reports` and `log_leaves` in one transaction, leaves numbered
    again without a hole; unless `keep_head`, the head signed last is forgotten too (so the
    bureau's own check of its log against that head has nothing to compare with)."""
    db.execute("BEGIN IMMEDIATE")
    db.execute("DELETE FROM reports WHERE report_id = ?", (report_id,))
    rows = db.execute(
        "SELECT leaf_hash, report_id, factory_id, payload_sha256, appended_at FROM log_leaves "
        "WHERE report_id != ? ORDER BY leaf_index", (report_id,)).fetchall()
    db.execute("DELETE FROM log_leaves")
    db.executemany(
        "INSERT INTO log_leaves (leaf_index, leaf_hash, report_id, factory_id, payload_sha256, "
        "appended_at) VALUES (?, ?, ?, ?, ?, ?)", [(i, *row) for i, row in enumerate(rows)])
    if not keep_head:
        db.execute("DELETE FROM log_head")
    db.execute("COMMIT")
