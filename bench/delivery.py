"""Delivery benchmark: reports/s signed + delivered end to end through a real Mosquitto with
signed receipts, and the bureau's verification rate.

    .venv/bin/python bench/delivery.py [--reports 200] [--devices 2] [--window 4]

Starts its own Mosquitto on a free loopback port (stopped by PID) and works in a temp dir.
Report dicts are built before timing (pandas work is the store's job, not delivery's);
timed: canonicalise + sign + outbox commit (synchronous=FULL), then publish -> bureau
verify/store/receipt -> receipt verify -> ack.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import _paths  # noqa: F401  (the import path: before anything of the project)
from joserfc.jwk import OKPKey

from agent.outbox import Outbox
from agent.protocol.chain import genesis_sha256
from agent.protocol.envelope import Kind, canonical_bytes, sha256_hex, sign_compact
from agent.protocol.mqtt import report_topic
from agent.protocol.period import Period
from agent.publisher import Publisher, PublisherSettings
from tests.support.bureau_receiver import start_bureau
from tests.support.mosquitto import Broker
from tests.support.reports import FACTORY, TZ, make_report


def _prebuilt(report: dict[str, Any], _seq: int, _prev: str) -> dict[str, Any]:
    return report


def periods(n: int) -> list[Period]:
    from datetime import date, timedelta

    first = date(2024, 1, 1)
    return [Period("day", (first + timedelta(days=i)).isoformat(), TZ) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=200)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--window", type=int, default=4)
    args = parser.parse_args()
    key = OKPKey.generate_key("Ed25519")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(tmp)
        broker.start()
        try:
            started = time.perf_counter()
            reports, prev = [], genesis_sha256(FACTORY)
            for seq, period in enumerate(periods(args.reports), start=1):
                report = make_report(key, period, seq, prev, devices=args.devices)
                reports.append(report)
                prev = sha256_hex(canonical_bytes(report))
            build_s = time.perf_counter() - started
            size = len(canonical_bytes(reports[0]))

            bureau = start_bureau(tmp / "bureau.db", broker.url, {FACTORY: key})
            outbox = Outbox(tmp / "outbox.db")
            settings = PublisherSettings(
                broker_url=broker.url,
                factory_id=FACTORY,
                bureau_keys=(bureau.public,),
                keepalive_s=5,
                reconnect_min_s=0.1,
                reconnect_max_s=2.0,
                receipt_timeout_s=10.0,
                window=args.window,
            )
            t0 = time.perf_counter()

            def sign(payload: bytes) -> str:
                return sign_compact(payload, key, Kind.REPORT)

            for report in reports:
                period_slot = f"day/{report['period']['key']}/0"
                outbox.commit_report(FACTORY, period_slot, partial(_prebuilt, report), sign)
            commit_s = time.perf_counter() - t0
            with Publisher(settings, outbox) as publisher:
                t1 = time.perf_counter()
                drained = publisher.drain(300)
                deliver_s = time.perf_counter() - t1
            total_s = time.perf_counter() - t0
            bureau.receiver.stop()

            verify_bureau = start_bureau(tmp / "verify.db", None, {FACTORY: key})
            tokens = [item.jws.encode() for item in outbox.items(FACTORY)]
            topic = report_topic(FACTORY)
            t2 = time.perf_counter()
            for token in tokens:
                verify_bureau.receiver.verifier.check(topic, token)
            check_s = time.perf_counter() - t2
            t3 = time.perf_counter()
            for token in tokens:
                verify_bureau.receiver.handle(topic, token)
            handle_s = time.perf_counter() - t3
        finally:
            broker.stop()
    n = args.reports
    print(
        f"reports: {n} x {size} bytes ({args.devices} devices, hourly rows), window {args.window}"
    )
    print(f"build (pandas + indicators, untimed below): {n / build_s:8.1f} reports/s")
    print(f"sign + commit (synchronous=FULL):           {n / commit_s:8.1f} reports/s")
    print(
        f"deliver through Mosquitto with receipts:    {n / deliver_s:8.1f} reports/s"
        f"  (drained={drained})"
    )
    print(f"end to end sign+commit+deliver:             {n / total_s:8.1f} reports/s")
    print(f"bureau verify only (incl. recompute):       {n / check_s:8.1f} reports/s")
    print(f"bureau verify + store + sign receipt:       {n / handle_s:8.1f} reports/s")


if __name__ == "__main__":
    main()
