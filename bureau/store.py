"""Bureau storage: the `ReportStore` interface and its SQL implementation.

One database (bureau/database.py: a SQLite file in WAL with synchronous=FULL, or
PostgreSQL; its schema is bureau/migrations/) holds enrolled keys (bureau.registry),
reports with their original JWS bytes kept verbatim, the receipts sent for them, a bounded
forensic quarantine of rejected messages, and the transparency log's leaves and latest
signed head (bureau.translog). The receiver runs each message in one `transaction()`,
starting with `lock_factory`; the receipt is published only after it commits.

For the annual evaluation: `reports_for_year(factory_id, year)` returns a factory's daily
reports of a year with payloads and states (accepted, pending-link, rejected).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.protocol.envelope import Kind, unverified_payload
from bureau import measures_table
from bureau.database import Database, ReportStoreError
from bureau.indicator_check import DaySums

__all__ = ["ReportStoreError", "SqlReportStore", "SqliteReportStore", "StoredReport"]

ACCEPTED, PENDING_LINK, REJECTED = "accepted", "pending-link", "rejected"
QUARANTINE_LIMIT = 10_000


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
    def chain_rows(self, report_id: str, factory_id: str, seq: int) -> list[StoredReport]: ...
    def prefetch_chain_rows(
        self, report_id: str, factory_id: str, seq: int
    ) -> Callable[[], list[StoredReport]]: ...
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
_REJECTION_COLUMNS = (
    "factory_id, topic, reason, detail, report_id, period_kind, period_key, message_sha256, "
    "size, jws, received_at"
)


_CHAIN_ROWS = (
    f"SELECT {_REPORT_COLUMNS} FROM reports WHERE report_id = :report_id "
    "OR (factory_id = :factory_id AND seq BETWEEN :low AND :high)"
)


def _chain_args(report_id: str, factory_id: str, seq: int) -> dict[str, Any]:
    return {"report_id": report_id, "factory_id": factory_id, "low": seq - 1, "high": seq + 1}


class SqlReportStore:
    """ReportStore on SQLite or PostgreSQL (bureau.database); `db` also hosts the key table
    of bureau.registry and the log of bureau.translog.

    `target`: a file path (SQLite) or a postgresql:// URL."""

    def __init__(self, target: Path | str) -> None:
        self.db = Database(target)
        self.path = self.db.path
        self.name = self.db.name  # the file, or the URL without its password

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction (BEGIN IMMEDIATE on SQLite), rolled back on any exception."""
        with self.db.transaction():
            yield

    def lock_factory(self, factory_id: str) -> None:
        """Inside a transaction: this factory's messages wait for each other until COMMIT,
        so chain checks see what the previous one stored (several receivers, PostgreSQL)."""
        self.db.lock_factory(factory_id)

    def get(self, report_id: str) -> StoredReport | None:
        row = self.db.row(
            f"SELECT {_REPORT_COLUMNS} FROM reports WHERE report_id = :report_id",
            {"report_id": report_id},
        )
        return StoredReport(*row) if row else None

    def by_seq(self, factory_id: str, seq: int) -> StoredReport | None:
        row = self.db.row(
            f"SELECT {_REPORT_COLUMNS} FROM reports WHERE factory_id = :factory_id AND seq = :seq",
            {"factory_id": factory_id, "seq": seq},
        )
        return StoredReport(*row) if row else None

    def chain_rows(self, report_id: str, factory_id: str, seq: int) -> list[StoredReport]:
        """In one query, what the chain checks of a new report look at: the report stored
        under its id, and the factory's reports at seq - 1, seq and seq + 1."""
        rows = self.db.tuples(_CHAIN_ROWS, _chain_args(report_id, factory_id, seq))
        return [StoredReport(*row) for row in rows]

    def prefetch_chain_rows(
        self, report_id: str, factory_id: str, seq: int
    ) -> Callable[[], list[StoredReport]]:
        """`chain_rows`, sent with the next query of a batched block (Database.prefetch):
        the receiver asks for them before the signature is checked, with the key."""
        rows = self.db.prefetch(_CHAIN_ROWS, _chain_args(report_id, factory_id, seq))
        return lambda: [StoredReport(*row) for row in rows()]

    def insert(self, report: StoredReport) -> None:
        self.db.execute(
            f"INSERT INTO reports ({_REPORT_COLUMNS}) VALUES (:report_id, :factory_id, :seq, "
            ":period_kind, :period_key, :revision, :kid, :payload_sha256, :prev_sha256, :jws, "
            ":state, :received_at, :receipt_jws, :receipt_sha256)",
            {name: getattr(report, name) for name in StoredReport.__slots__},
        )

    def record_measures(self, report: dict[str, Any], sums: DaySums | None) -> None:
        """A new daily report's base measures in columns (bureau.measures_table). Its id has
        none: a report's rows leave with it (`evict`), so nothing is replaced."""
        measures_table.record(self.db, report, sums, replace=False)

    def set_state(self, report_id: str, state: str) -> None:
        self.db.execute(
            "UPDATE reports SET state = :state WHERE report_id = :report_id",
            {"state": state, "report_id": report_id},
        )

    def evict(self, report_id: str, reason: str, detail: str) -> StoredReport | None:
        """Move a stored pending-link report to the rejections: an orphan that a genuine
        report contradicts must not hold a sequence number of the real chain."""
        row = self.get(report_id)
        if row is None:
            return None
        for table in ("reports", "report_measures", "measured_reports"):
            self.db.execute(f"DELETE FROM {table} WHERE report_id = :report_id",
                            {"report_id": report_id})
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
        values = {name: getattr(rejection, name) for name in Rejection.__slots__}
        values["topic"] = rejection.topic[:256]
        values["detail"] = rejection.detail[:500]
        self.db.execute(
            f"INSERT INTO rejections ({_REJECTION_COLUMNS}) VALUES (:factory_id, :topic, "
            ":reason, :detail, :report_id, :period_kind, :period_key, :message_sha256, :size, "
            ":jws, :received_at)",
            values,
        )
        # Bounded forensic quarantine: hostile traffic must not fill the disk.
        self.db.execute(
            "DELETE FROM rejections WHERE id <= (SELECT MAX(id) FROM rejections) - :limit",
            {"limit": QUARANTINE_LIMIT},
        )

    def alert(self, factory_id: str | None, kind: str, detail: str) -> None:
        self.db.execute(
            "INSERT INTO alerts (factory_id, kind, detail, at) "
            "VALUES (:factory_id, :kind, :detail, :at)",
            {"factory_id": factory_id, "kind": kind, "detail": detail[:500], "at": time.time()},
        )

    def alerts(self) -> list[tuple[str | None, str, str]]:
        return [
            (r[0], r[1], r[2])
            for r in self.db.rows("SELECT factory_id, kind, detail FROM alerts ORDER BY id")
        ]

    def rejections(self, factory_id: str | None = None) -> list[Rejection]:
        """The quarantine, oldest first (of one factory, when given)."""
        if factory_id is None:
            rows = self.db.rows(f"SELECT {_REJECTION_COLUMNS} FROM rejections ORDER BY id")
        else:
            rows = self.db.rows(
                f"SELECT {_REJECTION_COLUMNS} FROM rejections WHERE factory_id = :factory_id "
                "ORDER BY id",
                {"factory_id": factory_id},
            )
        return [Rejection(*row) for row in rows]

    def reports(self, factory_id: str) -> list[StoredReport]:
        rows = self.db.rows(
            f"SELECT {_REPORT_COLUMNS} FROM reports WHERE factory_id = :factory_id ORDER BY seq",
            {"factory_id": factory_id},
        )
        return [StoredReport(*row) for row in rows]

    def all_reports(self) -> list[StoredReport]:
        rows = self.db.rows(f"SELECT {_REPORT_COLUMNS} FROM reports ORDER BY factory_id, seq")
        return [StoredReport(*row) for row in rows]

    def pending_links_older_than(self, cutoff: float) -> list[StoredReport]:
        """Pending-link rows received before `cutoff` not yet alerted; marks them alerted.
        Each row is reported once, by one receiver: on PostgreSQL rows another transaction
        holds are skipped (it is using them; the next tick sees them)."""
        skip_locked = " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgresql" else ""
        rows = self.db.rows(
            f"UPDATE reports SET alerted = 1 WHERE report_id IN (SELECT report_id FROM reports "
            "WHERE state = 'pending-link' AND alerted = 0 AND received_at < :cutoff"
            f"{skip_locked}) RETURNING {_REPORT_COLUMNS}",
            {"cutoff": cutoff},
        )
        return sorted((StoredReport(*row) for row in rows), key=lambda r: (r.factory_id, r.seq))

    def reports_for_year(self, factory_id: str, year: int, kind: str = "day") -> list[YearEntry]:
        """Every report of the factory whose period lies in `year`, with payload and state.

        Rejected entries come from the quarantine and carry a payload only when the message
        got as far as a verified signature.
        """
        args = {"factory_id": factory_id, "kind": kind, "prefix": f"{year:04d}%"}
        where = "factory_id = :factory_id AND period_kind = :kind AND period_key LIKE :prefix"
        entries = [
            YearEntry(r.report_id, r.period_key, r.state, None, r.payload(), r.jws)
            for r in (StoredReport(*row) for row in self.db.rows(
                f"SELECT {_REPORT_COLUMNS} FROM reports WHERE {where} ORDER BY seq", args))
        ]
        for rej in (Rejection(*row) for row in self.db.rows(
            f"SELECT {_REJECTION_COLUMNS} FROM rejections WHERE {where} ORDER BY id", args
        )):
            payload = unverified_payload(rej.jws, Kind.REPORT) if rej.jws else None
            entries.append(
                YearEntry(rej.report_id, str(rej.period_key), REJECTED, rej.reason, payload,
                          rej.jws)
            )
        entries.sort(key=lambda e: (e.period_key, e.state != ACCEPTED))
        return entries

    def integrity_ok(self) -> bool:
        return self.db.integrity_ok()


# The name from before PostgreSQL, kept for callers not yet moved to SqlReportStore; it
# opens either kind of database.
SqliteReportStore = SqlReportStore
