"""Delivery benchmark: reports/s signed + delivered end to end through a real Mosquitto with
signed receipts, against the real bureau receiver and against a minimal receipt signer.

    .venv/bin/python bench/delivery.py [--reports 200] [--devices 2] [--window 4]
                                       [--receiver both|bureau|fast]
                                       [--bureau-db sqlite|postgresql] [--bureau-process]

Starts its own Mosquitto on a free loopback port (stopped by PID) and works in a temp dir.
Report dicts are built before timing (building is bench/reports.py's); timed per receiver:

- sign + outbox commit (canonical bytes, Ed25519, one synchronous=FULL transaction each);
- deliver: publish at QoS 1 -> receiver -> signed receipt -> receipt verified -> row acked;
- end to end: both.

`bureau` is the real receiver (verify key, signature, chain, schema, indicator
recomputation, store, receipt); `fast` is a minimal receipt signer in its own process
(parse, SHA-256, sign an `accepted` receipt), so that the agent's side is measured without
the bureau's verification cost. The bureau's verification alone and with store + receipt
are timed too, to give its share. The receipts are real (signed, verified by the agent).
`--bureau-db postgresql`: the real bureau stores into a PostgreSQL of its own, started as the
tests start theirs but durable (fsync on: tests/support/postgres.py), instead of SQLite.
`--bureau-process`: the real bureau runs as `tieragent bureau serve` in its own process, as
deployed, instead of a Receiver in this process (where it shares the GIL with the agent's
publisher).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import _paths  # noqa: F401  (the import path: before anything of the project)
from joserfc.jwk import OKPKey

from agent.outbox import Outbox
from agent.protocol.chain import genesis_sha256
from agent.protocol.envelope import Kind, canonical_bytes, public_jwk, sha256_hex, sign_compact
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


def fast_signer(broker_url: str, key_file: Path) -> None:
    """A minimal bureau: an `accepted` receipt for every report, nothing verified or stored.
    Runs as `bench/delivery.py --fast-signer URL KEY_FILE`; prints `ready` once subscribed."""
    from urllib.parse import urlparse

    import paho.mqtt.client as mqtt

    from agent.protocol.envelope import payload_sha256, unverified_payload
    from agent.protocol.mqtt import no_delay, receipt_topic
    from bureau.receipts import receipt_payload, sign_receipt

    key = OKPKey.import_key(key_file.read_bytes())
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-fast-signer")
    client.on_socket_open = no_delay  # as agent.protocol.mqtt.make_client does

    def on_connect(c: mqtt.Client, *_: Any) -> None:
        c.subscribe("tieragent/v1/+/report", qos=1)

    def on_subscribe(*_: Any) -> None:
        print("ready", flush=True)

    def on_message(c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        token = bytes(message.payload)
        report = unverified_payload(token, Kind.REPORT)
        receipt = receipt_payload(
            bureau_id="bench", factory_id=report["factory_id"], report_id=report["report_id"],
            report_sha256=payload_sha256(token), seq=report["seq"], status="accepted",
            state="accepted", received_at=time.time(),
        )
        c.publish(receipt_topic(report["factory_id"]), sign_receipt(receipt, key).encode(), qos=1)

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    url = urlparse(broker_url)
    client.connect(url.hostname or "127.0.0.1", url.port or 1883)
    client.loop_forever()  # until the benchmark stops this process (by PID)


def serve_bureau(
    tmp: Path, db: Path | str, broker_url: str, agent_key: OKPKey
) -> tuple[dict[str, str], subprocess.Popen[bytes]]:
    """`tieragent bureau serve` on `db` (the agent's key enrolled first), subscribed; its
    receipt key's public JWK and the process (stopped by PID by the caller)."""
    from bureau.database import DATABASE_URL_ENV
    from bureau.receipts import create_bureau_key
    from bureau.registry import KeyRegistry
    from bureau.store import SqlReportStore
    from tests.support.paths import python_env
    from tests.support.reports import BUREAU
    from tests.support.waiting import wait_until

    store = SqlReportStore(db)
    with store.transaction():
        KeyRegistry(store.db).enroll(FACTORY, public_jwk(agent_key))
    store.close()
    key_file = tmp / "bureau-key.pem"
    receipt_key = create_bureau_key(key_file)
    target = ["--db", str(db)] if isinstance(db, Path) else []
    env = python_env(**({} if target else {DATABASE_URL_ENV: str(db)}))
    log = tmp / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tieragent", "bureau", "serve", *target,
             "--broker", broker_url, "--key", str(key_file), "--bureau-id", BUREAU,
             "--protocol", "5"],
            stdout=out, stderr=out, env=env, cwd=tmp,
        )
    if not wait_until(lambda: b"Bureau receiver connected." in log.read_bytes(), 60):
        os.kill(process.pid, signal.SIGKILL)
        raise SystemExit(f"bureau serve did not connect: {log.read_text()[-800:]}")
    return public_jwk(receipt_key), process


