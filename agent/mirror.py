"""Optional mirror of committed samples to an InfluxDB v2 compatible endpoint.

The mirror is a copy for dashboards, never the system of record: it receives samples
only after they are committed to agent.db. Memory is bounded (`max_pending` lines): when
the endpoint is down for long, the oldest pending lines are dropped and counted. Writes go
through influxdb-client's synchronous write API from one background thread, in batches,
with capped exponential backoff between failed attempts.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Sequence

from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from connectors.sample import Sample

log = logging.getLogger("tieragent.mirror")
MEASUREMENT = "tieragent_sample"


def sample_line(sample: Sample) -> str | None:
    """Line protocol for a numeric sample (strings and missing values are not mirrored)."""
    value = sample.value
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    point = (
        Point(MEASUREMENT)
        .tag("device", sample.device_id)
        .tag("signal", sample.signal_id)
        .tag("quality", sample.quality.value)
        .field("value", float(value))
        .time(round(sample.source_ts * 1000), WritePrecision.MS)
    )
    line: str = point.to_line_protocol()
    return line


class InfluxMirror:
    def __init__(
        self, url: str, org: str, bucket: str, token: str = "", *, batch_size: int = 5000,
        flush_interval_s: float = 1.0, max_pending: int = 100_000, timeout_s: float = 5.0,
    ) -> None:
        self.bucket = bucket
        self.org = org
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.dropped = 0
        self.written = 0
        self._pending: collections.deque[str] = collections.deque(maxlen=max_pending)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._client = InfluxDBClient(url=url, token=token, org=org,
                                      timeout=int(timeout_s * 1000))
        self._write = self._client.write_api(write_options=SYNCHRONOUS)
        self._thread = threading.Thread(target=self._loop, name="influx-mirror", daemon=True)
        self._thread.start()

    def offer(self, samples: Sequence[Sample]) -> None:
        """Queue committed samples; never blocks, drops (and counts) the oldest when full."""
        lines = [line for s in samples if (line := sample_line(s)) is not None]
        with self._lock:
            overflow = len(self._pending) + len(lines) - (self._pending.maxlen or 0)
            if overflow > 0:
                self.dropped += overflow
            self._pending.extend(lines)
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    def pending(self) -> int:
        return len(self._pending)

    def _loop(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            while self._pending and not self._stop.is_set():
                if self._flush_once():
                    delay = 0.5
                else:
                    self._stop.wait(delay)
                    delay = min(delay * 2, 30.0)
                    break

    def _flush_once(self) -> bool:
        with self._lock:
            batch = [self._pending.popleft() for _ in range(min(self.batch_size,
                                                                len(self._pending)))]
        if not batch:
            return True
        try:
            self._write.write(bucket=self.bucket, org=self.org, record=batch)
        except Exception as exc:  # any transport or HTTP error: keep the batch, retry later
            with self._lock:
                room = (self._pending.maxlen or 0) - len(self._pending)
                keep = batch[-room:] if room > 0 else []
                self.dropped += len(batch) - len(keep)
                self._pending.extendleft(reversed(keep))
            log.warning("Mirror write failed; will retry.", extra={"fields": {
                "error": repr(exc)[:200], "pending": len(self._pending)}})
            return False
        self.written += len(batch)
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Try to write what is pending within `timeout_s`, then stop."""
        deadline = time.monotonic() + timeout_s
        while self._pending and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self._client.close()
