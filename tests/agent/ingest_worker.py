"""Subprocess used by the durability tests (run as a script, not collected by pytest; as a
script its own folder is first on sys.path, so `agent_testkit` imports without set-up).

    ingest_worker.py kill DB_DIR BASE_TS RUN_ID      ingest until killed; print ACK lines
    ingest_worker.py diskfull DIR                    fill DIR, hit SQLITE_FULL, free, resume

`good` is a 16-bit counter running at 1000 counts/s since BASE_TS (true value =
floor((ts - BASE_TS) * 1000)), so deltas can be checked against the truth. `temp`
carries a unique id per sample so that acknowledged samples can be found again.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from agent_testkit import modbus_config, sample

from agent.store import Store

BATCH = 20


def make_batch(base: float, run_id: int, batch: int) -> list:  # type: ignore[type-arg]
    now = time.time()
    items = []
    for j in range(BATCH):
        ts = now + j * 1e-5
        true = math.floor((ts - base) * 1000)
        items.append(sample("good", ts, true % 65536))
        items.append(sample("temp", ts, run_id * 10_000_000 + batch * 100 + j))
    return items


def kill_mode(db_dir: Path, base: float, run_id: int) -> None:
    store = Store.open(db_dir / "agent.db", modbus_config(counter_bits=16))
    store.resume(time.time())
    print("READY", flush=True)
    for batch in range(1_000_000):  # bounded; the test kills us long before
        items = make_batch(base, run_id, batch)
        result = store.ingest(items, advance_to=time.time() - 1)
        if result.error is None:
            ids = [s.value for s in items if s.signal_id == "temp"]
            print("ACK", ids[0], ids[-1], flush=True)


def diskfull_mode(directory: Path) -> None:
    db_dir = directory / "data"
    store = Store.open(db_dir / "agent.db", modbus_config(counter_bits=16))
    store.resume(time.time())
    ballast = directory / "ballast"
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    with open(ballast, "wb") as handle:
        handle.write(b"\0" * max(0, free - 64 * 1024))
    attempted = stored = dropped = 0
    full_batches = 0
    for batch in range(5000):
        items = make_batch(time.time() - 10, 1, batch)
        result = store.ingest(items, advance_to=time.time() - 1)
        attempted += BATCH * 2
        stored += result.stored
        dropped += result.dropped
        if result.dropped:
            full_batches += 1
            if full_batches >= 3:
                break
    ballast.unlink()  # space returns
    resumed = 0
    for batch in range(5000, 5020):
        result = store.ingest(make_batch(time.time() - 10, 1, batch))
        attempted += BATCH * 2
        stored += result.stored
        dropped += result.dropped
        resumed += result.stored
    samples = store._conn.execute("SELECT count(*) FROM samples").fetchone()[0]
    losses = int(store.losses()["samples"].sum())
    check = store._conn.execute("PRAGMA quick_check").fetchone()[0]
    store.close()
    print(json.dumps({"attempted": attempted, "stored": stored, "dropped": dropped,
                      "resumed": resumed, "rows": samples, "losses": losses,
                      "quick_check": check}), flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "kill":
        kill_mode(Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
    else:
        diskfull_mode(Path(sys.argv[2]))
