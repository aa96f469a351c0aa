"""Bureau storage: the `ReportStore` interface and its SQLite implementation.

One SQLite file (WAL, synchronous=FULL) holds enrolled keys (bureau.registry), reports
with their original JWS bytes kept verbatim, the receipts sent for them, a bounded
forensic quarantine of rejected messages, and the transparency log's leaves and latest
signed head (bureau.translog). The receiver runs each message in one
`transaction()`; the receipt is published only after it commits.

For the annual evaluation: `reports_for_year(factory_id, year)` returns a factory's daily
reports of a year with payloads and states (accepted, pending-link, rejected).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.protocol.envelope import Kind, unverified_payload
from bureau import measures_table
from bureau.errors import BureauError
from bureau.indicator_check import DaySums

ACCEPTED, PENDING_LINK, REJECTED = "accepted", "pending-link", "rejected"
QUARANTINE_LIMIT = 10_000

_SCHEMA = """
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


class ReportStoreError(BureauError):
    """The bureau database cannot be used; str() names the file and the next step."""


@dataclass(frozen=True, slots=True)
class StoredReport:
    report_id: str
    factory_id: str
    seq: int
    period_kind: str
    period_key: str
    revision: int
    kid: str
    payload_sha256: str
    prev_sha256: str
    jws: str
    state: str
    received_at: float
    receipt_jws: str
    receipt_sha256: str

    def payload(self) -> dict[str, Any]:
        """The signed payload (decoded from the verbatim JWS)."""
        return unverified_payload(self.jws, Kind.REPORT)


@dataclass(frozen=True, slots=True)
class Rejection:
    factory_id: str | None
    topic: str
    reason: str
    detail: str
    report_id: str | None
    period_kind: str | None
    period_key: str | None
    message_sha256: str
    size: int
    jws: str | None
    received_at: float


@dataclass(frozen=True, slots=True)
class YearEntry:
    """One report of a factory's year, whatever its state; `payload` None if unreadable."""

    report_id: str | None
    period_key: str
    state: str
    reason: str | None
    payload: dict[str, Any] | None
    jws: str | None


class ReportStore(Protocol):
    """What the receiver and the annual evaluation need from storage."""

    def transaction(self) -> Any: ...
    def get(self, report_id: str) -> StoredReport | None: ...
    def by_seq(self, factory_id: str, seq: int) -> StoredReport | None: ...
    def insert(self, report: StoredReport) -> None: ...
    def record_measures(self, report: dict[str, Any], sums: DaySums | None) -> None: ...
    def set_state(self, report_id: str, state: str) -> None: ...
    def evict(self, report_id: str, reason: str, detail: str) -> StoredReport | None: ...
    def quarantine(self, rejection: Rejection) -> None: ...
    def alert(self, factory_id: str | None, kind: str, detail: str) -> None: ...
    def reports(self, factory_id: str) -> list[StoredReport]: ...
    def reports_for_year(
        self, factory_id: str, year: int, kind: str = "day"
    ) -> list[YearEntry]: ...


_REPORT_COLUMNS = (
    "report_id, factory_id, seq, period_kind, period_key, revision, kid, payload_sha256, "
    "prev_sha256, jws, state, received_at, receipt_jws, receipt_sha256"
)


