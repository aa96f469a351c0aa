"""The durable report outbox and hash-chain head (docs/reliability.md §b.1, §b.3).

Its own SQLite file (outbox.db): WAL, synchronous=FULL, checked at open. A report is
created in ONE transaction: read chain_head -> build payload -> canonicalise -> sign ->
INSERT outbox -> UPDATE chain_head -> COMMIT. A crash before COMMIT leaves nothing (the
report is rebuilt later from the same base measures); after COMMIT the stored bytes are
resent as they are, never re-signed. Rows leave the send queue only on a verified bureau
receipt (`apply_receipt`); `acked` rows keep their JWS and receipt for local evidence.

States: pending -> inflight -> acked | rejected (quarantine; `release`d only by an operator,
`tieragent report release`, back to pending).
Timers use time.monotonic(); they mean nothing after a restart, so `open` makes every
unacknowledged row due at once.

After each COMMIT that adds a report, the chain head is also written beside the database
(`outbox.db.head`, agent/outbox_head.py). At open, a head that the database no longer holds
means committed reports were lost (a damaged WAL, an older copy put in place): the outbox
refuses to open and names them, unless the loss is accepted (`accept_head_loss`).

Not thread-safe: one thread (the publisher's driver) owns an Outbox.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.outbox_head import (
    Heads,
    database_heads,
    head_path,
    keep_wal,
    lost_reports,
    read_heads,
    write_heads,
)
from agent.protocol.chain import genesis_sha256
from agent.protocol.crashpoint import crash_point
from agent.protocol.envelope import canonical_bytes, sha256_hex

log = logging.getLogger("tieragent.outbox")

PENDING, INFLIGHT, ACKED, REJECTED = "pending", "inflight", "acked", "rejected"
UNACKED = (PENDING, INFLIGHT)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chain_head (
    factory_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    payload_sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    report_id TEXT PRIMARY KEY,
    factory_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    period_slot TEXT NOT NULL,
    jws TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending','inflight','acked','rejected')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_mono REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL,
    acked_at REAL,
    receipt_jws TEXT,
    UNIQUE (factory_id, seq),
    UNIQUE (factory_id, period_slot)
);
CREATE INDEX IF NOT EXISTS outbox_open ON outbox (factory_id, state, seq);
"""


