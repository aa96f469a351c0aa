"""The ground-truth ledger: what really happened, as plain files tests read.

A ledger directory holds:
- `intervals.csv`  device_id,start,end,state,auto: contiguous [start, end) per device
- `hourly.csv`     device_id,hour_start,produced,good,scrap,energy_kwh,ideal_time_s: a
                   completion at t belongs to hour h with h*3600 < t <= (h+1)*3600, energy
                   by exact overlap with the hour (clipped to the simulated period)
- `devices.csv`    the inventory, networked or not
- `meta.json`      seed, start, end, profile, the factory's sha256 and any extra keys
Times are float epoch seconds (UTC). Files are written byte-for-byte deterministically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simulator.model import SimFactory
from simulator.timeline import STATES, DeviceTimeline

INTERVAL_COLUMNS = ("device_id", "start", "end", "state", "auto")
HOURLY_COLUMNS = (
    "device_id",
    "hour_start",
    "produced",
    "good",
    "scrap",
    "energy_kwh",
    "ideal_time_s",
)
DEVICE_COLUMNS = (
    "device_id",
    "line",
    "process_step",
    "key_process",
    "kind",
    "digital",
    "connection",
)


@dataclass(frozen=True)
class Ledger:
    intervals: pd.DataFrame
    hourly: pd.DataFrame
    devices: pd.DataFrame
    meta: dict[str, Any]


def device_intervals(device_id: str, tl: DeviceTimeline) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "device_id": device_id,
            "start": tl.starts,
            "end": tl.ends,
            "state": np.asarray(STATES, dtype=object)[tl.states],
            "auto": tl.autos,
        }
    )


def device_hourly(device_id: str, tl: DeviceTimeline) -> pd.DataFrame:
    first = np.floor(tl.start / 3600.0) * 3600.0
    hours = np.arange(first, tl.end, 3600.0)
    # Counting completions with time <= edge puts one at t into hour h: h*3600 < t <= end.
    edges = np.clip(np.append(hours, hours[-1] + 3600.0), tl.start, tl.end)
    produced, scrap = tl.counts_many(edges)
    produced_h = np.diff(produced)
    scrap_h = np.diff(scrap)
    return pd.DataFrame(
        {
            "device_id": device_id,
            "hour_start": hours.astype(np.int64),
            "produced": produced_h,
            "good": produced_h - scrap_h,
            "scrap": scrap_h,
            # Rounded to 1e-9 kWh / 1e-6 s only to keep the CSV readable.
            "energy_kwh": np.round(np.diff(tl.energy_many(edges)), 9),
            "ideal_time_s": np.round(produced_h * tl.ideal_cycle_time_s, 6),
        }
    )


def intervals_frame(timelines: Mapping[str, DeviceTimeline]) -> pd.DataFrame:
    parts = [device_intervals(device_id, tl) for device_id, tl in timelines.items()]
    if not parts:
        return pd.DataFrame(columns=list(INTERVAL_COLUMNS))
    return pd.concat(parts, ignore_index=True)


def hourly_frame(timelines: Mapping[str, DeviceTimeline]) -> pd.DataFrame:
    parts = [device_hourly(device_id, tl) for device_id, tl in timelines.items()]
    if not parts:
        return pd.DataFrame(columns=list(HOURLY_COLUMNS))
    return pd.concat(parts, ignore_index=True)


def devices_frame(factory: SimFactory) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "device_id": d.id,
                "line": d.line,
                "process_step": d.process_step,
                "key_process": d.key_process,
                "kind": d.kind,
                "digital": d.digital,
                "connection": d.face,
            }
            for d in factory.devices
        ],
        columns=list(DEVICE_COLUMNS),
    )


def _write_text(path: Path, text: str) -> None:
    """Write through a temporary file so a crash never leaves half a ledger file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_ledger(
    out_dir: Path,
    factory: SimFactory,
    timelines: Mapping[str, DeviceTimeline],
    *,
    start: float,
    end: float,
    seed: int,
    profile: str,
    extra_meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write the ledger files into `out_dir` (created if missing); returns `out_dir`."""
    return write_ledger_frames(
        out_dir,
        factory,
        intervals_frame(timelines),
        hourly_frame(timelines),
        start=start,
        end=end,
        seed=seed,
        profile=profile,
        extra_meta=extra_meta,
    )


def write_ledger_frames(
    out_dir: Path,
    factory: SimFactory,
    intervals: pd.DataFrame,
    hourly: pd.DataFrame,
    *,
    start: float,
    end: float,
    seed: int,
    profile: str,
    extra_meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write already-built interval and hourly frames (for callers that stream devices)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_text(out_dir / "intervals.csv", intervals.to_csv(index=False))
    _write_text(out_dir / "hourly.csv", hourly.to_csv(index=False))
    _write_text(out_dir / "devices.csv", devices_frame(factory).to_csv(index=False))
    meta: dict[str, Any] = {
        "seed": seed,
        "start": start,
        "end": end,
        "profile": profile,
        "factory_id": factory.identity.factory_id,
        "time_zone": factory.identity.time_zone,
        "factory_sha256": factory.digest(),
        **(extra_meta or {}),
    }
    _write_text(out_dir / "meta.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out_dir


def load_ledger(directory: Path | str) -> Ledger:
    """Read a ledger directory back into DataFrames (bools as bool, ids as str)."""
    directory = Path(directory)
    intervals = pd.read_csv(directory / "intervals.csv", dtype={"device_id": str, "state": str})
    hourly = pd.read_csv(directory / "hourly.csv", dtype={"device_id": str})
    devices = pd.read_csv(directory / "devices.csv", dtype={"device_id": str, "line": str})
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    return Ledger(intervals=intervals, hourly=hourly, devices=devices, meta=meta)
