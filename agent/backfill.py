"""Import the simulator's offline history through the same derivation as live samples.

Input: DIR/meta.json (start, end, sample_interval_s) and DIR/samples/<device_id>.npz with
equal-length arrays signal_id, source_ts, received_ts, value (float64), quality (uint8
0 good / 1 uncertain / 2 bad) and status (int64). The history's declared sampling
interval replaces the configured signal intervals for samples_expected, and every signal
is treated as polled (the history holds grid samples). The history period is [start,
end): samples at `end` still close counters but fill no slot.

Resumable (agent.store.backfill_state): each device is imported in hour-aligned chunks of
at most about `CHUNK_SAMPLES` samples (`chunk_ends`), each chunk one transaction together
with the device's progress row. (Chunks are by samples, not by time: each transaction has a
fixed cost of some 40 ms, so week-long chunks made the demo's year 25 s slower.) Run
again with the same history, the import skips finished devices and continues a partial
one from its last committed chunk, so nothing is imported twice; a finished import run
again imports nothing. A store holding a partial import of another history (another
meta.json or other sample files: `history_identity`) is refused. Until a device is
imported, its hours hold placeholder base measures (every sample expected, none
received), so a partial import never reads as complete collection.

The import holds the data directory's lock (agent.instance_lock) for its whole run: a
backfill and a `tieragent run` never write one store at once.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.config import FactoryConfig
from agent.derive.sample_columns import O_SOURCE, SampleColumns
from agent.derive.slots import HOUR_S
from agent.errors import AgentError
from agent.instance_lock import InstanceLock
from agent.protocol.crashpoint import crash_point
from agent.store import Store, StoreError
from agent.store.backfill_state import BackfillState, DeviceProgress

Progress = Callable[[str, int, int], None]  # device_id, done, total
_FIELDS = ("signal_id", "source_ts", "received_ts", "value", "quality", "status")
CHUNK_SAMPLES = 1_000_000  # per transaction: what a kill -9 makes the next run redo


class HistoryError(AgentError):
    """The history folder is missing or malformed; str() says which file and what."""


class BackfillIncomplete(StoreError):
    """The import stopped part-way; str() says what is imported, what is not, and how to resume."""


@dataclass(frozen=True, slots=True)
class BackfillSummary:
    devices: int
    samples: int  # imported by this run
    seconds: float
    start: float
    end: float
    missing: tuple[str, ...]  # configured devices without a sample file
    unknown: tuple[str, ...]  # sample files of devices not in the config
    history_id: str = ""
    already_done: int = 0  # devices a previous run had imported completely
    outside: int = 0  # samples of the files outside [start, end]: not imported
    unstorable: int = 0  # samples kept as BAD without value (agent.store.values)


def read_meta(history: Path) -> tuple[float, float, float]:
    path = history / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        start, end = float(meta["start"]), float(meta["end"])
        interval = float(meta["sample_interval_s"])
    except FileNotFoundError:
        raise HistoryError(f"{path}: not found; is {history} a history folder?") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise HistoryError(f"{path}: needs numbers start, end, sample_interval_s ({exc})") from None
    if not (end > start and interval > 0):
        raise HistoryError(f"{path}: needs end > start and sample_interval_s > 0")
    return start, end, interval


def history_identity(history: Path, files: dict[str, Path]) -> str:
    """A short digest of meta.json and the sample files' names and sizes: the same folder
    gives the same id, another history (or a changed one) another."""
    digest = hashlib.sha256((history / "meta.json").read_bytes())
    for name, path in sorted(files.items()):
        digest.update(f"\0{name}\0{path.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def read_samples(path: Path) -> SampleColumns:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in _FIELDS}
    except (OSError, ValueError, KeyError) as exc:
        raise HistoryError(f"{path}: not a history sample file ({exc})") from None
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) != 1:
        raise HistoryError(f"{path}: arrays have different lengths {sorted(lengths)}")
    n = lengths.pop()
    return SampleColumns(
        signal_id=arrays["signal_id"].astype(str),
        source_ts=arrays["source_ts"].astype(np.float64),
        received_ts=arrays["received_ts"].astype(np.float64),
        value=arrays["value"].astype(np.float64),
        quality=arrays["quality"].astype(np.uint8),
        status=arrays["status"].astype(np.int64),
        origin=np.full(n, O_SOURCE, np.uint8),
    )


def chunk_ends(source_ts: np.ndarray, end: float, per_chunk: int) -> list[float]:
    """Where a device's import chunks end: at the hour of every `per_chunk`-th sample (so a
    chunk holds at most `per_chunk` samples, or one hour's if that hour has more), the last
    one at `end`. The same samples always give the same chunks."""
    ordered = np.sort(source_ts)
    ends: list[float] = []
    for index in range(per_chunk, len(ordered), per_chunk):
        at = float(np.floor(ordered[index] / HOUR_S) * HOUR_S)
        if ends and at <= ends[-1]:
            at = ends[-1] + HOUR_S
        if at >= end:
            break
        if at > ordered[0]:
            ends.append(at)
    return [*ends, end]


def backfill(
    config: FactoryConfig, history: Path, db_path: Path, progress: Progress | None = None,
    chunk_samples: int = CHUNK_SAMPLES,
) -> BackfillSummary:
    """Import `history` into the store at `db_path`, or resume its import; raises
    HistoryError, StoreError (BackfillIncomplete if it stopped part-way) or InstanceLocked."""
    started = time.perf_counter()
    start, end, interval = read_meta(history)
    samples_dir = history / "samples"
    files = {p.stem: p for p in sorted(samples_dir.glob("*.npz"))} if samples_dir.is_dir() else {}
    history_id = history_identity(history, files)
    with InstanceLock(db_path.parent):
        store = Store.open(db_path, config, interval_s=interval, polled=True)
        try:
            run = _Import(store, history_id, start, end, files, progress, chunk_samples)
            run.prepare()
            run.all_devices()
        finally:
            store.close()
    devices = list(run.devices)
    return BackfillSummary(
        devices=len(devices), samples=run.imported, seconds=time.perf_counter() - started,
        start=start, end=end, missing=tuple(d for d in devices if d not in files),
        unknown=tuple(sorted(set(files) - set(devices))), history_id=history_id,
        already_done=run.already_done, outside=run.outside,
        unstorable=store.unstorable_samples,
    )


class _Import:
    """One run of `backfill` over an open store."""

    def __init__(
        self, store: Store, history_id: str, start: float, end: float, files: dict[str, Path],
        progress: Progress | None, chunk_samples: int,
    ) -> None:
        self.store, self.history_id, self.start, self.end = store, history_id, start, end
        self.files, self.progress, self.chunk_samples = files, progress, max(1, chunk_samples)
        self.state: BackfillState = store.backfill_state()
        self.devices = list(store.deriver.plans)
        self.known: dict[str, DeviceProgress] = {}
        self.imported = self.outside = self.already_done = self.chunks = 0

    def prepare(self) -> None:
        """Refuse another history's partial import; begin a new import, or pick up ours."""
        path = self.store.path
        for other in self.state.histories():
            if other.history_id != self.history_id and other.done < other.devices:
                raise StoreError(
                    f"{path} holds a partial import of another history (id {other.history_id}, "
                    f"{_utc(other.start)} to {_utc(other.end)}, {other.done} of {other.devices} "
                    f"devices done): run backfill again with that history folder to finish it, "
                    f"or import this one into a new data directory."
                )
        self.known = self.state.progress(self.history_id)
        if not self.known:
            config = self.store.config
            ideal = {d.id: d.ideal_cycle_time_s for d in config.devices if d.ideal_cycle_time_s}

            def first() -> None:
                for device_id in self.devices:
                    self.state.record(self.history_id, self.start, self.end,
                                      DeviceProgress(device_id, self.start, 0, False))
                self.state.write_placeholders(self.store.deriver, ideal,
                                              config.collection.min_failure_s,
                                              self.start, self.end)

            self.store.begin_at(self.start, after=first)
            self.known = self.state.progress(self.history_id)
        new = [d for d in self.devices if d not in self.known]
        if new:
            raise StoreError(
                f"{path}: devices {', '.join(new)} were not configured when this history's "
                f"import began; finish it with the configuration it began with, or import "
                f"into a new data directory."
            )
        self.already_done = sum(1 for d in self.devices if self.known[d].done)

    def all_devices(self) -> None:
        for number, device_id in enumerate(self.devices, start=1):
            mine = self.known[device_id]
            if not mine.done:
                try:
                    self.device(mine)
                except StoreError as error:
                    raise self.incomplete(device_id, error) from None
            if self.progress is not None:
                self.progress(device_id, number, len(self.devices))

    def device(self, mine: DeviceProgress) -> None:
        device_id = mine.device_id
        cursor = self.store.deriver.carries[device_id].cursor
        if cursor > mine.imported_through:
            raise StoreError(
                f"{self.store.path}: device {device_id!r} has data up to {_utc(cursor)}, after "
                f"its import reached {_utc(mine.imported_through)} (did `tieragent run` collect "
                f"into this store since?); import into a new data directory."
            )
        cols = self.device_samples(device_id, count_outside=True)
        samples = mine.samples
        for hi in chunk_ends(cols.source_ts, self.end, self.chunk_samples):
            if hi <= mine.imported_through:
                continue
            last = hi >= self.end
            lo = max(self.start, mine.imported_through)
            chosen = (cols.source_ts >= lo) & ((cols.source_ts < hi) | last)
            chunk = cols.take(np.flatnonzero(chosen))
            samples += len(chunk)
            record = DeviceProgress(device_id, hi, samples, last)
            self.store.ingest_columns(
                device_id, chunk, until=hi, count_until=self.end,
                after=lambda r=record: self.state.record(  # type: ignore[misc]
                    self.history_id, self.start, self.end, r),
            )
            mine = record
            self.known[device_id] = record
            self.imported += len(chunk)
            self.chunks += 1
            crash_point(f"backfill_chunk_{self.chunks}")  # fault tests (agent.protocol.crashpoint)

    def device_samples(self, device_id: str, count_outside: bool = False) -> SampleColumns:
        path = self.files.get(device_id)
        cols = read_samples(path) if path is not None else read_samples_empty()
        inside = (cols.source_ts >= self.start) & (cols.source_ts <= self.end)
        if count_outside:
            self.outside += int((~inside).sum())
        return cols.take(np.flatnonzero(inside))

    def incomplete(self, device_id: str, error: StoreError) -> BackfillIncomplete:
        """What is in and what is not, counted, and how to go on."""
        left = [d for d in self.devices if not self.known[d].done]
        not_imported = sum(
            len(self.device_samples(d)) - self.known[d].samples for d in left
        )
        done = len(self.devices) - len(left)
        return BackfillIncomplete(
            f"the import stopped at device {device_id!r} ({error}). {done} of "
            f"{len(self.devices)} devices are imported; {not_imported:,} samples of "
            f"{len(left)} devices are not (their hours count as expected, not received). "
            f"Fix the cause and run the same backfill again: it resumes where it stopped."
        )


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def read_samples_empty() -> SampleColumns:
    empty = np.empty(0)
    return SampleColumns(
        np.empty(0, dtype=str), empty, empty, empty, np.empty(0, np.uint8),
        np.empty(0, np.int64), np.empty(0, np.uint8),
    )
