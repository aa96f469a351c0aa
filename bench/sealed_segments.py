"""Sealed raw segments: bytes per sample of the agent's encoding, and of VictoriaMetrics for
the same samples, side by side in one run.

    .venv/bin/python bench/sealed_segments.py [--demo-days 2] [--tags 5000] [--minutes 60]
        [--no-vm] [--no-latency]

Two loads:

- **demo**: the demo factory (config/demo-agent.yaml) over `--demo-days` days of the
  simulator's offline history (`tieragent sim history`'s default 300 s grid plus every state
  change; receive time = source time + a uniform 0.02-0.5 s latency), backfilled into a
  fresh store and sealed day by day through the store (`Store.seal_days`, what building the
  day's report does).
- **5k**: `--tags` tags at 1 Hz for `--minutes`, modelled on bench/ingest.py's OPC UA load
  (simulator `scale_tags`): tags in 10 groups written at 0.1 s slots of each second with
  0-2 ms scheduling jitter, source times at OPC UA's 100 ns resolution, values
  round(50 + 40 sin(t / 60 + i), 3), 100 tags per device, and one receive time per 1 s
  publish cycle of the subscription (every sample notified in it shares it). Encoded with
  `agent.protocol.segment_codec.encode_segments` and packed as the store packs a block.

Ours: the compressed blocks' bytes (what `sealed_blocks.data` holds) per sample, the SQLite
pages holding them (dbstat), and the segment bytes before the compressor (what the Merkle
leaves hash and an audit bundle carries). VictoriaMetrics (Debian's `victoria-metrics`,
started on a free loopback port with its own data directory in a temporary folder, stopped
by PID): the same samples imported through /api/v1/import as one series per (device,
signal) with the source time in ms, then /internal/force_flush and /internal/force_merge,
and its `data` + `indexdb` measured once it has stopped. VictoriaMetrics keeps less than a
sealed segment (no receive time, no quality, timestamps in ms, values as decimals), so a
second VictoriaMetrics also gets the receive latency (received - source, seconds) as one more
series per signal: the same information but the quality flags.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _paths  # noqa: F401  (the import path: before anything of the project)
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# device, signal, source_ts, values, received_ts
Series = tuple[str, str, np.ndarray, np.ndarray, np.ndarray]


# --- our encoding -----------------------------------------------------------------------


def demo_load(days: int, work: Path) -> tuple[dict[str, float], list[Series]]:
    """Backfill the demo's history into a store, seal its days; figures and the samples."""
    from agent.backfill import backfill
    from agent.config import load_config
    from agent.protocol.period import Period
    from agent.protocol.segment_codec import decode_segment
    from agent.store import Store
    from simulator.history import generate_history
    from simulator.model import load_factory

    config = load_config(ROOT / "config" / "demo-agent.yaml")
    factory = load_factory(ROOT / "config" / "factories" / "demo.yaml")
    today = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400 * (days + 2)))
    first = Period.parse(today, config.factory.time_zone)
    start = first.bounds()[0]
    generate_history(factory, work / "hist", start, start + days * 86400.0, seed=7)
    backfill(config, work / "hist", work / "data" / "agent.db")
    store = Store.open(work / "data" / "agent.db", config)
    bounds = [(start + d * 86400, start + (d + 1) * 86400) for d in range(days)]
    began = time.perf_counter()
    store.seal_days(bounds)
    seal_s = time.perf_counter() - began
    conn = store._conn  # the bench reads the table's figures directly
    samples, stored = conn.execute(
        "SELECT sum(samples), sum(length(data)) FROM sealed_blocks").fetchone()
    pages = _pages(conn)
    segments = store.sealed_segments(bounds[0][0], bounds[-1][1])
    plain = sum(len(s.data) for s in segments)
    series: dict[tuple[str, str], list[tuple[np.ndarray, list[Any], np.ndarray]]] = {}
    for segment in segments:
        decoded = decode_segment(segment.data)
        series.setdefault((segment.device_id, segment.signal_id), []).append(
            (decoded.source_ts, decoded.values, decoded.received_ts))
    store.close()
    out = [(d, s, np.concatenate([p[0] for p in parts]),
            np.array([v for p in parts for v in p[1]], dtype=np.float64),
            np.concatenate([p[2] for p in parts]))
           for (d, s), parts in series.items()]
    return {"samples": samples, "stored": stored, "plain": plain, "segments": len(segments),
            "seal_s": seal_s, "pages": pages}, out


