"""The verify and ingest stages of bench/bureau.py (issue 18 item 6).

`signed_messages` builds chained daily reports of several factories with the annual stage's
generator (bench/bureau.py: `templates`, `factory_rows`); `verify_stage` times
`Verifier.check` on an empty store, `ingest_stage` a real `Receiver.handle` (verify, one
transaction: report, measures rows, log leaf, signed receipt; synchronous=FULL) into a new
SQLite file. Rates per core: reports over the process's CPU time, wall-clock rate beside it.
Runs on whatever `bureau` package is first on the path, so the same script measures an older
checkout (`PYTHONPATH=<old tree>`) side by side.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from joserfc.jwk import OKPKey

from agent.protocol.mqtt import report_topic


def signed_messages(
    factories: int, days: int, devices: int, templates: Callable[[int, int], list[Any]],
    factory_rows: Callable[[tuple[int, list[dict[str, Any]]]], Any],
    factory_id: Callable[[int], str],
) -> tuple[list[tuple[str, bytes]], dict[str, dict[str, str]]]:
    """(topic, JWS) of `factories` x `days` chained reports, day by day across factories."""
    bodies = templates(days, devices)
    keys: dict[str, dict[str, str]] = {}
    per_factory: list[list[tuple[str, bytes]]] = []
    for n in range(factories):
        jwk, rows, _ = factory_rows((n, bodies[n % len(bodies)]))
        fid = factory_id(n)
        keys[fid] = jwk
        per_factory.append([(report_topic(fid), str(row[9]).encode("ascii")) for row in rows])
    messages = [m for day in zip(*per_factory, strict=True) for m in day]
    return messages, keys


def _timed(label: str, count: int, run: Callable[[], None]) -> dict[str, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    cpu_s, wall_s = time.process_time() - cpu, time.perf_counter() - wall
    print(f"{label:46s} {count / cpu_s:8.0f} reports/s per core (CPU {cpu_s:.2f} s), "
          f"{count / wall_s:8.0f} wall", flush=True)
    return {"per_core": count / cpu_s, "wall": count / wall_s}


def verify_stage(
    messages: list[tuple[str, bytes]], keys: dict[str, dict[str, str]], bureau_id: str
) -> dict[str, float]:
    from bureau.registry import KeyRegistry
    from bureau.store import SqliteReportStore
    from bureau.verify import Verifier

    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteReportStore(Path(tmp) / "verify.db")
        registry = KeyRegistry(store.db)
        with store.transaction():
            for fid, jwk in keys.items():
                registry.enroll(fid, jwk, at=0.0)
        verifier = Verifier(registry, store, bureau_id)
        statuses: dict[str, int] = {}

        def run() -> None:
            for topic, message in messages:
                decision = verifier.check(topic, message)
                key = decision.reason or decision.status
                statuses[key] = statuses.get(key, 0) + 1

        figures = _timed("verify (signature, schema, chain, indicators)", len(messages), run)
        store.close()
    print(f"  verdicts {statuses}")
    assert set(statuses) <= {"accepted"}, statuses
    return figures


def ingest_stage(
    messages: list[tuple[str, bytes]], keys: dict[str, dict[str, str]], bureau_id: str,
    database_url: str | None = None,
) -> dict[str, float]:
    """`database_url`: a PostgreSQL database to ingest into instead of a new SQLite file."""
    from bureau.receiver import Receiver, ReceiverSettings

    with tempfile.TemporaryDirectory() as tmp:
        receiver = Receiver(
            ReceiverSettings(db=database_url or Path(tmp) / "ingest.db",
                             broker_url="mqtt://127.0.0.1:1",
                             bureau_id=bureau_id, keepalive_s=5),
            OKPKey.generate_key("Ed25519"),
        )
        with receiver.store.transaction():
            for fid, jwk in keys.items():
                receiver.registry.enroll(fid, jwk, at=0.0)

        def run() -> None:
            for topic, message in messages:
                assert receiver.handle(topic, message) is not None

        where = "PostgreSQL, one receiver" if database_url else "SQLite"
        figures = _timed(f"ingest (verify + store + signed receipt), {where}", len(messages),
                         run)
        stored = receiver.store.db.scalar(
            "SELECT COUNT(*) FROM reports WHERE state = 'accepted'"
        )
        receiver.store.close()
    assert stored == len(messages), (stored, len(messages))
    return figures
