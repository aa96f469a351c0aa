"""The agent's durable store: raw samples and everything derived from them, in agent.db.

Durability contract: `Store.ingest` writes a batch of samples, the rows derived from it
and the derivation memory (`carry`) in ONE transaction with synchronous=FULL. A sample
is *acknowledged* when `ingest` returns without counting it as dropped: it is committed
and survives kill -9. The runtime's sink returns once a sample is queued, which is not an
acknowledgement. If the disk is full (SQLITE_FULL) or an I/O error occurs, the batch is
rolled back, the derivation memory restored, and the samples counted as dropped (a gap
in samples_received that the next successful commit records in `ingest_losses`; logged as
first occurrence plus a count, `agent.store.losses`). While the raw-sample quota is full
(`agent.store.quota`), samples are dropped and counted the same way without a commit.

The store is not thread-safe: one writer (the runtime's writer thread) drives it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from agent.config import FactoryConfig, declared_inventory
from agent.derive.carry import COUNT_FIELDS
from agent.derive.device_plans import plan_devices
from agent.derive.engine import HOUR_S, Deriver
from agent.derive.issues import IssueEvent
from agent.derive.sample_columns import (
    SampleColumns,
    columns_from_samples,
    source_skew,
)
from agent.protocol.segment_codec import SealedSegment
from agent.store import base_rows, sealed
from agent.store.backfill_state import BackfillState
from agent.store.derived_rows import read_signal_issues, write_derived
from agent.store.losses import DISK_FULL, QUOTA_FULL, FailureLog, PendingLosses
from agent.store.quota import RawQuota
from agent.store.raw import as_bad, delete_raw_before, insert_raw, read_raw
from agent.store.report_reads import read_base_measures
from agent.store.sqlite import StoreError, is_space_error, open_database
from agent.store.tallies import per_device as _per_device
from agent.store.tallies import worst_per_device as _worst_per_device
from connectors.base import LinkEvent, LinkState
from connectors.sample import Sample
from indicators.columns import (
    BASE_MEASURE_COLUMNS,
    DELTA_COLUMNS,
    INTERVAL_COLUMNS,
)
from indicators.vocabulary import Q_BAD, Q_GOOD, Q_UNCERTAIN

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LinkItem:
    """A connector's link event, tagged with the connection it belongs to."""

    connection: str
    event: LinkEvent


IngestItem = Sample | LinkItem


@dataclass(slots=True)
class IngestResult:
    stored: int = 0
    dropped: int = 0
    error: str | None = None
    reason: str | None = None  # why samples were dropped (agent.store.losses)
    stored_by_device: dict[str, int] = field(default_factory=dict)
    bad_by_device: dict[str, int] = field(default_factory=dict)
    # Per device: samples off the receive time by > MAX_SOURCE_SKEW_S, worst skew (s).
    skewed_by_device: dict[str, int] = field(default_factory=dict)
    worst_skew_by_device: dict[str, float] = field(default_factory=dict)
    # Values the store cannot hold (agent.store.values): stored BAD, also in bad_by_device.
    unstorable_by_device: dict[str, int] = field(default_factory=dict)
    signal_issues: list[IssueEvent] = field(default_factory=list)  # agent.derive.issues