class OutboxError(AgentError):
    """The outbox database cannot be used; str() names the file and the next step."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    report_id: str
    factory_id: str
    seq: int
    period_slot: str
    jws: str
    payload_sha256: str
    state: str
    attempts: int
    next_attempt_at_mono: float
    last_error: str | None
    receipt_jws: str | None


_COLUMNS = (
    "report_id, factory_id, seq, period_slot, jws, payload_sha256, state, attempts, "
    "next_attempt_at_mono, last_error, receipt_jws"
)


class Outbox:
    def __init__(self, path: Path, *, accept_head_loss: bool = False) -> None:
        """Open (or create) the outbox at `path`; OutboxError if it cannot be used.

        `accept_head_loss`: the operator accepts that committed reports named by an earlier
        refusal are gone; the head record is set aside (`outbox.db.head.lost-<UTC time>`) and
        taken from the database again. What was accepted is in `accepted_loss`.
        """
        self.path = path
        self.head_path = head_path(path)
        self.accepted_loss: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA busy_timeout=10000")
            self._check_integrity()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._assert_durability()
            recorded = self._check_head(accept_head_loss)  # before any write reaches the WAL
            self._rename_legacy_columns()
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "UPDATE outbox SET next_attempt_at_mono = 0 WHERE state IN ('pending','inflight')"
            )
            if recorded != database_heads(self._db):
                # A new outbox, an older version's, a crash before the write, or a COMMIT whose
                # sync failed (P6: SQLite still reads the WAL frames it could not sync). A full
                # checkpoint syncs the database file first, so the head is only recorded for
                # rows that reached the disk; if the disk still fails, the open fails.
                self._db.execute("PRAGMA wal_checkpoint(FULL)")
                self._save_head()
        except sqlite3.OperationalError as error:  # I/O, full disk, locked: not damage
            raise OutboxError(
                f"{path}: the outbox database cannot be opened ({error}). Check the disk of "
                f"{path.parent} (free space, `dmesg` for I/O errors), then start again."
            ) from None
        except sqlite3.DatabaseError as error:
            raise OutboxError(
                f"{path}: the outbox database cannot be opened ({error}). It was not modified; "
                "move it aside and restore from backup, or contact support."
            ) from None

    def _check_head(self, accept: bool) -> Heads | None:
        """The head record, checked against the database: OutboxError naming the reports it
        has lost, unless `accept`. None if there is no record (or it was set aside)."""
        try:
            recorded = read_heads(self.head_path)
            problems = lost_reports(self._db, recorded) if recorded else []
        except ValueError as error:
            if accept:
                self._set_head_aside(f"the head record {self.head_path} {error}")
                return None
            self._db.close()
            raise OutboxError(
                f"{self.head_path}: the outbox's head record {error}, so the outbox "
                f"{self.path} cannot be checked for lost reports; it was not opened. If only "
                "this file is damaged, move it aside: it is then written again from the "
                "database (docs/operations.md#backup-and-restore)."
            ) from None
        if not problems:
            return recorded
        lost = "; ".join(problems)
        if accept:
            self._set_head_aside(f"committed reports lost: {lost}")
            return None
        kept = keep_wal(self.path)
        self._db.close()
        wal = f" (the write-ahead log as found is kept in {kept})" if kept else ""
        raise OutboxError(
            f"{self.path}: committed reports were lost: {lost}. The head record "
            f"{self.head_path}, written after each commit, names them; the cause is a "
            "damaged write-ahead log, or an older copy put in place. The agent "
            f"refuses to continue the chain without them; nothing was changed{wal}. Restore "
            f"{self.path.name} from a backup that holds them (delete its -wal and -shm files "
            f"first), or, to accept the loss, move {self.head_path} aside and start again: "
            "the lost periods are then reported again from the database's last seq on, and "
            "the bureau rejects any it already holds, so tell the bureau "
            "(docs/operations.md#backup-and-restore)."
        )

    def _set_head_aside(self, what: str) -> None:
        aside = self.head_path.with_name(
            f"{self.head_path.name}.lost-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        )
        self.head_path.rename(aside)
        self.accepted_loss = what
        log.warning("Outbox loss accepted by the operator; the head record is taken from the "
                    "database again.", extra={"fields": {
                        "file": str(self.path), "set_aside": str(aside), "accepted": what}})

    def _save_head(self) -> None:
        """Write the head record from the database. A failure only leaves the record behind
        (which is safe: it is written again at the next commit or open), so it is logged."""
        try:
            write_heads(self.head_path, database_heads(self._db))
        except OSError as error:
            log.warning("Outbox head record not written; lost reports will not be detected "
                        "until it is.", extra={"fields": {
                            "file": str(self.head_path), "error": str(error)}})

    def _rename_legacy_columns(self) -> None:
        """Outboxes written before 0.2 called the slot `period_key`, the bureau's word for
        the bare period; the rename keeps their rows and their uniqueness constraint."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if "period_key" in columns:
            self._db.execute("ALTER TABLE outbox RENAME COLUMN period_key TO period_slot")

    def _check_integrity(self) -> None:
        row = self._db.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            raise OutboxError(
                f"{self.path}: integrity check failed ({row[0] if row else 'no answer'}). "
                "The file was not modified; move it aside and restore from backup."
            )

    def _assert_durability(self) -> None:
        mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
        sync = self._db.execute("PRAGMA synchronous").fetchone()[0]
        if mode != "wal" or sync != 2:
            raise OutboxError(
                f"{self.path}: durability settings not in effect (journal_mode={mode}, "
                f"synchronous={sync}); refusing to run on this filesystem."
            )

    def close(self) -> None:
        self._db.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The database connection, for the tables kept beside the outbox (log_monitor)."""
        return self._db

    def integrity_ok(self) -> bool:
        return bool(self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")

    def chain_head(self, factory_id: str) -> tuple[int, str]:
        """(last seq, its payload SHA-256); (0, genesis) before the first report."""
        row = self._db.execute(
            "SELECT seq, payload_sha256 FROM chain_head WHERE factory_id = ?", (factory_id,)
        ).fetchone()
        return (int(row[0]), str(row[1])) if row else (0, genesis_sha256(factory_id))

    def commit_report(
        self,
        factory_id: str,
        period_slot: str,
        build: Callable[[int, str], Mapping[str, Any]],
        sign: Callable[[bytes], str],
    ) -> OutboxItem:
        """Create, sign and commit the next report of `factory_id`, once per period_slot.

        `build(seq, prev_sha256)` returns the report dict; `sign(payload)` the compact JWS.
        If the period already has a row, that row is returned and nothing is rebuilt.
        """
        return self.commit_payload(
            factory_id, period_slot, lambda seq, prev: (build(seq, prev), None), sign
        )

    def commit_payload(
        self,
        factory_id: str,
        period_slot: str,
        build: Callable[[int, str], tuple[Mapping[str, Any], bytes | None]],
        sign: Callable[[bytes], str],
    ) -> OutboxItem:
        """`commit_report` for a `build` that returns the report with its canonical bytes
        (`agent.protocol.report.build_report_payload`), which are then signed as they are
        instead of canonicalising the report a second time; None canonicalises here."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            existing = self._db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE factory_id = ? AND period_slot = ?",
                (factory_id, period_slot),
            ).fetchone()
            if existing:
                self._db.execute("ROLLBACK")
                return OutboxItem(*existing)
            seq, prev = self.chain_head(factory_id)
            report, built_payload = build(seq + 1, prev)
            if report.get("seq") != seq + 1 or report.get("prev_sha256") != prev:
                raise OutboxError("build() must use the seq and prev_sha256 it was given.")
            crash_point("after_build")
            payload = canonical_bytes(report) if built_payload is None else built_payload
            token = sign(payload)
            crash_point("after_sign")
            digest = sha256_hex(payload)
            self._db.execute(
                "INSERT INTO outbox (report_id, factory_id, seq, period_slot, jws, payload_sha256,"
                " state, created_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
                (report["report_id"], factory_id, seq + 1, period_slot, token, digest, time.time()),
            )
            self._db.execute(
                "INSERT INTO chain_head (factory_id, seq, payload_sha256) VALUES (?, ?, ?) "
                "ON CONFLICT (factory_id) DO UPDATE SET seq = excluded.seq, "
                "payload_sha256 = excluded.payload_sha256",
                (factory_id, seq + 1, digest),
            )
            self._db.execute("COMMIT")
        except BaseException as error:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the first error is the one to tell
                    self._db.execute("ROLLBACK")
            if isinstance(error, sqlite3.OperationalError):
                # Fault matrix P6: a failed fsync (EIO) or a full disk at COMMIT. SQLite may
                # still read a row whose COMMIT failed to sync, so this cannot say "not
                # queued"; the next open syncs it or fails (see __init__).
                raise OutboxError(
                    f"{self.path}: the report for {period_slot} is not known to be queued: the "
                    f"outbox could not commit it to disk ({error}). Check the disk of "
                    f"{self.path.parent} (free space, `dmesg` for I/O errors), then run the same "
                    "command again: it queues the report if it is missing and shows it if it "
                    "is there, never twice."
                ) from None
            raise
        crash_point("after_commit")
        self._save_head()  # after the COMMIT: the record is never ahead of the database
        item = self.get(str(report["report_id"]))
        assert item is not None
        return item

    def get(self, report_id: str) -> OutboxItem | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE report_id = ?", (report_id,)
        ).fetchone()
        return OutboxItem(*row) if row else None

    def find(self, factory_id: str, period_slot: str) -> OutboxItem | None:
        """The report queued for `period_slot` ('day/2026-11-21/0'), if any."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE factory_id = ? AND period_slot = ?",
            (factory_id, period_slot),
        ).fetchone()
        return OutboxItem(*row) if row else None

    def window(self, factory_id: str, size: int) -> list[OutboxItem]:
        """The first `size` unacknowledged rows in seq order: the send window."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM outbox "
            "WHERE factory_id = ? AND state IN ('pending','inflight')"
            " ORDER BY seq LIMIT ?",
            (factory_id, size),
        ).fetchall()
        return [OutboxItem(*row) for row in rows]

    def mark_sent(self, report_id: str, next_attempt_at_mono: float) -> None:
        self._db.execute(
            "UPDATE outbox SET state = 'inflight', attempts = attempts + 1, "
            "next_attempt_at_mono = ? WHERE report_id = ? AND state IN ('pending','inflight')",
            (next_attempt_at_mono, report_id),
        )

    def postpone(self, report_id: str, next_attempt_at_mono: float, error: str) -> None:
        self._db.execute(
            "UPDATE outbox SET next_attempt_at_mono = ?, last_error = ? "
            "WHERE report_id = ? AND state IN ('pending','inflight')",
            (next_attempt_at_mono, error[:500], report_id),
        )

    def apply_receipt(
        self, report_id: str, payload_sha256: str, status: str, receipt_jws: str, reason: str | None
    ) -> bool:
        """Record a verified receipt; True if it matched an open row by id AND hash.

        accepted/duplicate -> acked; rejected -> quarantined with the reason.
        """
        state = ACKED if status in ("accepted", "duplicate") else REJECTED
        cursor = self._db.execute(
            "UPDATE outbox SET state = ?, receipt_jws = ?, acked_at = ?, last_error = ? "
            "WHERE report_id = ? AND payload_sha256 = ? AND state IN ('pending','inflight')",
            (state, receipt_jws, time.time(), reason, report_id, payload_sha256),
        )
        return cursor.rowcount == 1

    def release(self, report_id: str) -> bool:
        """Operator action, once the cause is fixed: send a quarantined (rejected) row again.

        The row goes back to pending, due at once, with its signed bytes unchanged. The
        rejection receipt, its time and reason, and the attempt count are cleared: the row is
        open again and only a new receipt closes it. True if the row was rejected.
        """
        cursor = self._db.execute(
            "UPDATE outbox SET state = 'pending', next_attempt_at_mono = 0, attempts = 0, "
            "receipt_jws = NULL, acked_at = NULL, last_error = NULL "
            "WHERE report_id = ? AND state = 'rejected'",
            (report_id,),
        )
        return cursor.rowcount == 1

    def items(self, factory_id: str | None = None) -> list[OutboxItem]:
        sql = f"SELECT {_COLUMNS} FROM outbox"
        args: tuple[str, ...] = ()
        if factory_id is not None:
            sql += " WHERE factory_id = ?"
            args = (factory_id,)
        return [
            OutboxItem(*row) for row in self._db.execute(sql + " ORDER BY factory_id, seq", args)
        ]

    def counts(self) -> dict[str, int]:
        counts = {PENDING: 0, INFLIGHT: 0, ACKED: 0, REJECTED: 0}
        for state, number in self._db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state"):
            counts[str(state)] = int(number)
        return counts

    def oldest_unacked_at(self, factory_id: str) -> float | None:
        """Creation time (epoch s) of the oldest report still waiting for its receipt."""
        row = self._db.execute(
            "SELECT MIN(created_at) FROM outbox WHERE factory_id = ? "
            "AND state IN ('pending','inflight')",
            (factory_id,),
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def unacked(self) -> int:
        counts = self.counts()
        return counts[PENDING] + counts[INFLIGHT]
