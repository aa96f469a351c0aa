"""The agent's watch on the bureau's transparency log (docs/reliability.md §b.9).

Every receipt for a report the bureau stored carries the bureau's signed tree head right
after that report's leaf, the report's inclusion proof, and a consistency proof (the
*link*) from the head of the factory's previous leaf (agent/protocol/translog.py). So the
heads of one factory's receipts form a chain, and the monitor walks it: it keeps every head
it verified in outbox.db (`log_heads`, durable before the row is acknowledged) and admits a
receipt as an acknowledgement only when its head verifies with a pinned bureau key,
includes the report, and is either a head it holds (same size, same root) or extends the
newest one it holds by the receipt's link. The first head is trusted on first use.

- **Alarm** (the bureau's log lost or changed something it had shown this factory): two
  roots for one size, a proof that fails, a link that starts before the newest head held
  (the factory's latest leaf went missing), a head between held ones that is not on the
  chain, a receipt without a log after heads were seen. Logged at ERROR once, kept in
  `log_alarms` (`tieragent status` shows it), counted; the receipt acknowledges nothing.
- **Unlinked**: the link starts at a head not held yet (an earlier receipt of the factory
  was lost or comes later). The receipt acknowledges nothing; the report is resent and its
  (byte-identical) receipt comes again after the missing one.
- A receipt without a `log` member is admitted while no head has been seen: a bureau from
  before the log. Rejected receipts and receipts holding a report unstored carry none.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from agent.protocol.envelope import Kind, unverified_payload
from agent.protocol.translog import LogHead, LogProofError, check_receipt_log, consistent

log = logging.getLogger("tieragent.log_monitor")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log_heads (
    tree_size INTEGER PRIMARY KEY,
    root_hash TEXT NOT NULL,
    sth_jws TEXT NOT NULL,
    verified_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS log_alarms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    report_id TEXT,
    detail TEXT NOT NULL,
    sth_jws TEXT
);
"""
ALARM_ROWS = 1000  # the alarms kept (a misbehaving bureau answers every resend)


class Verdict(StrEnum):
    ADMIT = "admit"
    ALARM = "alarm"
    UNLINKED = "unlinked"


