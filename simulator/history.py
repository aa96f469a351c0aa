"""Offline history: the ledger plus the samples a collector would have stored.

`generate_history` writes, into `out_dir`, the ledger (see simulator/ledger.py) and one
`samples/<device_id>.npz` per networked device with equal-length arrays:
signal_id (str), source_ts (float64), received_ts (float64), value (float64; bools 0/1,
states as encoded codes), quality (uint8: 0 good, 1 uncertain, 2 bad), status (int64).
State-like signals (state, auto_mode, alarm) are sampled at every change and on the
sample grid; every other signal on the grid only. The grid is every epoch multiple of
`sample_interval_s` inside [start, end], plus start and end themselves, so counter and
energy deltas between grid points add up to the ledger's hourly figures exactly.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.device_model import SimDevice
from simulator.ledger import device_hourly, device_intervals, write_ledger_frames
from simulator.model import SimFactory
from simulator.signals import change_times, values_many
from simulator.timeline import F64, DeviceTimeline, device_rng, generate_device_timeline

SAMPLE_FIELDS = ("signal_id", "source_ts", "received_ts", "value", "quality", "status")
Progress = Callable[[str, int, int], None]  # (device_id, devices done, devices in total)


@dataclass(frozen=True, slots=True)
class Gap:
    """No samples of `device_id` with start <= source_ts < end (a collector outage)."""

    device_id: str
    start: float
    end: float


def sample_grid(start: float, end: float, interval_s: float) -> F64:
    """Epoch multiples of `interval_s` in [start, end], plus start and end."""
    first = np.ceil(start / interval_s) * interval_s
    grid = np.arange(first, end + interval_s / 2, interval_s)
    grid = grid[grid <= end]
    return np.unique(np.concatenate([[start], grid, [end]]))


def device_samples(
    factory: SimFactory,
    device: SimDevice,
    tl: DeviceTimeline,
    grid: F64,
    seed: int,
    gaps: Sequence[tuple[float, float]] = (),
) -> dict[str, np.ndarray]:
    """The sample arrays of one networked device, sorted by (source_ts, signal order)."""
    signals = factory.signals_of(device)
    times: list[F64] = []
    values: list[F64] = []
    which: list[np.ndarray] = []
    for index, signal in enumerate(signals):
        changes = change_times(signal, tl)
        ts = np.union1d(grid, changes) if len(changes) else grid
        times.append(ts)
        values.append(values_many(factory, device, signal, tl, ts))
        which.append(np.full(len(ts), index, dtype=np.int32))
    source_ts = np.concatenate(times)
    value = np.concatenate(values)
    signal_index = np.concatenate(which)
    keep = np.ones(len(source_ts), dtype=bool)
    for gap_start, gap_end in gaps:
        keep &= ~((source_ts >= gap_start) & (source_ts < gap_end))
    source_ts, value, signal_index = source_ts[keep], value[keep], signal_index[keep]
    order = np.lexsort((signal_index, source_ts))
    source_ts, value, signal_index = source_ts[order], value[order], signal_index[order]
    # A small, deterministic transport delay so received_ts differs from source_ts.
    latency = device_rng(seed, device.id, "latency").uniform(0.02, 0.5, len(source_ts))
    ids = np.asarray([s.id for s in signals], dtype=str)
    return {
        "signal_id": ids[signal_index],
        "source_ts": source_ts,
        "received_ts": source_ts + latency,
        "value": value,
        "quality": np.zeros(len(source_ts), dtype=np.uint8),
        "status": np.zeros(len(source_ts), dtype=np.int64),
    }


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A standard .npz (np.load reads it), with fixed zip timestamps so bytes repeat and
    fast deflate level 1; written to a temporary name and renamed when complete."""
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            # No public setter before Python 3.13 (which keeps this name as an alias).
            info._compresslevel = 1  # type: ignore[attr-defined]
            with archive.open(info, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(tmp, path)


def generate_history(
    factory: SimFactory,
    out_dir: Path,
    start: float,
    end: float,
    seed: int,
    sample_interval_s: float = 300.0,
    gaps: Sequence[Gap | tuple[str, float, float]] | None = None,
    progress: Progress | None = None,
    *,
    profile: str = "normal",
) -> Path:
    """Generate [start, end) for every device and write ledger and samples to `out_dir`.

    Devices are generated one at a time so memory stays bounded for a year or more.
    Raises ValueError for an empty period, a bad interval or a gap on an unknown device.
    """
    if not end > start:
        raise ValueError("end must be after start")
    if not sample_interval_s > 0:
        raise ValueError("sample_interval_s must be positive")
    gap_list = [g if isinstance(g, Gap) else Gap(*g) for g in gaps or ()]
    known = {d.id for d in factory.devices}
    for gap in gap_list:
        if gap.device_id not in known:
            raise ValueError(f"gap names unknown device {gap.device_id!r}")
        if not gap.end > gap.start:
            raise ValueError(f"gap on {gap.device_id} must end after it starts")
    chosen = factory.profile(profile)
    out_dir = Path(out_dir)
    samples_dir = out_dir / "samples"
    samples_dir.mkdir(parents=True, exist_ok=True)
    grid = sample_grid(start, end, sample_interval_s)
    intervals: list[pd.DataFrame] = []
    hourly: list[pd.DataFrame] = []
    total = len(factory.devices)
    for done, device in enumerate(factory.devices, start=1):
        tl = generate_device_timeline(factory, device, start, end, seed, chosen)
        intervals.append(device_intervals(device.id, tl))
        hourly.append(device_hourly(device.id, tl))
        if device.networked:
            own_gaps = [(g.start, g.end) for g in gap_list if g.device_id == device.id]
            arrays = device_samples(factory, device, tl, grid, seed, own_gaps)
            write_npz(samples_dir / f"{device.id}.npz", arrays)
        if progress is not None:
            progress(device.id, done, total)
    write_ledger_frames(
        out_dir,
        factory,
        pd.concat(intervals, ignore_index=True),
        pd.concat(hourly, ignore_index=True),
        start=start,
        end=end,
        seed=seed,
        profile=profile,
        extra_meta={
            "sample_interval_s": sample_interval_s,
            "gaps": [[g.device_id, g.start, g.end] for g in gap_list],
        },
    )
    return out_dir


def load_samples(path: Path | str) -> dict[str, np.ndarray]:
    """Read one device's sample file into plain arrays."""
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in SAMPLE_FIELDS}
