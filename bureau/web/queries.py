"""Read-only queries of the portal on the bureau database (bureau.database: SQLite or
PostgreSQL; SQL with named parameters that both run, the style of bureau.registry).

The factory list is built from a handful of grouped queries, whatever the number of
factories: per-factory counts, the latest accepted daily report, accepted days per year,
chain holes, reports without a log leaf, rejections. Only the latest report's payload is
decoded (for the tier it states), once per report id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.protocol.envelope import EnvelopeError, Kind, unverified_payload
from bureau.database import Database


@dataclass(frozen=True, slots=True)
class FactoryRow:
    """One factory as the bureau holds it (a line of the factory list)."""

    factory_id: str
    reports: int
    pending_link: int
    last_received_at: float | None
    last_day: str | None  # period key of the latest accepted daily report
    last_report_id: str | None
    last_issued_at: str | None
    tier_reached: str | None  # as the latest accepted daily report states it
    accepted_days: dict[str, int]  # year -> days with an accepted daily report
    chain_gaps: int  # holes in the held sequence numbers
    not_in_log: int  # stored reports without a transparency-log leaf
    rejections: int
    keys_active: int


@dataclass(frozen=True, slots=True)
class ChainRow:
    report_id: str
    seq: int
    period_kind: str
    period_key: str
    revision: int
    state: str
    kid: str
    received_at: float
    payload_sha256: str
    prev_sha256: str
    in_log: bool


@dataclass(frozen=True, slots=True)
class RejectionRow:
    id: int
    received_at: float
    reason: str
    detail: str
    report_id: str | None
    period_kind: str | None
    period_key: str | None
    message_sha256: str


_STATED: dict[str, tuple[str | None, str | None]] = {}
_STATED_LIMIT = 65_536


def _stated(db: Database, report_id: str) -> tuple[str | None, str | None]:
    """(tier_reached, issued_at) as a stored report states them. Reports never change, so
    the answer is kept per report id (the JWS is read and decoded once)."""
    known = _STATED.get(report_id)
    if known is not None:
        return known
    jws = db.scalar("SELECT jws FROM reports WHERE report_id = :report_id",
                    {"report_id": report_id})
    tier, issued = None, None
    if jws is not None:
        try:
            payload = unverified_payload(jws, Kind.REPORT)
        except EnvelopeError:
            payload = {}
        evaluation = payload.get("evaluation") or {}
        stated = evaluation.get("tier_reached") if isinstance(evaluation, dict) else None
        tier, issued = (str(stated) if stated else None), (str(payload.get("issued_at") or "")
                                                             or None)
    if len(_STATED) >= _STATED_LIMIT:
        _STATED.clear()
    _STATED[report_id] = (tier, issued)
    return tier, issued


def _grouped(db: Database, sql: str) -> dict[str, Any]:
    return {row[0]: row[1] for row in db.rows(sql) if row[0] is not None}


def factory_rows(db: Database) -> list[FactoryRow]:
    """Every factory with an enrolled key or a stored report, by factory id."""
    counts = {
        row[0]: (row[1], row[2], row[3])
        for row in db.rows(
            "SELECT factory_id, COUNT(*), SUM(CASE WHEN state = 'pending-link' THEN 1 ELSE 0 "
            "END), MAX(received_at) FROM reports GROUP BY factory_id"
        )
    }
    latest = {
        row[0]: (row[1], row[2])
        for row in db.rows(
            "SELECT factory_id, report_id, period_key FROM ("
            "SELECT factory_id, report_id, period_key, ROW_NUMBER() OVER ("
            "PARTITION BY factory_id ORDER BY period_key DESC, revision DESC) AS n "
            "FROM reports WHERE period_kind = 'day' AND state = 'accepted') AS ranked "
            "WHERE n = 1"
        )
    }
    days: dict[str, dict[str, int]] = {}
    for factory_id, year, count in db.rows(
        "SELECT factory_id, substr(period_key, 1, 4), COUNT(DISTINCT period_key) FROM reports "
        "WHERE period_kind = 'day' AND state = 'accepted' GROUP BY factory_id, "
        "substr(period_key, 1, 4)"
    ):
        days.setdefault(factory_id, {})[year] = int(count)
    gaps = _grouped(
        db,
        "SELECT r.factory_id, COUNT(*) FROM reports r WHERE r.seq > (SELECT MIN(m.seq) FROM "
        "reports m WHERE m.factory_id = r.factory_id) AND NOT EXISTS (SELECT 1 FROM reports p "
        "WHERE p.factory_id = r.factory_id AND p.seq = r.seq - 1) GROUP BY r.factory_id",
    )
    unlogged = _grouped(
        db,
        "SELECT r.factory_id, COUNT(*) FROM reports r WHERE NOT EXISTS (SELECT 1 FROM "
        "log_leaves l WHERE l.report_id = r.report_id AND l.payload_sha256 = r.payload_sha256) "
        "GROUP BY r.factory_id",
    )
    rejected = _grouped(db, "SELECT factory_id, COUNT(*) FROM rejections GROUP BY factory_id")
    active = _grouped(
        db, "SELECT factory_id, COUNT(*) FROM keys WHERE status = 'active' GROUP BY factory_id"
    )
    enrolled = {row[0] for row in db.rows("SELECT DISTINCT factory_id FROM keys")}
    rows: list[FactoryRow] = []
    for factory_id in sorted(enrolled | set(counts)):
        total, pending, received = counts.get(factory_id, (0, 0, None))
        report_id, day = latest.get(factory_id, (None, None))
        tier, issued = _stated(db, report_id) if report_id else (None, None)
        rows.append(
            FactoryRow(
                factory_id=factory_id,
                reports=int(total),
                pending_link=int(pending or 0),
                last_received_at=received,
                last_day=day,
                last_report_id=report_id,
                last_issued_at=issued,
                tier_reached=tier,
                accepted_days=days.get(factory_id, {}),
                chain_gaps=int(gaps.get(factory_id, 0)),
                not_in_log=int(unlogged.get(factory_id, 0)),
                rejections=int(rejected.get(factory_id, 0)),
                keys_active=int(active.get(factory_id, 0)),
            )
        )
    return rows


def chain_rows(db: Database, factory_id: str) -> list[ChainRow]:
    """The factory's stored reports in sequence order, with when the bureau received each
    and whether the transparency log has its leaf."""
    rows = db.rows(
        "SELECT r.report_id, r.seq, r.period_kind, r.period_key, r.revision, r.state, r.kid, "
        "r.received_at, r.payload_sha256, r.prev_sha256, EXISTS (SELECT 1 FROM log_leaves l "
        "WHERE l.report_id = r.report_id AND l.payload_sha256 = r.payload_sha256) "
        "FROM reports r WHERE r.factory_id = :factory_id "
        "ORDER BY r.seq",
        {"factory_id": factory_id},
    )
    return [
        ChainRow(
            report_id=r[0], seq=r[1], period_kind=r[2], period_key=r[3], revision=r[4],
            state=r[5], kid=r[6], received_at=r[7], payload_sha256=r[8], prev_sha256=r[9],
            in_log=bool(r[10]),
        )
        for r in rows
    ]


def rejection_rows(db: Database, factory_id: str) -> list[RejectionRow]:
    """The factory's quarantined messages, oldest first (without their bytes)."""
    rows = db.rows(
        "SELECT id, received_at, reason, detail, report_id, period_kind, period_key, "
        "message_sha256 FROM rejections WHERE factory_id = :factory_id ORDER BY id",
        {"factory_id": factory_id},
    )
    return [RejectionRow(*row) for row in rows]


def factory_known(db: Database, factory_id: str) -> bool:
    row = db.row(
        "SELECT 1 FROM keys WHERE factory_id = :factory_id UNION ALL "
        "SELECT 1 FROM reports WHERE factory_id = :factory_id LIMIT 1",
        {"factory_id": factory_id},
    )
    return row is not None


def issued_at(db: Database, report_id: str) -> str | None:
    """The issued_at a stored report states (cached per report id)."""
    return _stated(db, report_id)[1]
