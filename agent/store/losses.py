"""Samples the store could not keep: counted, recorded, and logged without flooding the log.

Two causes, each a reason in `ingest_losses` and in the `tieragent_samples_dropped` metric:

- `disk_full_or_io_error`: a commit failed with SQLITE_FULL, an I/O error or ENOSPC/EFBIG (the
  whole batch is rolled back; `agent.store.sqlite.is_space_error`);
- `raw_quota_full`: raw samples reached `collection.raw_quota_mb` and none past retention
  was left to delete (`agent.store.quota`), so new samples are not stored.

Either way the samples are a counted gap: they never reach `samples_received`, so the data
collection rate of their hours shows them missing, and the next successful commit records
the span and count in `ingest_losses`.

A disk that stays full would fail every commit (about two a second). The log says it as
"first occurrence plus a count": one ERROR on the first failure, then one WARNING every
`SUMMARY_EVERY_S` with the samples dropped since the last line, and one INFO on recovery
with the total and how long it lasted.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

log = logging.getLogger("agent.store")

DISK_FULL = "disk_full_or_io_error"
QUOTA_FULL = "raw_quota_full"
SUMMARY_EVERY_S = 60.0


class PendingLosses:
    """Losses not yet written to `ingest_losses`: per reason, [first_ts, last_ts, samples]."""

    def __init__(self) -> None:
        self._spans: dict[str, list[float]] = {}

    def __bool__(self) -> bool:
        return bool(self._spans)

    def add(self, reason: str, samples: int, span: tuple[float, float] | None) -> None:
        if samples == 0 or span is None:
            return
        known = self._spans.get(reason)
        if known is None:
            self._spans[reason] = [span[0], span[1], float(samples)]
        else:
            known[:] = [min(known[0], span[0]), max(known[1], span[1]), known[2] + samples]

    def write(self, conn: sqlite3.Connection) -> None:
        """Insert the pending rows (inside the caller's transaction)."""
        conn.executemany(
            "INSERT INTO ingest_losses (first_ts, last_ts, samples, reason) VALUES (?, ?, ?, ?)",
            ((first, last, int(count), reason)
             for reason, (first, last, count) in sorted(self._spans.items())),
        )

    def clear(self) -> None:
        self._spans = {}


class FailureLog:
    """Rate-limited log of failing commits: first occurrence, a count per minute, recovery."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self.failing_since: float | None = None
        self.total = 0  # samples dropped since the first failure
        self._since_line = 0  # samples dropped since the last line
        self._last_line = 0.0

    def failed(self, samples: int, error: str) -> None:
        now = self.clock()
        self.total += samples
        self._since_line += samples
        if self.failing_since is None:
            self.failing_since = self._last_line = now
            self._since_line = 0
            log.error("Store write failed; samples are dropped and counted until it recovers.",
                      extra={"fields": {"path": self.path, "error": error, "samples": samples}})
        elif now - self._last_line >= SUMMARY_EVERY_S:
            log.warning("Store writes still failing.", extra={"fields": {
                "path": self.path, "error": error, "dropped_since_last": self._since_line,
                "dropped_total": self.total,
                "for_s": round(now - self.failing_since, 1)}})
            self._last_line = now
            self._since_line = 0

    def succeeded(self) -> None:
        if self.failing_since is None:
            return
        log.info("Store writes recovered.", extra={"fields": {
            "path": self.path, "dropped_total": self.total,
            "failed_for_s": round(self.clock() - self.failing_since, 1)}})
        self.failing_since = None
        self.total = self._since_line = 0
