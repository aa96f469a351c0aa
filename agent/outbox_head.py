"""The outbox's head record (`outbox.db.head`): a committed report lost with the WAL is noticed.

A report is committed once its frames are in `outbox.db-wal` (synchronous=FULL). A log cut
short (a damaged disk, a copy of a live database) loses the last commits silently: at the
next open SQLite stops at the last whole transaction, and the chain goes on from an earlier
seq as if the lost reports never existed. So after each COMMIT that adds a report, the last
report of every factory (seq, payload SHA-256, report_id, period slot) is also written to a
small JSON file beside the database, atomically and fsynced (`write_atomic`).

The order keeps one rule: the record is never ahead of what was committed. A crash between
the COMMIT and the write leaves it behind, which the next open repairs. A record ahead of the
database, or a seq whose row has another payload, means committed reports were lost, and
`Outbox` refuses to open, naming them (docs/operations.md#backup-and-restore). Moving the file
aside (or `Outbox(path, accept_head_loss=True)`) accepts the loss: the record is then taken
from the database again, as for an outbox written before the record existed.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.protocol.keys import write_atomic

HEAD_SUFFIX = ".head"
WAL_KEPT_SUFFIX = "-wal.at-loss"
_FORMAT = 1
# The Outboxes of one process (the report worker's and the publisher's) share write_atomic's
# temporary file name, so their writes of the record take turns.
_write_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Head:
    """The last committed report of one factory; report_id and period_slot are None only if
    its outbox row is gone (the chain_head table outlives rows)."""

    seq: int
    payload_sha256: str
    report_id: str | None
    period_slot: str | None


Heads = dict[str, Head]  # factory_id -> its last committed report


def head_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + HEAD_SUFFIX)


def read_heads(path: Path) -> Heads | None:
    """The record at `path`, or None if there is none. ValueError (what is wrong, as a phrase
    that follows "the head record") if it cannot be read or is not a head record."""
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ValueError(f"cannot be read: {error.strerror or error}") from None
    except ValueError as error:
        raise ValueError(f"is not valid JSON: {error}") from None
    if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
        raise ValueError(f"is not a head record of format {_FORMAT}")
    factories = raw.get("factories")
    if not isinstance(factories, dict):
        raise ValueError("has no `factories` object")
    return {str(factory): _head(factory, entry) for factory, entry in factories.items()}


def _head(factory: str, entry: Any) -> Head:
    if not isinstance(entry, dict):
        raise ValueError(f"has a malformed entry for factory {factory}")
    seq, digest = entry.get("seq"), entry.get("payload_sha256")
    report, slot = entry.get("report_id"), entry.get("period_slot")
    if (
        type(seq) is not int or seq < 1
        or not isinstance(digest, str) or len(digest) != 64
        or not (report is None or isinstance(report, str))
        or not (slot is None or isinstance(slot, str))
    ):
        raise ValueError(f"has a malformed entry for factory {factory}")
    return Head(seq, digest, report, slot)


def write_heads(path: Path, heads: Heads) -> None:
    """Replace the record atomically and durably; OSError if it cannot be written."""
    document = {
        "format": _FORMAT,
        "factories": {factory: asdict(head) for factory, head in sorted(heads.items())},
    }
    data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
    with _write_lock:
        write_atomic(path, data, mode=0o644)


def database_heads(db: sqlite3.Connection) -> Heads:
    """The chain head of every factory in the outbox database (current schema)."""
    rows = db.execute(
        "SELECT h.factory_id, h.seq, h.payload_sha256, o.report_id, o.period_slot "
        "FROM chain_head h LEFT JOIN outbox o ON o.factory_id = h.factory_id AND o.seq = h.seq"
    ).fetchall()
    return {str(r[0]): Head(int(r[1]), str(r[2]), r[3], r[4]) for r in rows}


def lost_reports(db: sqlite3.Connection, recorded: Heads) -> list[str]:
    """One phrase per factory whose recorded head the database no longer holds; [] if none.

    Reads only (no write may reach the WAL before its damaged end is kept), and only columns
    every schema version has."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    problems = []
    for factory, head in sorted(recorded.items()):
        row = None
        if "chain_head" in tables:
            row = db.execute(
                "SELECT seq, payload_sha256 FROM chain_head WHERE factory_id = ?", (factory,)
            ).fetchone()
        last = int(row[0]) if row else 0
        if last < head.seq:
            span = f"seq {head.seq}" if last + 1 == head.seq else f"seqs {last + 1} to {head.seq}"
            problems.append(
                f"factory {factory}: {span} missing (the database ends at seq {last}; the "
                f"record's last report is seq {head.seq}, {_described(head)})"
            )
            continue
        found: tuple[str, str | None] | None = None
        if row and last == head.seq:
            found = (str(row[1]), None)
        if "outbox" in tables:
            stored = db.execute(
                "SELECT payload_sha256, report_id FROM outbox WHERE factory_id = ? AND seq = ?",
                (factory, head.seq),
            ).fetchone()
            found = (str(stored[0]), str(stored[1])) if stored else found
        if found is not None and found[0] != head.payload_sha256:
            now = f"report {found[1]}" if found[1] else "another report"
            problems.append(
                f"factory {factory}: seq {head.seq} is now {now} with payload SHA-256 "
                f"{found[0][:16]}, not the committed {_described(head)}"
            )
    return problems


def _described(head: Head) -> str:
    report = f"report {head.report_id}" if head.report_id else "a report"
    slot = f", period {head.period_slot}" if head.period_slot else ""
    return f"{report}{slot}, payload SHA-256 {head.payload_sha256[:16]}"


def keep_wal(db_path: Path) -> Path | None:
    """Copy the write-ahead log as found beside it (`outbox.db-wal.at-loss`) for analysis: the
    lost transaction's pages may still be in it, and closing the database checkpoints and
    deletes the log. The first copy is kept (a restart loop must not fill the disk); None if
    there is no log and no earlier copy, or the copy failed."""
    wal = db_path.with_name(db_path.name + "-wal")
    kept = db_path.with_name(db_path.name + WAL_KEPT_SUFFIX)
    if kept.exists():
        return kept
    try:
        if wal.stat().st_size == 0:
            return None
        shutil.copyfile(wal, kept)
    except OSError:
        return None
    return kept