class LogMonitor:
    """Checks receipts against the log heads kept on `db` (the outbox's connection; one
    thread). `keys`: the pinned bureau keys, kid -> public JWK."""

    def __init__(self, db: sqlite3.Connection, keys: Mapping[str, dict[str, Any]]) -> None:
        self.db = db
        self.keys = keys
        self._logged_alarm = False
        self._waiting_for: int | None = None
        db.executescript(_SCHEMA)

    def check(self, receipt: Mapping[str, Any]) -> Verdict:
        """Whether a receipt (its signature already verified) may acknowledge its report."""
        member = receipt.get("log")
        if member is None:
            stored = receipt.get("status") in ("accepted", "duplicate") or (
                receipt.get("status") == "pending" and receipt.get("state") is not None
            )
            if not stored or self._newest() is None:
                return Verdict.ADMIT
            return self._alarm(receipt, None, "the receipt for a stored report carries no log "
                                              "proof, although this bureau's log was seen")
        try:
            entry = check_receipt_log(member, str(receipt.get("report_sha256")), self.keys)
        except LogProofError as error:
            return self._alarm(receipt, None, str(error))
        head = entry.head
        held = self._held(head.tree_size)
        if held is not None:
            if held == head.root_hash.hex():
                return Verdict.ADMIT
            return self._alarm(receipt, head, f"the log head of size {head.tree_size} now has "
                               f"root {head.root_hash.hex()[:16]}…, not {held[:16]}… as before")
        newest = self._newest()
        if newest is None:
            self._keep(head)  # trust on first use
            return Verdict.ADMIT
        if head.tree_size < newest.tree_size:
            if head.tree_size < self._first_size():
                return Verdict.ADMIT  # older than the watch: nothing to compare it with
            return self._alarm(receipt, head, f"a log head of size {head.tree_size} lies "
                               "between heads of this factory's chain but is not one of them")
        if entry.link_from == newest.tree_size:
            if consistent(newest, head, entry.link):
                self._keep(head)
                return Verdict.ADMIT
            return self._alarm(receipt, head, f"the log head {head.describe()} does not extend "
                               f"the last one seen ({newest.describe()}): the proof fails")
        if entry.link_from is None or entry.link_from < newest.tree_size:
            return self._alarm(receipt, head, f"the log head {head.describe()} skips the last "
                               f"one seen ({newest.describe()}): its link starts at size "
                               f"{entry.link_from or 0}")
        if self._waiting_for != entry.link_from:
            self._waiting_for = entry.link_from
            log.warning("A receipt's log head links from a head not seen yet; its report is "
                        "resent after the missing receipt.", extra={"fields": {
                            "report_id": receipt.get("report_id"),
                            "link_from": entry.link_from, "held": newest.tree_size}})
        return Verdict.UNLINKED

    # ---- the heads held ----------------------------------------------------------------

    def _held(self, size: int) -> str | None:
        row = self.db.execute(
            "SELECT root_hash FROM log_heads WHERE tree_size = ?", (size,)
        ).fetchone()
        return str(row[0]) if row else None

    def _newest(self) -> LogHead | None:
        row = self.db.execute(
            "SELECT tree_size, root_hash, sth_jws FROM log_heads ORDER BY tree_size DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        payload = unverified_payload(row[2], Kind.LOG_HEAD)  # verified when it was kept
        return LogHead(str(payload.get("bureau_id")), int(row[0]), bytes.fromhex(row[1]),
                       str(payload.get("timestamp")), str(row[2]))

    def _first_size(self) -> int:
        return int(self.db.execute("SELECT MIN(tree_size) FROM log_heads").fetchone()[0])

    def _keep(self, head: LogHead) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO log_heads (tree_size, root_hash, sth_jws, verified_at) "
            "VALUES (?, ?, ?, ?)",
            (head.tree_size, head.root_hash.hex(), head.jws, time.time()),
        )

    def _alarm(self, receipt: Mapping[str, Any], head: LogHead | None, detail: str) -> Verdict:
        report_id = receipt.get("report_id")
        self.db.execute(
            "INSERT INTO log_alarms (at, report_id, detail, sth_jws) VALUES (?, ?, ?, ?)",
            (time.time(), report_id if isinstance(report_id, str) else None, detail[:500],
             head.jws if head else None),
        )
        self.db.execute(
            "DELETE FROM log_alarms WHERE id <= (SELECT MAX(id) FROM log_alarms) - ?",
            (ALARM_ROWS,),
        )
        if not self._logged_alarm:
            self._logged_alarm = True
            log.error(
                "The bureau's transparency log is inconsistent with what it showed this "
                "factory before: %s. Receipts no longer acknowledge reports; keep outbox.db "
                "as evidence and tell the bureau (tieragent status shows the alarm).", detail,
                extra={"fields": {"report_id": report_id, "detail": detail}},
            )
        return Verdict.ALARM


def read_log_status(db: sqlite3.Connection) -> dict[str, Any] | None:
    """The newest head held and the alarms, for `tieragent status` (None before the watch
    ever ran on this outbox)."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"log_heads", "log_alarms"} <= tables:
        return None
    head = db.execute(
        "SELECT tree_size, root_hash, sth_jws, verified_at FROM log_heads "
        "ORDER BY tree_size DESC LIMIT 1"
    ).fetchone()
    count = int(db.execute("SELECT COUNT(*) FROM log_alarms").fetchone()[0])
    last = db.execute(
        "SELECT at, report_id, detail FROM log_alarms ORDER BY id DESC LIMIT 1"
    ).fetchone()
    newest = None
    if head is not None:
        payload = unverified_payload(head[2], Kind.LOG_HEAD)
        newest = {"tree_size": int(head[0]), "root_hash": str(head[1]),
                  "timestamp": payload.get("timestamp"), "verified_at": float(head[3])}
    return {
        "head": newest,
        "heads_held": int(db.execute("SELECT COUNT(*) FROM log_heads").fetchone()[0]),
        "alarms": count,
        "last_alarm": None if last is None else {
            "at": float(last[0]), "report_id": last[1], "detail": str(last[2])},
    }
