"""The raw-sample disk quota (`collection.raw_quota_mb`): measure, alarm, and act at the limit.

What is measured: the bytes of agent.db's pages in use, `(page_count - freelist_count) x
page_size`. Both PRAGMAs read the database header, so a check costs the same at 1 MB as at
10 GB; the store writer checks every `CHECK_EVERY_S`, not per sample. The figure counts all
of agent.db, not only the `samples` table and its `sample_index`: everything else in it
(hourly base measures and sample counts, state intervals, hourly counter deltas, the
derivation memory, the link log) is a row per device-hour or per state change, small next
to a row per sample, so the figure overstates raw use a little, on the safe side. An exact
per-table figure (SQLite's `dbstat`) would read every page of the samples table, the whole
quota, on each check. Reports and the outbox are in outbox.db and are not counted. Deleted
rows go to SQLite's free list and are reused, so the figure falls when raw samples are
deleted even though the file does not shrink.

Alarms, as a level (also the `tieragent_raw_quota_level` metric): 0 below 80 %, 1 from 80 %,
2 from 95 %, 3 full (at 100 % after pruning: new samples are not stored). One WARNING when
use crosses up into 80 % and into 95 %, one ERROR when it is full, and one INFO when it falls
back under a level; nothing while it stays. /healthz is 503 from 95 % on
(`agent.health`), and `tieragent status` shows use against the quota (the quota is kept in
the `meta` table for it).

Policy at the limit (stated in docs/operations.md, "Raw-sample disk quota"):

1. raw samples older than `collection.raw_retention_days` are deleted (the runtime also
   prunes them every hour);
2. if use is still at or over the quota, new samples are not stored: they are counted as
   dropped with reason `raw_quota_full`, exactly like samples a full disk rejects
   (`agent.store.losses`), so their hours' `samples_received` does not grow and the data
   collection rate shows the gap. Link events are still recorded.

Reports, the outbox and the derived tables (base measures, sample counts, intervals,
deltas) are never deleted to make room; nor are raw samples or sealed raw segments
(agent.store.sealed, counted in the figure) inside the retention period, which an audit of
a signed report may still need.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.store.sqlite import StoreError

log = logging.getLogger("agent.store")

MB = 1_000_000  # raw_quota_mb is in decimal megabytes, as disks are sold
CHECK_EVERY_S = 10.0
HIGH, CRITICAL = 0.80, 0.95
# A level is announced as left only once use is this far below its threshold: at the limit,
# each check prunes a little past retention and new samples fill it again, and without it
# the log would say "full" and "back under" at every check, forever.
HYSTERESIS = 0.02
PRUNE_LOG_EVERY_S = 3600.0
LEVEL_OK, LEVEL_HIGH, LEVEL_CRITICAL, LEVEL_FULL = 0, 1, 2, 3
QUOTA_META_KEY = "raw_quota_bytes"
_THRESHOLDS = {LEVEL_HIGH: HIGH, LEVEL_CRITICAL: CRITICAL, LEVEL_FULL: 1.0}
_LEVEL_NAMES = {LEVEL_OK: "below 80 %", LEVEL_HIGH: "80 %", LEVEL_CRITICAL: "95 %",
                LEVEL_FULL: "100 %"}


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database's pages in use (see the module docstring for why this figure)."""
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    return (pages - free) * size


@dataclass(frozen=True, slots=True)
class QuotaReading:
    raw_bytes: int
    quota_bytes: int
    level: int

    @property
    def fraction(self) -> float:
        return self.raw_bytes / self.quota_bytes

    def describe(self) -> str:
        """`raw samples use 9.6 of 10 MB (96 %)`."""
        return (f"raw samples use {self.raw_bytes / MB:.3g} of {self.quota_bytes / MB:.3g} MB "
                f"({self.fraction:.0%})").replace("%)", " %)")


def level_of(fraction: float) -> int:
    if fraction >= 1.0:
        return LEVEL_FULL
    if fraction >= CRITICAL:
        return LEVEL_CRITICAL
    return LEVEL_HIGH if fraction >= HIGH else LEVEL_OK


class RawQuota:
    """Checked by the store writer between commits; `blocked` makes `Store.ingest` drop."""

    def __init__(
        self, conn: sqlite3.Connection, quota_mb: float, purge: Callable[[float], int],
        path: str,
    ) -> None:
        self._conn = conn
        self.quota_bytes = max(1, int(quota_mb * MB))
        self._purge = purge
        self.path = path
        self.blocked = False
        self.level = LEVEL_OK
        self._announced = LEVEL_OK  # the level the log last stated (with hysteresis)
        self._pruned_logged_at = float("-inf")  # wall time of the last pruning line
        self._pruned_unlogged = 0
        self.reading: QuotaReading | None = None
        self._next_check = 0.0
        self._quota_recorded = False

    def due(self, now_mono: float | None = None) -> bool:
        return (time.monotonic() if now_mono is None else now_mono) >= self._next_check

    def check(self, now: float) -> QuotaReading:
        """Measure; at the limit prune past retention, then block if still full; log a
        level change once. `now` is wall time (the retention cut-off)."""
        self._next_check = time.monotonic() + CHECK_EVERY_S
        self._record_quota()
        used = used_bytes(self._conn)
        if used >= self.quota_bytes:
            deleted = 0
            with contextlib.suppress(StoreError):  # a full disk may refuse even the delete
                deleted = self._purge(now)
            if deleted:
                self._pruned_unlogged += deleted
                # At the limit this happens at every check: one line an hour with the sum.
                if now - self._pruned_logged_at >= PRUNE_LOG_EVERY_S:
                    log.info("Raw quota reached: raw samples past retention deleted.",
                             extra={"fields": {"rows": self._pruned_unlogged,
                                               "path": self.path}})
                    self._pruned_logged_at = now
                    self._pruned_unlogged = 0
                used = used_bytes(self._conn)
        reading = QuotaReading(used, self.quota_bytes, level_of(used / self.quota_bytes))
        self._announce(reading)
        self.blocked = reading.level == LEVEL_FULL
        self.level = reading.level
        self.reading = reading
        return reading

    def _announce(self, reading: QuotaReading) -> None:
        announced = self._announced
        if reading.level == announced:
            return
        if reading.level < announced and reading.fraction > _THRESHOLDS[announced] - HYSTERESIS:
            return
        self._announced = reading.level
        fields = {"raw_bytes": reading.raw_bytes, "quota_bytes": reading.quota_bytes,
                  "percent": round(100 * reading.fraction, 1), "path": self.path}
        if reading.level < announced:
            log.info(f"Raw sample disk use back under {_LEVEL_NAMES[announced]} of its quota.",
                     extra={"fields": fields})
        elif reading.level == LEVEL_FULL:
            log.error("Raw sample quota full: new samples are not stored and are counted as "
                      "dropped until raw samples pass retention or the quota is raised.",
                      extra={"fields": fields})
        else:
            log.warning(f"Raw sample disk use passed {_LEVEL_NAMES[reading.level]} of its "
                        "quota.", extra={"fields": fields})

    def _record_quota(self) -> None:
        """Keep the quota in `meta` for `tieragent status` (once per store, when it changed)."""
        if self._quota_recorded:
            return
        with contextlib.suppress(sqlite3.Error):  # a full disk: status just won't know it
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                "value = excluded.value WHERE value != excluded.value",
                (QUOTA_META_KEY, str(self.quota_bytes)),
            )
            self._quota_recorded = True
