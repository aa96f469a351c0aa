"""The signed bytes of the demo factory's first days, to compare two trees' report building.

    .venv/bin/python bench/report_bytes.py OUT [--days 30] [--workers 0] [--one-by-one]
    PYTHONPATH=<other tree> .venv/bin/python bench/report_bytes.py OUT2 ...
    cmp OUT OUT2

Builds the days on a fresh copy of bench/reports.py's store with a fixed clock and a fixed
key (~/.cache/tieragent-bench/fixed-keys), then writes each signed report (JWS, one per
line) and the sha256 of every sealed block to OUT. Ed25519 signatures are deterministic, so
the files are equal exactly when the payloads and the stored blocks are.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sqlite3
import tempfile
from datetime import timedelta
from pathlib import Path

import _paths  # noqa: F401  (the import path: before anything of the project)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--one-by-one", action="store_true")
    args = parser.parse_args()

    import agent.reporter as reporter
    from agent.config import load_config
    from agent.outbox import Outbox
    from agent.protocol.keys import init_keys
    from agent.store.store import Store
    from bench.reports import CACHE, FIRST, demo_store
    from tieragent.demo import AGENT_CONFIG, DEMO_POLICY

    keys = CACHE / "fixed-keys"
    if not keys.exists():
        init_keys(keys, None)
    config = load_config(AGENT_CONFIG)
    days = [(FIRST + timedelta(days=n)).isoformat() for n in range(args.days)]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        shutil.copyfile(demo_store(120) / "agent.db", tmp / "agent.db")
        store = Store.open(tmp / "agent.db", config)
        outbox = Outbox(tmp / "outbox.db")
        context = reporter.ReportContext(
            config=config, config_path=AGENT_CONFIG, store=store, outbox=outbox, key_dir=keys,
            policy=DEMO_POLICY.load(), bureau_id="bureau", now=lambda: 1_800_000_000.0,
        )
        if args.one_by_one:
            for day in days:
                reporter.build_period_report(context, day)
        else:
            reporter.build_period_reports(context, days, workers=args.workers)
        lines = [item.jws for item in outbox.items()]
        outbox.close()
        store.close()
        with sqlite3.connect(tmp / "agent.db") as conn:
            for row in conn.execute(
                "SELECT day_start, device_id, codec, segments, samples, data FROM sealed_blocks "
                "ORDER BY day_start, device_id"
            ):
                lines.append(f"block {row[0]} {row[1]} {row[2]} {row[3]} {row[4]} "
                             f"{hashlib.sha256(row[5]).hexdigest()}")
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{reporter.__file__}: {args.days} reports and their sealed blocks in {args.out}")


if __name__ == "__main__":
    main()
