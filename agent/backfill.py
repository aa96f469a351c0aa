"""Import the simulator's offline history through the same derivation as live samples.

Input: DIR/meta.json (start, end, sample_interval_s) and DIR/samples/<device_id>.npz with
equal-length arrays signal_id, source_ts, received_ts, value (float64), quality (uint8
0 good / 1 uncertain / 2 bad) and status (int64). The history's declared sampling
interval replaces the configured signal intervals for samples_expected, and every signal
is treated as polled (the history holds grid samples). The history period is [start,
end): samples at `end` still close counters but fill no slot.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.config import FactoryConfig
from agent.derive.sample_columns import O_SOURCE, SampleColumns
from agent.errors import AgentError
from agent.store import Store, StoreError

Progress = Callable[[str, int, int], None]  # device_id, done, total
_FIELDS = ("signal_id", "source_ts", "received_ts", "value", "quality", "status")


class HistoryError(AgentError):
    """The history folder is missing or malformed; str() says which file and what."""


@dataclass(frozen=True, slots=True)
class BackfillSummary:
    devices: int
    samples: int
    seconds: float
    start: float
    end: float
    missing: tuple[str, ...]  # configured devices without a sample file
    unknown: tuple[str, ...]  # sample files of devices not in the config


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


def backfill(
    config: FactoryConfig, history: Path, db_path: Path, progress: Progress | None = None
) -> BackfillSummary:
    """Import `history` into the store at `db_path`; raises HistoryError or StoreError."""
    started = time.perf_counter()
    start, end, interval = read_meta(history)
    samples_dir = history / "samples"
    files = {p.stem: p for p in sorted(samples_dir.glob("*.npz"))} if samples_dir.is_dir() else {}
    store = Store.open(db_path, config, interval_s=interval, polled=True)
    try:
        store.begin_at(start)
        devices = list(store.deriver.plans)
        total = 0
        for done, device_id in enumerate(devices, start=1):
            path = files.get(device_id)
            cols = read_samples(path) if path is not None else read_samples_empty()
            inside = (cols.source_ts >= start) & (cols.source_ts <= end)
            cols = cols.take(np.flatnonzero(inside))
            store.ingest_columns(device_id, cols, until=end, count_until=end)
            total += len(cols)
            if progress is not None:
                progress(device_id, done, len(devices))
    except StoreError:
        raise
    finally:
        store.close()
    return BackfillSummary(
        devices=len(devices),
        samples=total,
        seconds=time.perf_counter() - started,
        start=start,
        end=end,
        missing=tuple(d for d in devices if d not in files),
        unknown=tuple(sorted(set(files) - set(devices))),
    )


def read_samples_empty() -> SampleColumns:
    empty = np.empty(0)
    return SampleColumns(
        np.empty(0, dtype=str), empty, empty, empty, np.empty(0, np.uint8),
        np.empty(0, np.int64), np.empty(0, np.uint8),
    )
