"""`tieragent status --data-dir data [--json]`: the agent's state from its data directory.

Reads outbox.db and agent.db read-only (no running agent needed, and a running agent is not
disturbed): the outbox by state, the last receipt, every quarantined report with its reason,
the oldest open report's age; per device the last sample and its age; the store's size, and
the raw samples' disk use against `collection.raw_quota_mb` (measured as the agent measures it,
`agent.store.quota`; the quota as the last `tieragent run` recorded it).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from agent.log_monitor import read_log_status
from agent.outbox import ACKED, INFLIGHT, PENDING, REJECTED
from agent.store.derived_rows import read_signal_issues
from agent.store.quota import MB, QUOTA_META_KEY, used_bytes
from tieragent.console import InvalidInput, handle_errors

NONE = "—"
OUTBOX_NAME, STORE_NAME = "outbox.db", "agent.db"


@dataclass
class Quarantined:
    report_id: str
    factory_id: str
    seq: int
    period_slot: str
    reason: str | None
    rejected_at: str | None


@dataclass
class OutboxStatus:
    path: str
    exists: bool
    counts: dict[str, int] = field(default_factory=dict)
    last_receipt_at: str | None = None
    oldest_open_report_id: str | None = None
    oldest_open_age_s: float | None = None
    quarantined: list[Quarantined] = field(default_factory=list)
    # The bureau's transparency log as the agent checked it (agent.log_monitor): the newest
    # head held and the alarms; None before any receipt was checked.
    log: dict[str, Any] | None = None


@dataclass
class DeviceStatus:
    device_id: str
    last_sample_at: str | None
    age_s: float | None


@dataclass
class StoreStatus:
    path: str
    exists: bool
    size_bytes: int | None = None
    raw_bytes: int | None = None
    raw_quota_bytes: int | None = None  # None until `tieragent run` recorded it
    devices: list[DeviceStatus] = field(default_factory=list)
    # Signal health of the last 24 hours (agent.derive.issues), per device, signal, cause.
    signal_issues: list[dict[str, object]] = field(default_factory=list)


ISSUE_WINDOW_S = 86400.0


def _iso(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.DatabaseError as error:
        raise InvalidInput(f"{path}: cannot be opened read-only ({error}).") from None
    with closing(db):
        try:
            yield db
        except sqlite3.DatabaseError as error:
            raise InvalidInput(
                f"{path}: cannot be read ({error}); is it an agent data file?"
            ) from None


def outbox_status(path: Path, now: float) -> OutboxStatus:
    status = OutboxStatus(str(path), path.is_file())
    if not status.exists:
        return status
    with _read_only(path) as db:
        status.counts = {PENDING: 0, INFLIGHT: 0, ACKED: 0, REJECTED: 0}
        for state, number in db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state"):
            status.counts[str(state)] = int(number)
        last = db.execute("SELECT MAX(acked_at) FROM outbox").fetchone()[0]
        status.last_receipt_at = _iso(last)
        oldest = db.execute(
            "SELECT report_id, created_at FROM outbox WHERE state IN ('pending','inflight') "
            "ORDER BY created_at, seq LIMIT 1"
        ).fetchone()
        if oldest is not None:
            status.oldest_open_report_id = str(oldest[0])
            status.oldest_open_age_s = round(max(0.0, now - float(oldest[1])), 1)
        status.quarantined = [
            Quarantined(str(r[0]), str(r[1]), int(r[2]), str(r[3]), r[4], _iso(r[5]))
            for r in db.execute(
                "SELECT report_id, factory_id, seq, period_slot, last_error, acked_at "
                "FROM outbox WHERE state = 'rejected' ORDER BY factory_id, seq"
            )
        ]
        status.log = read_log_status(db)
    return status


def store_status(path: Path, now: float) -> StoreStatus:
    status = StoreStatus(str(path), path.is_file())
    if not status.exists:
        return status
    status.size_bytes = sum(
        p.stat().st_size
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
        if p.is_file()
    )
    with _read_only(path) as db:
        status.raw_bytes = used_bytes(db)
        quota = db.execute("SELECT value FROM meta WHERE key = ?", (QUOTA_META_KEY,)).fetchone()
        status.raw_quota_bytes = int(quota[0]) if quota is not None else None
        # The newest hour of each device locates its last samples (sample_index, rowid range).
        rows = db.execute(
            "SELECT i.device_id, (SELECT MAX(s.received_ts) FROM samples s "
            "  WHERE s.rowid BETWEEN i.first_rowid AND i.last_rowid) "
            "FROM sample_index i WHERE i.hour_start = "
            "  (SELECT MAX(hour_start) FROM sample_index j WHERE j.device_id = i.device_id) "
            "ORDER BY i.device_id"
        ).fetchall()
        has_issues = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'signal_issues'"
        ).fetchone()
        if has_issues:  # a store written before signal health has no such table
            status.signal_issues = read_signal_issues(db, now - ISSUE_WINDOW_S, now + 3600)
    status.devices = [
        DeviceStatus(
            str(device),
            _iso(last),
            None if last is None else round(max(0.0, now - float(last)), 1),
        )
        for device, last in rows
    ]
    return status


def _age(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    minutes = int(seconds // 60)
    if minutes < 1:
        return f"{int(seconds)} s"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _size(size: int | None) -> str:
    if size is None:
        return NONE
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return NONE  # unreachable


def _text(value: Any) -> str:
    return NONE if value is None or value == "" else str(value)


def _print(console: Console, outbox: OutboxStatus, store: StoreStatus) -> None:
    summary = Table(title="Outbox", show_header=False, expand=False)
    summary.add_column("what", style="bold", no_wrap=True)
    summary.add_column("value", overflow="fold")
    summary.add_row("file", outbox.path if outbox.exists else f"{outbox.path} (none yet)")
    for state in (PENDING, INFLIGHT, ACKED, REJECTED):
        summary.add_row(state, _text(outbox.counts.get(state)))
    summary.add_row("last receipt", _text(outbox.last_receipt_at))
    oldest = (
        f"{_age(outbox.oldest_open_age_s)} ({outbox.oldest_open_report_id})"
        if outbox.oldest_open_report_id
        else NONE
    )
    summary.add_row("oldest pending", oldest)
    summary.add_row("bureau log", _log_text(outbox.log))
    console.print(summary)
    if outbox.log and outbox.log["last_alarm"]:
        alarm = outbox.log["last_alarm"]
        console.print(
            f"[bold red]ALARM[/]: the bureau's transparency log is inconsistent "
            f"({outbox.log['alarms']} receipt(s) refused, the last at {_iso(alarm['at'])}): "
            f"{alarm['detail']}", highlight=False)
    if outbox.quarantined:
        rejected = Table(title="Quarantined reports (rejected by the bureau)", show_lines=True)
        rejected.add_column("report, period, rejected at", no_wrap=True, min_width=36)
        rejected.add_column("reason", overflow="fold")
        for item in outbox.quarantined:
            rejected.add_row(
                f"{item.report_id}\n{item.period_slot} (seq {item.seq})\n"
                f"{_text(item.rejected_at)}",
                _text(item.reason),
            )
        console.print(rejected)
        console.print(
            "Fix the cause, then `tieragent report release --outbox "
            f"{outbox.path} REPORT_ID|--all`.", highlight=False,
        )
    devices = Table(title="Store")
    devices.add_column("device", overflow="fold")
    devices.add_column("last sample (UTC)", overflow="fold")
    devices.add_column("age", no_wrap=True)
    for device in store.devices:
        devices.add_row(device.device_id, _text(device.last_sample_at), _age(device.age_s))
    if not store.devices:
        devices.add_row(NONE, NONE, NONE)
    console.print(devices)
    if store.signal_issues:
        issues = Table(title="Signal problems, last 24 h (samples)")
        for name in ("device", "signal", "cause", "samples", "latest"):
            issues.add_column(name, overflow="fold")
        for issue in store.signal_issues:
            issues.add_row(str(issue["device_id"]), str(issue["signal_id"]), str(issue["cause"]),
                           f"{issue['samples']:,}", _text(issue["detail"]))
        console.print(issues)
    where = store.path if store.exists else f"{store.path} (none yet)"
    console.print(f"Store size on disk: {_size(store.size_bytes)} ({where})", highlight=False)
    if store.raw_bytes is not None:
        console.print("Raw samples (agent.db in use): "
                      f"{_quota_use(store.raw_bytes, store.raw_quota_bytes)}", highlight=False)


def _log_text(state: dict[str, Any] | None) -> str:
    if not state or state["head"] is None:
        return "no receipt with a log head yet"
    head = state["head"]
    text = (f"head size {head['tree_size']} ({head['timestamp']}), root "
            f"{head['root_hash'][:16]}…, {state['heads_held']} head(s) verified")
    return f"{text}; ALARM ({state['alarms']})" if state["alarms"] else f"{text}; consistent"


def _quota_use(used: int, quota: int | None) -> str:
    """`4.1 of 10,000.0 MB quota (0 %)`, with the alarm the agent raises at that use."""
    if quota is None:
        return f"{used / MB:,.1f} MB (quota not known yet: `tieragent run` records it)"
    share = used / quota
    alarm = ("  FULL: new samples are dropped" if share >= 1 else "  above 95 %" if share >= 0.95
             else "  above 80 %" if share >= 0.8 else "")
    return f"{used / MB:,.1f} of {quota / MB:,.1f} MB quota ({share:.0%}){alarm}".replace(
        "%)", " %)")


@handle_errors
def status_command(
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Folder of agent.db."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object, for scripts."),
) -> None:
    """Show the agent's state from its data directory: outbox, quarantine, last samples."""
    outbox_path, store_path = data_dir / OUTBOX_NAME, data_dir / STORE_NAME
    if not outbox_path.is_file() and not store_path.is_file():
        raise InvalidInput(
            f"{data_dir} has neither {STORE_NAME} nor {OUTBOX_NAME}: give the --data-dir of "
            "`tieragent run` or `tieragent backfill`."
        )
    now = time.time()
    outbox, store = outbox_status(outbox_path, now), store_status(store_path, now)
    if as_json:
        typer.echo(json.dumps({"outbox": asdict(outbox), "store": asdict(store)}, indent=2))
        return
    _print(Console(), outbox, store)


def register(app: typer.Typer) -> None:
    """Add `status` to the `tieragent` app."""
    app.command("status")(status_command)
