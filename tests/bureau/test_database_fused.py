"""`Database.fused` (bureau/database.py): on PostgreSQL, inside `batched`, the writes queued in
the block after its last read go to the server as one statement; every one of them takes
effect, a read or a lock among them is never folded in (a SELECT in WITH that nothing reads
is not run), and on SQLite nothing changes."""

from __future__ import annotations

from pathlib import Path

from bureau.database import _fuse_writes
from bureau.store import SqlReportStore


def test_runs_of_writes_become_one_statement_and_reads_stay_apart() -> None:
    lock = ("SELECT pg_advisory_xact_lock(:ns, :key)", [{"ns": 1, "key": 2}], None)
    holder: list[object] = []
    read = ("SELECT 1 FROM alerts WHERE kind = :kind", [{"kind": "x"}], holder)
    many = ("INSERT INTO t (a) VALUES (:a)", [{"a": 1}, {"a": 2}], None)
    fused = _fuse_writes([
        ("INSERT INTO t (a) VALUES (:a)", [{"a": 1}], None),
        lock,
        ("  insert into t (a, b) VALUES (:a, :b)", [{"a": 2, "b": 3}], None),
        ("UPDATE t SET a = :a WHERE b = :b", [{"a": 4, "b": 5}], None),
        ("DELETE FROM u WHERE c = CAST(:c AS text)", [{"c": 6}], None),
        read,
        many,
    ])
    assert fused[0] == ("INSERT INTO t (a) VALUES (:a)", [{"a": 1}], None)
    assert fused[1] == lock
    assert fused[2] == (
        "WITH w0 AS (  insert into t (a, b) VALUES (:w0_a, :w0_b)), "
        "w1 AS (UPDATE t SET a = :w1_a WHERE b = :w1_b) "
        "DELETE FROM u WHERE c = CAST(:w2_c AS text)",
        [{"w0_a": 2, "w0_b": 3, "w1_a": 4, "w1_b": 5, "w2_c": 6}],
        None,
    )
    assert fused[3] == read and fused[3][2] is holder
    assert fused[4] == many


def test_every_fused_write_lands(bureau_database: Path | str) -> None:
    store = SqlReportStore(bureau_database)
    try:
        db = store.db
        with db.transaction(), db.batched(commit=True):
            db.execute("INSERT INTO alerts (factory_id, kind, detail, at) "
                       "VALUES (:f, 'a', 'before', 1)", {"f": "F0"})
            with db.fused():
                for n in range(1, 4):
                    db.execute("INSERT INTO alerts (factory_id, kind, detail, at) "
                               "VALUES (:f, 'a', :d, :at)", {"f": f"F{n}", "d": str(n), "at": n})
                db.lock_log()  # a lock among them runs, in its place
                db.execute("INSERT INTO alerts (factory_id, kind, detail, at) "
                           "VALUES (:f, 'b', 'last', 9)", {"f": "F9"})
        rows = db.rows("SELECT factory_id, kind, detail FROM alerts ORDER BY factory_id")
        assert [tuple(r) for r in rows] == [
            ("F0", "a", "before"), ("F1", "a", "1"), ("F2", "a", "2"), ("F3", "a", "3"),
            ("F9", "b", "last"),
        ]
    finally:
        store.close()
