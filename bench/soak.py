"""The large versions of the fault-matrix rows (docs/reliability.md §c) that CI runs small:

    .venv/bin/python bench/soak.py T5 [--cuts 500] [--runs 1] [--seed 5]
    .venv/bin/python bench/soak.py T9 [--minutes 5] [--keepalive-s 30] [--runs 1]
    .venv/bin/python bench/soak.py T10 [--agents 50] [--runs 1]
    .venv/bin/python bench/soak.py T11 [--window-s 60] [--runs 1]

T5: RST after k bytes of a report's PUBLISH for `--cuts` places (tests/support/
reset_mid_publish.py); each run asserts every cut happened, nothing was rejected and I1-I8.
T9: 500 ms delay, 2 KB/s, an RST every 30-60 s, a 13 KB report every 10 s for `--minutes`
(tests/support/slow_link.py): all delivered (I1-I8), reconnects <= resets + 1, RSS growth.
T10: `--agents` agent processes connected to one broker, which restarts
(tests/support/herd.py): the busiest 100 ms bin of reconnects, the last one back.
T11: the broker's ACL refuses the report topic (PUBACK 0x87), watched `--window-s` seconds
(tests/support/puback_refused.py): alarms, CPU share of the agent process, the row's state.

Each run starts its own Mosquitto on a free loopback port (stopped by PID) in a temp dir and
prints one line of figures; the exit status is 1 when a run misses the row's figure.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import _paths  # noqa: F401  (the import path: before anything of the project)

from tests.support.herd import RECONNECT_MAX_S, run_herd
from tests.support.invariants import check_no_tracebacks
from tests.support.mosquitto import Broker
from tests.support.puback_refused import expected_alarm_times, run_refused
from tests.support.reset_mid_publish import run_resets
from tests.support.slow_link import run_slow_link


def soak_t5(cuts: int, runs: int, seed: int) -> bool:
    ok = True
    for run in range(runs):
        with tempfile.TemporaryDirectory() as folder, Broker(Path(folder)) as broker:
            figures = run_resets(Path(folder), broker, cuts, seed=seed + run)
        passed = figures.resets == cuts and figures.rejected == 0 and figures.stored == cuts + 1
        ok &= passed
        print(f"T5 run {run + 1}/{runs}: cuts {figures.cuts}, resets mid-PUBLISH "
              f"{figures.resets}, stored {figures.stored} (all verified, I1-I8 held), rejected "
              f"{figures.rejected}, de-duplicated resends {figures.duplicates}, "
              f"{figures.seconds:.0f} s -> {'PASS' if passed else 'FAIL'}")
    return ok


def soak_t9(minutes: float, keepalive_s: int, runs: int) -> bool:
    ok = True
    for run in range(runs):
        with tempfile.TemporaryDirectory() as folder, Broker(Path(folder)) as broker:
            figures = run_slow_link(Path(folder), broker, minutes * 60, 10.0, (30.0, 60.0),
                                    seed=9 + run, keepalive_s=keepalive_s)
        passed = figures.reconnects <= figures.resets + 1 and figures.rss_growth_mb < 20
        ok &= passed
        print(f"T9 run {run + 1}/{runs}: {minutes:g} min, keepalive {keepalive_s} s, reports "
              f"{figures.reports} all delivered (I1-I8 held), RSTs {figures.resets}, reconnects "
              f"{figures.reconnects}, de-duplicated resends {figures.duplicates}, drained "
              f"{figures.drained_after_s:.0f} s after the window, RSS {figures.rss_start_mb:.0f}"
              f" -> max {figures.rss_max_mb:.0f} MB (+{figures.rss_growth_mb:.1f}) -> "
              f"{'PASS' if passed else 'FAIL'}")
    return ok


def soak_t10(agents: int, runs: int) -> bool:
    ok = True
    for run in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            figures, errors = run_herd(Path(folder), agents)
        check_no_tracebacks(outputs=errors)
        passed = (figures.reconnected == agents and figures.busiest_share <= 0.20
                  and figures.last_back_s <= RECONNECT_MAX_S + 2)
        ok &= passed
        print(f"T10 run {run + 1}/{runs}: {agents} agents, reconnected {figures.reconnected}, "
              f"busiest 100 ms bin {figures.busiest_bin} ({figures.busiest_share:.0%}), last "
              f"back {figures.last_back_s:.2f} s after the broker listened (bound "
              f"{RECONNECT_MAX_S + 2:.0f} s) -> {'PASS' if passed else 'FAIL'}")
    return ok


def soak_t11(window_s: float, runs: int) -> bool:
    ok = True
    expected = expected_alarm_times(window_s)
    for run in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            figures = run_refused(Path(folder), window_s)
        passed = (
            figures.state in ("pending", "inflight") and figures.stored == 0
            and len(figures.alarms) in (len(expected), len(expected) - 1)
            and figures.refused_with_0x87 >= len(figures.alarms)
            and figures.cpu_share < 0.05
        )
        ok &= passed
        alarms = ", ".join(f"{t:.1f}" for t in figures.alarms)
        print(f"T11 run {run + 1}/{runs}: window {window_s:.0f} s, row {figures.state}, stored "
              f"{figures.stored}, alarms at [{alarms}] s (backoff schedule "
              f"{[round(t) for t in expected]}), broker rc135 PUBACKs "
              f"{figures.refused_with_0x87}, agent CPU {figures.cpu_s:.2f} s = "
              f"{figures.cpu_share:.2%} -> {'PASS' if passed else 'FAIL'}")
    return ok


def main() -> int:
    logging.basicConfig(level=logging.ERROR)  # the injected faults' warnings, one per reset
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    rows = parser.add_subparsers(dest="row", required=True)
    t5 = rows.add_parser("T5", help="RST in the middle of a PUBLISH")
    t5.add_argument("--cuts", type=int, default=500)
    t5.add_argument("--runs", type=int, default=1)
    t5.add_argument("--seed", type=int, default=5)
    t9 = rows.add_parser("T9", help="slow and lossy link")
    t9.add_argument("--minutes", type=float, default=5.0)
    t9.add_argument("--keepalive-s", type=int, default=30)
    t9.add_argument("--runs", type=int, default=1)
    t10 = rows.add_parser("T10", help="thundering herd after a broker restart")
    t10.add_argument("--agents", type=int, default=50)
    t10.add_argument("--runs", type=int, default=1)
    t11 = rows.add_parser("T11", help="PUBACK 0x87 from a broker ACL")
    t11.add_argument("--window-s", type=float, default=60.0)
    t11.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    if args.row == "T5":
        ok = soak_t5(args.cuts, args.runs, args.seed)
    elif args.row == "T9":
        ok = soak_t9(args.minutes, args.keepalive_s, args.runs)
    elif args.row == "T10":
        ok = soak_t10(args.agents, args.runs)
    else:
        ok = soak_t11(args.window_s, args.runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