class Store:
    def __init__(
        self, path: Path, conn: sqlite3.Connection, config: FactoryConfig, deriver: Deriver
    ) -> None:
        self.path = path
        self.config = config
        self._conn = conn
        self.deriver = deriver
        self._pending_loss = PendingLosses()  # dropped samples not yet in ingest_losses
        self._failures = FailureLog(str(path))
        self.quota = RawQuota(conn, config.collection.raw_quota_mb, self.purge_raw, str(path))
        # Committed samples whose value could not be stored (kept BAD without value), and the
        # (device, signal) pairs already logged: one warning each, not one per sample.
        self.unstorable_samples = 0
        self.issue_events: list[IssueEvent] = []  # of the last commit (signal health)
        self._unstorable_logged: set[tuple[str, str]] = set()
        # `tieragent run` sets it: closed hours are computed in a child process, so that
        # the collecting process never loads pandas (agent.store.base_rows).
        self.close_hours_in_child = False
        for device_id, state in conn.execute("SELECT device_id, state FROM carry"):
            deriver.restore(device_id, json.loads(state))

    @classmethod
    def open(
        cls, path: Path, config: FactoryConfig, *, interval_s: float | None = None,
        polled: bool = False,
    ) -> Store:
        """Open agent.db (integrity-checked; raises StoreCorrupt / StoreError)."""
        conn = open_database(path)
        plans = plan_devices(config, interval_s=interval_s, polled=polled)
        return cls(path, conn, config, Deriver(plans, config.collection.realtime_bound_s))

    def close(self) -> None:
        self._conn.close()

    # --- writing -----------------------------------------------------------------------

    def resume(self, now: float) -> None:
        """Begin measuring new devices; time since the last commit becomes unknown."""
        self._transaction(lambda: self.deriver.resume(now), samples=0)

    def begin_at(self, ts: float, after: Callable[[], None] | None = None) -> None:
        """Backfill: measure every device from `ts`; refuse if one already has later data.
        `after` runs inside the same transaction (the backfill's progress rows)."""
        for device_id, carry in self.deriver.carries.items():
            if carry.cursor > ts:
                raise StoreError(
                    f"{self.path}: device {device_id!r} already has data up to "
                    f"{carry.cursor:.0f}, after the history start {ts:.0f}; import into a new "
                    f"data directory."
                )
        def begin() -> None:
            for device_id in self.deriver.plans:
                if device_id not in self.deriver.carries:
                    self.deriver.begin(device_id, ts)
            self.deriver.resume(ts)
            if after is not None:
                after()
        self._transaction(begin, samples=0)

    def ingest(self, items: Sequence[IngestItem], advance_to: float | None = None) -> IngestResult:
        """Store and derive one batch in one transaction; see the module docstring."""
        samples: list[Sample] = []
        links: list[tuple[int, LinkItem]] = []  # (samples before it, link event)
        for item in items:
            if isinstance(item, LinkItem):
                links.append((len(samples), item))
            else:
                samples.append(item)
        cols = columns_from_samples(samples)
        device_list = [s.device_id for s in samples]
        devices = np.array(device_list, dtype=object)
        device_codes, device_names = _factorize(device_list)
        skew = source_skew(cols)
        unstorable: npt.NDArray[np.bool_] | None = None

        def feed(first: int, end: int) -> None:
            codes = device_codes[first:end]
            order = np.argsort(codes, kind="stable")
            bounds = np.searchsorted(codes[order], np.arange(len(device_names) + 1))
            for code, device_id in enumerate(device_names.tolist()):
                index = order[bounds[code]:bounds[code + 1]]
                if len(index):
                    self.deriver.feed(device_id, cols.take(first + index))

        def work() -> None:
            nonlocal cols, unstorable
            # A skewed device clock (docs/reliability.md C3): the timestamp is kept verbatim but the
            # sample is flagged uncertain; derivations already use the receive time for it.
            quality = np.where((skew != 0) & (cols.quality == Q_GOOD), Q_UNCERTAIN, cols.quality)
            # Raw rows first: a value the store cannot hold turns its sample BAD (without
            # value), and the derivation must see it that way too.
            unstorable = insert_raw(
                self._conn, self.path, devices.tolist(), cols, quality, self._log_unstorable
            )
            if unstorable is not None:
                cols = as_bad(cols, unstorable)
            done = 0
            for at, link in links:
                feed(done, at)
                self._link(link)
                done = at
            feed(done, len(samples))
            if advance_to is not None:
                for device_id in self.deriver.carries:
                    self.deriver.advance(device_id, advance_to)

        span = (float(cols.received_ts.min()), float(cols.received_ts.max())) if samples else None
        if self.quota.blocked and samples:
            return self._drop_for_quota(len(samples), span, [link for _, link in links])
        error = self._transaction(work, samples=len(samples), span=span)
        if error is not None:
            return IngestResult(dropped=len(samples), error=error, reason=DISK_FULL)
        result = IngestResult(
            stored=len(samples),
            stored_by_device=_per_device(device_names, device_codes, None),
            bad_by_device=_per_device(device_names, device_codes, cols.quality == Q_BAD),
            skewed_by_device=_per_device(device_names, device_codes, skew != 0),
            worst_skew_by_device=_worst_per_device(device_names, device_codes, skew),
            signal_issues=self.issue_events,
        )
        if unstorable is not None:
            result.unstorable_by_device = _per_device(device_names, device_codes, unstorable)
            self.unstorable_samples += int(unstorable.sum())
        return result

    def _drop_for_quota(
        self, samples: int, span: tuple[float, float] | None, links: list[LinkItem]
    ) -> IngestResult:
        """The raw quota is full: count the samples as dropped; still keep link events."""
        self._pending_loss.add(QUOTA_FULL, samples, span)

        def work() -> None:
            for link in links:
                self._link(link)

        if links:
            self._transaction(work, samples=0)
        return IngestResult(dropped=samples, error="raw sample quota full", reason=QUOTA_FULL)

    def ingest_columns(
        self, device_id: str, cols: SampleColumns, until: float, count_until: float | None = None,
        after: Callable[[], None] | None = None,
    ) -> None:
        """Backfill path: one device's columns, derived up to `until`, one transaction
        (with `after`: the backfill's progress row)."""
        unstorable: npt.NDArray[np.bool_] | None = None

        def work() -> None:
            nonlocal unstorable
            unstorable = insert_raw(
                self._conn, self.path, [device_id] * len(cols), cols, cols.quality,
                self._log_unstorable,
            )
            fed = cols if unstorable is None else as_bad(cols, unstorable)
            self.deriver.feed(device_id, fed, count_until=count_until)
            self.deriver.advance(device_id, until)
            if after is not None:
                after()

        error = self._transaction(work, samples=len(cols), span=None)
        if error is not None:
            raise StoreError(f"{self.path}: import of {device_id!r} failed: {error}")
        if unstorable is not None:
            self.unstorable_samples += int(unstorable.sum())

    def _log_unstorable(
        self, device_ids: list[str], cols: SampleColumns, unstorable: npt.NDArray[np.bool_]
    ) -> None:
        """One warning per (device, signal) for the store's lifetime: a register stuck at
        such a value would otherwise log at the poll rate."""
        for index in np.flatnonzero(unstorable).tolist():
            key = (device_ids[index], str(cols.signal_id[index]))
            if key in self._unstorable_logged:
                continue
            self._unstorable_logged.add(key)
            value = cols.value[index]
            log.warning(
                "Sample value cannot be stored; kept as a bad sample without value.",
                extra={"fields": {"device": key[0], "signal": key[1],
                                  "type": type(value).__name__, "value": repr(value)[:80]}},
            )

    def _link(self, item: LinkItem) -> None:
        event = item.event
        self._conn.execute(
            "INSERT INTO link_log (connection, ts, state, reason) VALUES (?, ?, ?, ?)",
            (item.connection, event.ts, event.state.value, event.reason),
        )
        if event.state == LinkState.DISCONNECTED:
            self.deriver.link_down(item.connection, event.ts)
        elif event.state == LinkState.CONNECTED:
            self.deriver.link_up(item.connection, event.ts)

    def _transaction(
        self, work: object, *, samples: int, span: tuple[float, float] | None = None
    ) -> str | None:
        """Run `work` and persist its derived rows atomically; returns an error or None.

        On a disk-full or I/O error everything is rolled back, including the in-memory
        derivation state, and the samples are remembered as a counted loss.
        """
        snapshot = {k: v.copy() for k, v in self.deriver.carries.items()}
        issue_events: list[IssueEvent] = []
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            work()  # type: ignore[operator]
            issue_events = write_derived(self._conn, self.deriver.take())
            self._materialise_closed()
            self._write_carries()
            self._pending_loss.write(self._conn)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self.deriver.carries = snapshot
            self.deriver.take()
            if not is_space_error(exc):
                raise StoreError(f"{self.path}: {exc}") from exc
            self._pending_loss.add(DISK_FULL, samples, span)
            self._failures.failed(samples, str(exc))
            return str(exc)
        self._pending_loss.clear()
        self._failures.succeeded()
        self.issue_events = issue_events
        return None

    def _rollback(self) -> None:
        # SQLite may already have rolled back by itself on SQLITE_FULL.
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")

    def _write_carries(self) -> None:
        self._conn.executemany(
            "INSERT INTO carry (device_id, state) VALUES (?, ?) "
            "ON CONFLICT (device_id) DO UPDATE SET state = excluded.state",
            ((d, json.dumps(c.to_json())) for d, c in self.deriver.take_changed().items()),
        )

    def _materialise_closed(self) -> None:
        closing: list[tuple[str, list[int]]] = []
        for device_id in self.deriver.carries:
            hours = self.deriver.closed_dirty_hours(device_id)
            if hours:
                closing.append((device_id, hours))
        if not closing:
            return
        self._materialise([(d, hours[0], hours[-1] + HOUR_S) for d, hours in closing])
        for device_id, hours in closing:
            self.deriver.carries[device_id].dirty_hours.difference_update(hours)
            self.deriver.changed.add(device_id)

    def _materialise(self, spans: Sequence[tuple[str, int, int]]) -> None:
        """Write the base-measure rows of each (device_id, start, end) (agent.store.base_rows)."""
        inputs = [
            base_rows.read_inputs(self._conn, device_id, start, end,
                                  self.config.device(device_id).ideal_cycle_time_s,
                                  self.config.collection.min_failure_s)
            for device_id, start, end in spans
        ]
        rows = (base_rows.base_measure_rows_in_child(inputs) if self.close_hours_in_child
                else base_rows.base_measure_rows(inputs))
        if rows:
            columns = ", ".join(BASE_MEASURE_COLUMNS)
            marks = ", ".join("?" for _ in BASE_MEASURE_COLUMNS)
            self._conn.executemany(
                f"INSERT OR REPLACE INTO base_measures ({columns}) VALUES ({marks})", rows)

    def rebuild_base_measures(
        self, start: float, end: float, device_ids: Iterable[str] | None = None
    ) -> None:
        """Recompute the base-measure rows of [start, end) from intervals, deltas, counts."""
        first = int(start // HOUR_S) * HOUR_S
        last = int(-(-end // HOUR_S)) * HOUR_S
        devices = list(device_ids) if device_ids is not None else list(self.deriver.plans)

        def work() -> None:
            for device_id in devices:
                self._conn.execute(
                    "DELETE FROM base_measures WHERE device_id = ? AND hour_start >= ? "
                    "AND hour_start < ?", (device_id, first, last),
                )
            self._materialise([(device_id, first, last) for device_id in devices])

        error = self._transaction(work, samples=0)
        if error is not None:
            raise StoreError(f"{self.path}: rebuild failed: {error}")

    def purge_raw(self, now: float) -> int:
        """Delete raw samples, and the sealed blocks of days, older than raw_retention_days
        (the days stay sealed); derived rows stay. Returns the raw samples deleted."""
        cutoff = now - self.config.collection.raw_retention_days * 86400
        deleted = 0

        def work() -> None:
            nonlocal deleted
            deleted = delete_raw_before(self._conn, cutoff)
            sealed.delete_sealed_before(self._conn, cutoff)

        error = self._transaction(work, samples=0)
        if error is not None:
            raise StoreError(f"{self.path}: purge failed: {error}")
        return deleted

    # --- reading -----------------------------------------------------------------------

    def _frame(
        self, sql: str, params: Sequence[object], columns: Sequence[str]
    ) -> pd.DataFrame:
        import pandas as pd

        rows = self._conn.execute(sql, params).fetchall()
        return pd.DataFrame.from_records(rows, columns=list(columns))

    def base_measures(self, start: float, end: float) -> pd.DataFrame:
        """Materialised hourly rows with start <= hour_start < end (BASE_MEASURE_COLUMNS)."""
        return read_base_measures(self._conn, start, end)

    def intervals(self, start: float, end: float) -> pd.DataFrame:
        frame = self._frame(
            'SELECT device_id, start, "end", state, auto FROM intervals '
            'WHERE "end" > ? AND start < ? ORDER BY device_id, start', (start, end),
            INTERVAL_COLUMNS,
        )
        return frame.astype({"auto": bool})

    def deltas(self, start: float, end: float) -> pd.DataFrame:
        return self._frame(
            'SELECT device_id, role, start, "end", delta FROM deltas '
            'WHERE "end" > ? AND "end" <= ? ORDER BY device_id, "end"', (start, end),
            DELTA_COLUMNS,
        )

    def measured_since(self) -> float | None:
        """Start (epoch s) of the first hour the store measured (samples expected or
        received), or None before the first."""
        row = self._conn.execute("SELECT MIN(hour_start) FROM sample_counts").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def derived_through(self) -> float | None:
        """The committed derivation watermark: every connected device is derived, and its
        closed hours materialised, up to this epoch second (None before the first)."""
        connected = {d.id for d in self.config.devices if d.connection != "none"}
        cursors = [float(json.loads(state)["cursor"]) for device_id, state
                   in self._conn.execute("SELECT device_id, state FROM carry")
                   if device_id in connected]
        return min(cursors) if cursors else None

    def sample_counts(self, start: float, end: float) -> pd.DataFrame:
        return self._frame(
            "SELECT device_id, hour_start, " + ", ".join(COUNT_FIELDS) + " FROM sample_counts "
            "WHERE hour_start >= ? AND hour_start < ? ORDER BY device_id, hour_start",
            (start, end), ("device_id", "hour_start", *COUNT_FIELDS),
        )

    def raw_samples(self, start: float, end: float, device_id: str | None = None) -> pd.DataFrame:
        """Live raw samples with start <= segment time < end (the source time unless it is
        skewed or sealed: agent.store.sealed), ordered by device and insertion. Values come
        back exactly as ingested (agent.store.values), except bools, which come back as 0 / 1.
        The value column is left to pandas' inference unless that would lose something: with
        an integer beyond 2^53 (not exact as a float64) it holds the Python values as objects.
        """
        return read_raw(self._conn, start, end, device_id)

    def seal_days(
        self, days: Sequence[tuple[int, int]], plans: Sequence[sealed.SealPlan] = ()
    ) -> int:
        """Seal the raw segments of each local day [start, end) not sealed yet (how many other
        than as `plans` computed them; agent.store.sealed)."""
        return sealed.seal_days(self._conn, self.path, days, plans)

    def sealed_segments(self, start: float, end: float) -> list[SealedSegment]:
        """The sealed segments of the days starting in [start, end), in leaf order."""
        return sealed.sealed_segments(self._conn, start, end)

    def plan_seals(self, days: Sequence[tuple[int, int]]) -> list[sealed.SealPlan]:
        """The seals of the days of `days` not sealed yet, computed but not stored (for
        `seal_days`, which stores them if no sample of the day arrived since)."""
        return sealed.plan_seals(self._conn, days)

    def sealed_digests(
        self, start: float, end: float, plans: Sequence[sealed.SealPlan] = ()
    ) -> list[bytes]:
        """Leaf hashes of the sealed segments of [start, end) and of `plans`, in leaf order."""
        return sealed.sealed_digests(self._conn, start, end, plans)

    def signal_issues(self, start: float, end: float) -> list[dict[str, object]]:
        """Signal health of [start, end) (agent.store.derived_rows.read_signal_issues)."""
        return read_signal_issues(self._conn, start, end)

    def losses(self) -> pd.DataFrame:
        return self._frame(
            "SELECT first_ts, last_ts, samples, reason FROM ingest_losses ORDER BY first_ts", (),
            ("first_ts", "last_ts", "samples", "reason"),
        )

    def backfill_state(self) -> BackfillState:
        return BackfillState(self._conn)

    def inventory(self, config: FactoryConfig | None = None) -> pd.DataFrame:
        return declared_inventory(config or self.config)


def _factorize(values: list[str]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.object_]]:
    """(code of each value, the distinct values in order of first appearance)."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), np.intp,
                        count=len(values))
    return codes, np.array(list(index), dtype=object)
