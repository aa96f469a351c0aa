"""A bureau.db made before migrations (the schema `CREATE TABLE IF NOT EXISTS` made, copied
verbatim below from bureau/store.py as it was) opens with today's code: Alembic's baseline
adopts it without losing a row, and the receiver goes on with the same chain and log."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from joserfc.jwk import OKPKey

from agent.protocol.chain import genesis_sha256
from agent.protocol.envelope import (
    Kind,
    canonical_bytes,
    sha256_hex,
    sign_compact,
    thumbprint,
    verify_compact,
)
from agent.protocol.mqtt import report_topic
from agent.protocol.translog import consistent, verify_head
from bureau.migrations.run import head_revision
from bureau.store import ACCEPTED, SqlReportStore
from tests.support.bureau_receiver import start_bureau
from tests.support.reports import FACTORY, day, make_report

# bureau/store.py's _SCHEMA before migrations (commit ee7f9e3), unchanged.
LEGACY_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    kid TEXT PRIMARY KEY,
    factory_id TEXT NOT NULL,
    jwk TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active','retired','revoked')),
    valid_from REAL NOT NULL,
    revoked_at REAL,
    retired_at REAL
);
CREATE INDEX IF NOT EXISTS keys_factory ON keys (factory_id);
CREATE TABLE IF NOT EXISTS reports (
    report_id TEXT PRIMARY KEY,
    factory_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    period_kind TEXT NOT NULL,
    period_key TEXT NOT NULL,
    revision INTEGER NOT NULL,
    kid TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    prev_sha256 TEXT NOT NULL,
    jws TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('accepted','pending-link')),
    received_at REAL NOT NULL,
    receipt_jws TEXT NOT NULL,
    receipt_sha256 TEXT NOT NULL,
    alerted INTEGER NOT NULL DEFAULT 0,
    UNIQUE (factory_id, seq)
);
CREATE INDEX IF NOT EXISTS reports_period ON reports (factory_id, period_kind, period_key);
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    factory_id TEXT,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    report_id TEXT,
    period_kind TEXT,
    period_key TEXT,
    message_sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    jws TEXT,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rotations (
    new_kid TEXT PRIMARY KEY,
    rotated_from TEXT NOT NULL,
    statement TEXT NOT NULL,
    at REAL NOT NULL,
    effective_from_seq INTEGER
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    factory_id TEXT,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    at REAL NOT NULL
);
-- The transparency log (bureau/translog.py): one leaf per stored report, append-only.
CREATE TABLE IF NOT EXISTS log_leaves (
    leaf_index INTEGER PRIMARY KEY,
    leaf_hash BLOB NOT NULL,
    report_id TEXT NOT NULL,
    factory_id TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    appended_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS log_leaves_report ON log_leaves (report_id);
CREATE INDEX IF NOT EXISTS log_leaves_factory ON log_leaves (factory_id, leaf_index);
CREATE TABLE IF NOT EXISTS log_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    tree_size INTEGER NOT NULL,
    root_hash TEXT NOT NULL,
    sth_jws TEXT NOT NULL
);
"""
TABLES = ("keys", "reports", "rejections", "rotations", "alerts", "log_leaves", "log_head")


def _chain(key: OKPKey, days: range) -> list[bytes]:
    prev, out = genesis_sha256(FACTORY), []
    for n in days:
        payload = canonical_bytes(make_report(key, day(n), n, prev, devices=1))
        out.append(sign_compact(payload, key, Kind.REPORT).encode())
        prev = sha256_hex(payload)
    return out


def _rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as db:
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in TABLES}