def _pages(conn: sqlite3.Connection) -> int:
    """Bytes of the SQLite pages holding sealed_blocks and its key index (dbstat)."""
    return int(conn.execute(
        "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN "
        "('sealed_blocks', 'sqlite_autoindex_sealed_blocks_1')").fetchone()[0])


def tag_load(tags: int, minutes: int) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """Per device (100 tags), the model's samples as columns (see the module docstring)."""
    rng = np.random.default_rng(5)
    t0 = float(int(time.time() // 3600 * 3600) - 2 * 3600)
    seconds = np.arange(minutes * 60, dtype=np.float64)
    groups = 10
    jitter = rng.uniform(0, 0.002, (len(seconds), groups))
    tick = t0 + seconds[:, None] + np.arange(groups)[None, :] / groups + jitter
    tick = np.round(tick * 1e7) / 1e7  # OPC UA DateTime: 100 ns
    publish = t0 + 0.55 + seconds + rng.uniform(0.001, 0.004, len(seconds))
    publish = np.r_[publish, publish[-1] + 1.0]
    for first in range(0, tags, 100):
        index = np.arange(first, min(tags, first + 100))
        src = tick[:, index % groups]  # (seconds, tags)
        received = publish[np.searchsorted(publish, src)]
        value = np.round(50.0 + 40.0 * np.sin(src / 60.0 + index[None, :]), 3)
        n = src.size
        yield f"UA0-G{first // 100:03d}", {
            "signal_id": np.tile(np.array([f"t{i - first:02d}" for i in index], dtype=object),
                                 len(seconds)),
            "source_ts": src.ravel(), "received_ts": received.ravel(), "value": value.ravel(),
            "quality": np.zeros(n, np.uint8),
        }


def encode_tags(tags: int, minutes: int) -> tuple[dict[str, float], list[Series]]:
    from agent.protocol.segment_codec import encode_segments
    from agent.store.schema import DDL
    from agent.store.sealed import pack

    samples = stored = plain = 0
    encode_s = 0.0
    series: list[Series] = []
    db = sqlite3.connect(":memory:")
    for statement in DDL:
        db.execute(statement)
    for device, cols in tag_load(tags, minutes):
        n = len(cols["source_ts"])
        hour = np.floor(cols["source_ts"] / 3600) * 3600
        began = time.perf_counter()
        segments = encode_segments(
            device, cols["signal_id"], hour.astype(np.int64), (hour + 3600).astype(np.int64),
            cols["source_ts"], cols["received_ts"], cols["value"].tolist(), cols["quality"],
            np.zeros(n, dtype=bool),
        )
        codec, blob = pack(segments)
        encode_s += time.perf_counter() - began
        db.execute("INSERT INTO sealed_blocks VALUES (?, ?, ?, ?, ?, ?)",
                   (int(hour[0]), device, codec, len(segments), n, blob))
        samples += n
        stored += len(blob)
        plain += sum(len(s.data) for s in segments)
        for signal in np.unique(cols["signal_id"].astype(str)):
            rows = cols["signal_id"] == signal
            series.append((device, str(signal), cols["source_ts"][rows], cols["value"][rows],
                           cols["received_ts"][rows]))
    return {"samples": samples, "stored": stored, "plain": plain, "encode_s": encode_s,
            "pages": _pages(db)}, series


# --- VictoriaMetrics --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 600) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def victoria(series: list[Series], work: Path, latency: list[Series] | None = None,
             ) -> dict[str, float]:
    """Import `series` (and `latency`, one more series per signal) into a fresh
    VictoriaMetrics; the bytes of its data directory after force_flush, force_merge and a
    clean stop (its `data` and `indexdb` only, and everything). Right after force_flush the
    parts are still in memory: the directory is measured once VictoriaMetrics has stopped."""
    binary = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
    data = work / "vm-data"
    work.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = (work / "vm.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"-storageDataPath={data}", f"-httpListenAddr=127.0.0.1:{port}",
         "-retentionPeriod=100y", "-loggerLevel=ERROR"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                _get(f"{base}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        began = time.perf_counter()
        for name, chosen in (("sample", series), ("latency", latency or [])):
            batch: list[bytes] = []
            for device, signal, ts, values, _ in chosen:
                line = {"metric": {"__name__": name, "device": device, "signal": signal},
                        "values": values.tolist(),
                        "timestamps": np.round(ts * 1000).astype(np.int64).tolist()}
                batch.append(json.dumps(line).encode())
                if len(batch) >= 200:
                    _post(f"{base}/api/v1/import", b"\n".join(batch))
                    batch = []
            if batch:
                _post(f"{base}/api/v1/import", b"\n".join(batch))
        import_s = time.perf_counter() - began
        _get(f"{base}/internal/force_flush")
        time.sleep(2)
        rows = _rows(base)
        _get(f"{base}/internal/force_merge")
        for _ in range(600):  # until no merge is running
            time.sleep(1)
            if _metric(base, "vm_active_merges") == 0:
                break
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
    storage = _size(data / "data") + _size(data / "indexdb")
    return {"merged": storage, "total": _size(data), "rows": rows, "import_s": import_s}


def _metric(base: str, name: str) -> float:
    total = 0.0
    for line in _get(f"{base}/metrics").decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _post(url: str, body: bytes) -> None:
    request = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=600) as response:
        response.read()


def _rows(base: str) -> int:
    """Rows in VictoriaMetrics' storage parts (its /metrics `vm_rows`)."""
    total = 0
    for line in _get(f"{base}/metrics").decode().splitlines():
        if line.startswith('vm_rows{type="storage/'):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


# --- report -----------------------------------------------------------------------------


def _line(name: str, ours: dict[str, float], vm: dict[str, float] | None,
          same: dict[str, float] | None) -> None:
    n = ours["samples"]
    text = (f"{name}: {int(n):,} samples\n  ours: {ours['stored'] / n:.2f} B/sample "
            f"compressed, {ours['pages'] / n:.2f} in SQLite pages, {ours['plain'] / n:.2f} "
            "before the compressor")
    for label, figures in (("value at source ms", vm), ("+ latency series", same)):
        if figures is not None:
            text += (f"\n  VictoriaMetrics, {label}: {figures['merged'] / n:.2f} B/sample "
                     f"(data + indexdb after force_flush, force_merge and a clean stop; "
                     f"{figures['total'] / n:.2f} with its caches and metadata; "
                     f"{int(figures['rows']):,} rows stored)")
    print(text, flush=True)


def _victorias(series: list[Series], work: Path, args: argparse.Namespace,
               ) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """VictoriaMetrics with the values alone, and with the receive latency as well."""
    if args.no_vm:
        return None, None
    alone = victoria(series, work / "alone")
    if args.no_latency:
        return alone, None
    latency = [(d, s, ts, received - ts, received) for d, s, ts, _, received in series]
    return alone, victoria(series, work / "latency", latency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-days", type=int, default=2)
    parser.add_argument("--tags", type=int, default=5000)
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--no-vm", action="store_true", help="only our encoding")
    parser.add_argument("--no-latency", action="store_true",
                        help="VictoriaMetrics with the values alone only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sealed-bench-") as tmp:
        work = Path(tmp)
        demo, demo_series = demo_load(args.demo_days, work / "demo")
        vm, same = _victorias(demo_series, work / "vm-demo", args)
        _line(f"demo factory, {args.demo_days} day(s), {int(demo['segments']):,} segments, "
              f"sealed in {demo['seal_s']:.2f} s", demo, vm, same)
        shutil.rmtree(work / "demo", ignore_errors=True)
        tags, tag_series = encode_tags(args.tags, args.minutes)
        vm, same = _victorias(tag_series, work / "vm-tags", args)
        _line(f"{args.tags:,} tags at 1 Hz for {args.minutes} min, encoded and packed in "
              f"{tags['encode_s']:.1f} s", tags, vm, same)
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
