"""Report-building benchmark: the demo factory's daily reports per second, from its store.

    .venv/bin/python bench/reports.py [--days 120] [--workers N] [--one-by-one]

Makes (once, cached in ~/.cache/tieragent-bench/reports-<days>d/) the demo's store for
`--days` days from 2026-01-01: the offline generator at the demo's 900 s grid, backfilled
(`tieragent sim history` + `tieragent backfill`, as `tieragent demo` does). Then, on a fresh
copy of that store (so that every day is sealed by its first report, as in the demo), builds,
signs and commits one report per day into a fresh outbox and prints reports/s (wall) and
CPU per report: this process and its worker processes together, and each part.

`--one-by-one` calls `build_period_report` per day (what `tieragent demo` and `report
--from/--to` did before the batch); without it, `build_period_reports` (one batch, with
`--workers` processes, default one per core up to two). Run against an older checkout
with `PYTHONPATH=<checkout> .venv/bin/python bench/reports.py --one-by-one` for a
side-by-side figure. The machine's load average is printed: on a shared machine the
figures move with the other jobs.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import _paths  # noqa: F401  (the import path: before anything of the project)

CACHE = Path.home() / ".cache" / "tieragent-bench"
FIRST = date(2026, 1, 1)
START = 1_767_196_800.0  # 2026-01-01 00:00 Asia/Shanghai


def demo_store(days: int) -> Path:
    """The data directory of the demo factory's first `days` days, made once."""
    from agent.backfill import backfill
    from agent.config import load_config
    from simulator.history import generate_history
    from simulator.model import load_factory
    from tieragent.demo import AGENT_CONFIG, FACTORY

    data = CACHE / f"reports-{days}d"
    if (data / "done").exists():
        return data
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        generate_history(
            load_factory(FACTORY), Path(tmp), START, START + days * 86400.0, seed=2026,
            sample_interval_s=900.0,
        )
        backfill(load_config(AGENT_CONFIG), Path(tmp), data / "agent.db")
    (data / "done").write_text("ok\n", encoding="utf-8")
    return data


def cpu_s() -> tuple[float, float]:
    """CPU seconds of this process, and of its reaped children (the worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--one-by-one", action="store_true")
    args = parser.parse_args()

    import agent.reporter as reporter
    from agent.config import load_config
    from agent.outbox import Outbox
    from agent.protocol.keys import init_keys
    from agent.store.store import Store
    from tieragent.demo import AGENT_CONFIG, DEMO_POLICY

    data = demo_store(args.days)
    days = [(FIRST + timedelta(days=n)).isoformat() for n in range(args.days)]
    config = load_config(AGENT_CONFIG)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        init_keys(tmp / "keys", None)
        shutil.copyfile(data / "agent.db", tmp / "agent.db")
        store = Store.open(tmp / "agent.db", config)
        outbox = Outbox(tmp / "outbox.db")
        context = reporter.ReportContext(
            config=config, config_path=AGENT_CONFIG, store=store, outbox=outbox,
            key_dir=tmp / "keys", policy=DEMO_POLICY.load(), bureau_id="bureau",
        )
        load_before = os.getloadavg()[0]
        (own0, children0), wall0 = cpu_s(), time.perf_counter()
        if args.one_by_one:
            for day in days:
                reporter.build_period_report(context, day)
            how = "build_period_report, one by one"
        else:
            reporter.build_period_reports(context, days, workers=args.workers)
            workers = "auto" if args.workers is None else args.workers
            how = f"build_period_reports, workers={workers}"
        wall = time.perf_counter() - wall0
        own1, children1 = cpu_s()
        own, children = own1 - own0, children1 - children0
        built = len(outbox.items())
        outbox.close()
        store.close()
    load_after = os.getloadavg()[0]
    print(f"{how} ({reporter.__file__})")
    print(f"days built:        {built} of {len(days)} (demo factory, 900 s grid)")
    print(f"reports/s (wall):  {built / wall:7.1f}   ({wall:.2f} s)")
    print(f"CPU per report:    {(own + children) / built * 1000:7.1f} ms (this process "
          f"{own / built * 1000:.1f} + workers {children / built * 1000:.1f})")
    print(f"load average:      {load_before:.2f} before, {load_after:.2f} after "
          f"({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