def _legacy_bureau(tmp_path: Path, key: OKPKey, bureau_key: OKPKey, *, old_rotations: bool
                   ) -> Path:
    """A legacy-schema file holding what a bureau stored: two reports with their receipts
    and leaves, a rejection, an alert and the signed head."""
    made = start_bureau(tmp_path / "made.db", None, {FACTORY: key}, key=bureau_key)
    messages = _chain(key, range(1, 3))
    for message in messages:
        assert made.receiver.handle(report_topic(FACTORY), message) is not None
    made.receiver.handle(report_topic(FACTORY), b"not a report")  # a rejection
    with made.receiver.store.transaction():
        made.receiver.store.alert(FACTORY, "gap", "seq 7 still missing")
    made.receiver.stop()
    legacy = tmp_path / "bureau.db"
    schema = LEGACY_SCHEMA
    if old_rotations:  # the schema before effective_from_seq existed
        schema = schema.replace("    at REAL NOT NULL,\n    effective_from_seq INTEGER\n",
                                "    at REAL NOT NULL\n")
    with sqlite3.connect(legacy) as db:
        db.executescript(schema)
        for table, rows in _rows(tmp_path / "made.db").items():
            for row in rows:
                row = row[:4] if table == "rotations" and old_rotations else row
                db.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(row))})", row)
    return legacy


def test_a_bureau_db_made_before_migrations_upgrades_without_losing_a_row(
    tmp_path: Path,
) -> None:
    """If today's code opens a bureau.db that has the old schema and no alembic_version, then
    every row is still there, unchanged, and the schema is at the newest migration."""
    key, bureau_key = OKPKey.generate_key("Ed25519"), OKPKey.generate_key("Ed25519")
    legacy = _legacy_bureau(tmp_path, key, bureau_key, old_rotations=False)
    before = _rows(legacy)
    assert len(before["reports"]) == 2 and len(before["rejections"]) == 1
    store = SqlReportStore(legacy)
    store.close()
    assert _rows(legacy) == before
    with sqlite3.connect(legacy) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (head_revision(),)
        ]
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_receiver_goes_on_with_the_legacy_chain_and_log(tmp_path: Path) -> None:
    """If a receiver opens an upgraded legacy bureau.db (one from before key windows, too),
    then the next report links to the stored chain and its head extends the stored head."""
    key, bureau_key = OKPKey.generate_key("Ed25519"), OKPKey.generate_key("Ed25519")
    legacy = _legacy_bureau(tmp_path, key, bureau_key, old_rotations=True)
    old_head = _rows(legacy)["log_head"][0]
    bureau = start_bureau(legacy, None, {}, key=bureau_key)
    try:
        third = _chain(key, range(1, 4))[2]
        reply = bureau.receiver.handle(report_topic(FACTORY), third)
        assert reply is not None
        receipt = verify_compact(reply[1], Kind.RECEIPT, bureau.public).payload
        assert receipt["status"] == "accepted", receipt
        keys = {thumbprint(bureau.public): bureau.public}
        before, head = verify_head(old_head[3], keys), verify_head(receipt["log"]["head"], keys)
        assert before.root_hash.hex() == old_head[2]
        assert head.tree_size == before.tree_size + 1
        assert receipt["log"]["link"]["from_size"] == before.tree_size
        proof = [bytes.fromhex(h) for h in receipt["log"]["link"]["proof"]]
        assert consistent(before, head, proof)
        assert [r.state for r in bureau.receiver.store.reports(FACTORY)] == [ACCEPTED] * 3
        with sqlite3.connect(legacy) as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(rotations)")}
        assert "effective_from_seq" in columns
    finally:
        bureau.receiver.stop()


def test_postgresql_compresses_stored_tokens_with_lz4(postgres_server: Any) -> None:
    """Migration 0004: the report's JWS, its receipt and a rejected message's JWS are
    compressed with lz4 (pglz cost PostgreSQL ≈0.2 ms of CPU per report); what is read back
    is what was written."""
    store = SqlReportStore(postgres_server.create_database())
    try:
        methods = dict(store.db.rows(
            "SELECT attrelid::regclass::text || '.' || attname, attcompression::text "
            "FROM pg_attribute WHERE attname IN ('jws', 'receipt_jws') "
            "AND attrelid IN ('reports'::regclass, 'rejections'::regclass)"
        ))
        assert methods == {"reports.jws": "l", "reports.receipt_jws": "l",
                           "rejections.jws": "l"}
    finally:
        store.close()