def deliver(
    name: str, broker_url: str, receipt_key: dict[str, str], reports: list[dict[str, Any]],
    key: OKPKey, outbox_path: Path, window: int,
) -> dict[str, float]:
    outbox = Outbox(outbox_path)
    settings = PublisherSettings(
        broker_url=broker_url, factory_id=FACTORY, bureau_keys=(receipt_key,), keepalive_s=5,
        reconnect_min_s=0.1, reconnect_max_s=2.0, receipt_timeout_s=10.0, window=window,
    )

    def sign(payload: bytes) -> str:
        return sign_compact(payload, key, Kind.REPORT)

    t0 = time.perf_counter()
    for report in reports:
        period_slot = f"day/{report['period']['key']}/0"
        outbox.commit_report(FACTORY, period_slot, partial(_prebuilt, report), sign)
    commit_s = time.perf_counter() - t0
    with Publisher(settings, outbox) as publisher:
        t1 = time.perf_counter()
        drained = publisher.drain(300)
        deliver_s = time.perf_counter() - t1
    total_s = time.perf_counter() - t0
    acked = outbox.counts()["acked"]
    outbox.close()
    n = len(reports)
    print(f"[{name}] sign + commit (synchronous=FULL):     {n / commit_s:8.1f} reports/s")
    print(f"[{name}] deliver with signed receipts:         {n / deliver_s:8.1f} reports/s"
          f"  (drained={drained}, acked={acked})")
    print(f"[{name}] end to end sign+commit+deliver:       {n / total_s:8.1f} reports/s")
    return {"commit": commit_s, "deliver": deliver_s, "total": total_s}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=200)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--receiver", choices=("both", "bureau", "fast"), default="both")
    parser.add_argument("--fast-signer", nargs=2, metavar=("BROKER_URL", "KEY_FILE"))
    parser.add_argument("--bureau-db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--bureau-process", action="store_true",
                        help="the bureau as `tieragent bureau serve` in its own process")
    args = parser.parse_args()
    if args.fast_signer:
        fast_signer(args.fast_signer[0], Path(args.fast_signer[1]))
        return
    key = OKPKey.generate_key("Ed25519")
    n = args.reports
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(tmp, "set_tcp_nodelay true\n")
        broker.start()
        try:
            started = time.perf_counter()
            reports, prev = [], genesis_sha256(FACTORY)
            for seq, period in enumerate(periods(n), start=1):
                report = make_report(key, period, seq, prev, devices=args.devices)
                reports.append(report)
                prev = sha256_hex(canonical_bytes(report))
            build_s = time.perf_counter() - started
            size = len(canonical_bytes(reports[0]))
            print(f"reports: {n} x {size} bytes ({args.devices} devices, hourly rows), "
                  f"window {args.window}")
            print(f"(building the report dicts, untimed below: {n / build_s:.1f} reports/s)")

            if args.receiver in ("both", "fast"):
                signer_key = OKPKey.generate_key("Ed25519")
                key_file = tmp / "fast-signer.pem"
                key_file.write_bytes(signer_key.as_pem(private=True))
                signer = subprocess.Popen(
                    [sys.executable, __file__, "--fast-signer", broker.url, str(key_file)],
                    stdout=subprocess.PIPE, text=True,
                )
                try:
                    assert signer.stdout is not None
                    if signer.stdout.readline().strip() != "ready":
                        raise SystemExit("the fast receipt signer did not subscribe")
                    deliver("fast receipts", broker.url, public_jwk(signer_key), reports, key,
                            tmp / "fast.db", args.window)
                finally:
                    signer.terminate()
                    signer.wait(10)
            if args.receiver in ("both", "bureau"):
                server = None
                bureau_db: Path | str = tmp / "bureau.db"
                verify_db: Path | str = tmp / "verify.db"
                if args.bureau_db == "postgresql":
                    from tests.support.postgres import PostgresServer

                    server = PostgresServer(durable=True)
                    server.start()
                    bureau_db, verify_db = server.create_database(), server.create_database()
                where = "own process" if args.bureau_process else "in this process"
                print(f"[real bureau] store: {args.bureau_db}, {where}")
                if args.bureau_process:
                    receipt_jwk, serve = serve_bureau(tmp, bureau_db, broker.url, key)
                    try:
                        deliver("real bureau", broker.url, receipt_jwk, reports, key,
                                tmp / "bureau-outbox.db", args.window)
                    finally:
                        os.kill(serve.pid, signal.SIGTERM)
                        serve.wait(30)
                else:
                    bureau = start_bureau(bureau_db, broker.url, {FACTORY: key})
                    deliver("real bureau", broker.url, bureau.public, reports, key,
                            tmp / "bureau-outbox.db", args.window)
                    bureau.receiver.stop()
                # The bureau's own share: verification alone, and with store + receipt.
                verify_bureau = start_bureau(verify_db, None, {FACTORY: key})
                box = Outbox(tmp / "bureau-outbox.db")
                tokens = [item.jws.encode() for item in box.items(FACTORY)]
                box.close()
                topic = report_topic(FACTORY)
                t2 = time.perf_counter()
                for token in tokens:
                    verify_bureau.receiver.verifier.check(topic, token)
                check_s = time.perf_counter() - t2
                t3 = time.perf_counter()
                for token in tokens:
                    verify_bureau.receiver.handle(topic, token)
                handle_s = time.perf_counter() - t3
                print(f"[bureau alone] verify (incl. recompute):    {n / check_s:8.1f} reports/s")
                print(f"[bureau alone] verify + store + receipt:    {n / handle_s:8.1f} reports/s")
                verify_bureau.receiver.stop()
                if server is not None:
                    server.stop()
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
