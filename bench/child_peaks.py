"""Peak RSS of the short-lived children of `tieragent run` (issue 20 item 11), on the data
an ingest benchmark left behind (`bench/ingest.py ... --keep`):

    .venv/bin/python bench/child_peaks.py WORK_DIR

- closing an hour (`python -m agent.store.base_rows`): every device's current hour;
- building a day's report (`python -m agent.report_pass`): today's day (factory time zone),
  with a fresh signing key in WORK_DIR/keys and the clock moved two days on, so the day is
  over.

Each child runs under `/usr/bin/time -f %M` (its maximum RSS); the collecting process's own
RSS is what bench/ingest.py reports.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml
from _paths import ROOT

from agent.child_env import child_env
from agent.config import parse_config
from agent.report_pass import PassRequest
from agent.service import policy_files
from agent.service_config import Reporting
from agent.store.base_rows import read_inputs
from indicators.columns import HOUR_S


def peak_mb(module: str, stdin: bytes) -> tuple[float, bytes]:
    done = subprocess.run(
        ["/usr/bin/time", "-f", "PEAK %M", sys.executable, "-m", module], input=stdin,
        capture_output=True, env=child_env(), cwd=ROOT, check=True,
    )
    line = [x for x in done.stderr.decode().splitlines() if x.startswith("PEAK ")][-1]
    return int(line.split()[1]) / 1024, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work_dir", type=Path)
    args = parser.parse_args()
    work: Path = args.work_dir.resolve()
    config_path = work / "bench.yaml"
    config = parse_config(yaml.safe_load(config_path.read_text()), str(config_path))
    db = work / "data" / "agent.db"

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        last = conn.execute("SELECT max(received_ts) FROM samples").fetchone()[0]
        hour = int(last // HOUR_S) * HOUR_S
        inputs = [read_inputs(conn, d.id, hour, hour + HOUR_S, d.ideal_cycle_time_s,
                              config.collection.min_failure_s) for d in config.devices]
    mb, out = peak_mb("agent.store.base_rows", pickle.dumps(inputs))
    print(f"closing an hour of {len(inputs)} devices (agent.store.base_rows): peak RSS "
          f"{mb:.0f} MB, {len(pickle.loads(out))} rows")

    keys = work / "keys"
    if not keys.exists():
        subprocess.run([sys.executable, "-m", "tieragent", "keys", "init", "--dir", str(keys)],
                       check=True, capture_output=True, cwd=ROOT, env=child_env())
    zone = config.factory.time_zone
    day = datetime.fromtimestamp(last, ZoneInfo(zone)).date().isoformat()
    reporting = Reporting()
    request = PassRequest(
        config=config, config_path=config_path, store=db, outbox=work / "data" / "outbox.db",
        key_dir=keys, policy_files=policy_files(reporting), bureau_id=reporting.bureau_id,
        passphrase=None, clock_offset_s=2 * 86400.0, keys=(day,),
    )
    mb, out = peak_mb("agent.report_pass", pickle.dumps(request))
    answers = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    print(f"building the report of {day} (agent.report_pass): peak RSS {mb:.0f} MB; {answers}")


if __name__ == "__main__":
    main()