class SqliteReportStore:
    """SQLite implementation of ReportStore (also hosts the key table of bureau.registry)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(
                path, isolation_level=None, timeout=30.0, check_same_thread=False
            )
            self.db.execute("PRAGMA busy_timeout=30000")
            row = self.db.execute("PRAGMA quick_check").fetchone()
            if row is None or row[0] != "ok":
                raise ReportStoreError(
                    f"{path}: integrity check failed; the file was not modified."
                )
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
            measures_table.create(self.db)
            _add_missing_columns(self.db)
        except sqlite3.DatabaseError as error:
            raise ReportStoreError(
                f"{path}: the bureau database cannot be opened ({error})."
            ) from None

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (several receivers may share
        the file through shared subscriptions; IMMEDIATE serialises their writes)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def get(self, report_id: str) -> StoredReport | None:
        row = self.db.execute(
            f"SELECT {_REPORT_COLUMNS} FROM reports WHERE report_id = ?", (report_id,)
        ).fetchone()
        return StoredReport(*row) if row else None

    def by_seq(self, factory_id: str, seq: int) -> StoredReport | None:
        row = self.db.execute(
            f"SELECT {_REPORT_COLUMNS} FROM reports WHERE factory_id = ? AND seq = ?",
            (factory_id, seq),
        ).fetchone()
        return StoredReport(*row) if row else None

    def insert(self, report: StoredReport) -> None:
        self.db.execute(
            f"INSERT INTO reports ({_REPORT_COLUMNS}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                report.report_id,
                report.factory_id,
                report.seq,
                report.period_kind,
                report.period_key,
                report.revision,
                report.kid,
                report.payload_sha256,
                report.prev_sha256,
                report.jws,
                report.state,
                report.received_at,
                report.receipt_jws,
                report.receipt_sha256,
            ),
        )

    def record_measures(self, report: dict[str, Any], sums: DaySums | None) -> None:
        """A stored daily report's base measures in columns (bureau.measures_table)."""
        measures_table.record(self.db, report, sums)

    def set_state(self, report_id: str, state: str) -> None:
        self.db.execute("UPDATE reports SET state = ? WHERE report_id = ?", (state, report_id))

    def evict(self, report_id: str, reason: str, detail: str) -> StoredReport | None:
        """Move a stored pending-link report to the rejections: an orphan that a genuine
        report contradicts must not hold a sequence number of the real chain."""
        row = self.get(report_id)
        if row is None:
            return None
        self.db.execute("DELETE FROM reports WHERE report_id = ?", (report_id,))
        self.quarantine(
            Rejection(
                factory_id=row.factory_id, topic="", reason=reason, detail=detail,
                report_id=row.report_id, period_kind=row.period_kind,
                period_key=row.period_key, message_sha256=row.payload_sha256, size=len(row.jws),
                jws=row.jws, received_at=row.received_at,
            )
        )
        return row

    def quarantine(self, rejection: Rejection) -> None:
        self.db.execute(
            "INSERT INTO rejections (factory_id, topic, reason, detail, report_id, period_kind, "
            "period_key, message_sha256, size, jws, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rejection.factory_id,
                rejection.topic[:256],
                rejection.reason,
                rejection.detail[:500],
                rejection.report_id,
                rejection.period_kind,
                rejection.period_key,
                rejection.message_sha256,
                rejection.size,
                rejection.jws,
                rejection.received_at,
            ),
        )
        # Bounded forensic quarantine: hostile traffic must not fill the disk.
        self.db.execute(
            "DELETE FROM rejections WHERE id <= (SELECT MAX(id) FROM rejections) - ?",
            (QUARANTINE_LIMIT,),
        )

    def alert(self, factory_id: str | None, kind: str, detail: str) -> None:
        self.db.execute(
            "INSERT INTO alerts (factory_id, kind, detail, at) VALUES (?, ?, ?, ?)",
            (factory_id, kind, detail[:500], time.time()),
        )

    def alerts(self) -> list[tuple[str | None, str, str]]:
        return [
            (r[0], r[1], r[2])
            for r in self.db.execute("SELECT factory_id, kind, detail FROM alerts ORDER BY id")
        ]

    def rejections(self) -> list[Rejection]:
        rows = self.db.execute(
            "SELECT factory_id, topic, reason, detail, report_id, period_kind, period_key, "
            "message_sha256, size, jws, received_at FROM rejections ORDER BY id"
        ).fetchall()
        return [Rejection(*row) for row in rows]

    def reports(self, factory_id: str) -> list[StoredReport]:
        rows = self.db.execute(
            f"SELECT {_REPORT_COLUMNS} FROM reports WHERE factory_id = ? ORDER BY seq",
            (factory_id,),
        ).fetchall()
        return [StoredReport(*row) for row in rows]

    def all_reports(self) -> list[StoredReport]:
        rows = self.db.execute(f"SELECT {_REPORT_COLUMNS} FROM reports ORDER BY factory_id, seq")
        return [StoredReport(*row) for row in rows]

    def pending_links_older_than(self, cutoff: float) -> list[StoredReport]:
        """Pending-link rows received before `cutoff` not yet alerted; marks them alerted."""
        rows = self.db.execute(
            f"SELECT {_REPORT_COLUMNS} FROM reports WHERE state = 'pending-link' AND alerted = 0 "
            "AND received_at < ?",
            (cutoff,),
        ).fetchall()
        for row in rows:
            self.db.execute("UPDATE reports SET alerted = 1 WHERE report_id = ?", (row[0],))
        return [StoredReport(*row) for row in rows]

    def reports_for_year(self, factory_id: str, year: int, kind: str = "day") -> list[YearEntry]:
        """Every report of the factory whose period lies in `year`, with payload and state.

        Rejected entries come from the quarantine and carry a payload only when the message
        got as far as a verified signature.
        """
        prefix = f"{year:04d}"
        entries = [
            YearEntry(r.report_id, r.period_key, r.state, None, r.payload(), r.jws)
            for r in self.reports(factory_id)
            if r.period_kind == kind and r.period_key.startswith(prefix)
        ]
        for rej in self.rejections():
            if (
                rej.factory_id == factory_id
                and rej.period_kind == kind
                and rej.period_key
                and rej.period_key.startswith(prefix)
            ):
                payload = unverified_payload(rej.jws, Kind.REPORT) if rej.jws else None
                entries.append(
                    YearEntry(rej.report_id, rej.period_key, REJECTED, rej.reason, payload, rej.jws)
                )
        entries.sort(key=lambda e: (e.period_key, e.state != ACCEPTED))
        return entries

    def integrity_ok(self) -> bool:
        return bool(self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")



def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Columns added after a table was first created (CREATE IF NOT EXISTS keeps old tables)."""
    rotation_columns = {row[1] for row in db.execute("PRAGMA table_info(rotations)")}
    if "effective_from_seq" not in rotation_columns:
        db.execute("ALTER TABLE rotations ADD COLUMN effective_from_seq INTEGER")
