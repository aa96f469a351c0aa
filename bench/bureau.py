"""Benchmark: the bureau's throughput (issue 18 item 6): verification, ingest (verify + store +
signed receipt) and the annual evaluation of many factories from its SQLite store.

    .venv/bin/python bench/bureau.py [--factories 1000] [--days 365] [--devices 2]
        [--workers 2] [--db ~/.cache/tieragent-bench/bureau-1000x365x2.db]
        [--stages verify,ingest,annual] [--ingest-factories 50] [--ingest-days 40]
        [--old-factories 20] [--eval-workers 1]
        [--database-url URL] [--receivers 3] [--pg-factories 200] [--pg-days 10]
        [--profile-receiver FILE]

verify / ingest: `--ingest-factories` x `--ingest-days` signed daily reports (the same generator
as below, chained), verified by `Verifier.check` on an empty store, then handled by a real
`Receiver` (`handle`: verify, one transaction with the report, its measures rows, its log leaf
and its signed receipt, synchronous=FULL) into a new SQLite file; an older checkout is measured
by the same script with `PYTHONPATH=<that tree>` (bench/bureau_ingest.py). Rates are per core:
reports over the process's CPU time (time.process_time), with the wall-clock rate beside it.

pg (bench/bureau_pg.py): `--pg-factories` x `--pg-days` signed reports delivered through a real
Mosquitto to `--receivers` real `tieragent bureau serve --share-group` processes on one
PostgreSQL (`--database-url`, or a durable server of its own started as the tests start
theirs); reports stored and receipted per second, wall clock, everything checked afterwards.

annual: the old path (every report's JSON, `evaluate_from_payloads`) on the first
`--old-factories` factories, then the columns path (`evaluate_from_store`) on all, in
`--eval-workers` processes; the two evaluation JSONs are compared byte for byte on the old
path's factories.

The store is generated once and cached at --db (delete the file to rebuild): every factory gets
its own Ed25519 key, enrolled in the registry, and `days` daily reports of 2025 that are real
signed reports (canonical JSON, compact JWS) chained by seq/prev_sha256. To sign fast, the report
bodies are built with `agent.protocol.report.build_report` for a few templates (synthetic hourly
base measures) and specialised per factory (ids, key, chain), then canonicalised and signed; rows go
straight into the store through its API (no MQTT), with their measures rows as the receiver
writes them (bureau.measures_table.record). The benchmark then runs
`evaluate_from_store` (default policy, example benchmarks and declarations) for every factory,
and prints the total and per-factory time and the process's peak RSS (getrusage).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _paths import ROOT
from joserfc.jwk import OKPKey

from agent.protocol.chain import genesis_sha256
from agent.protocol.envelope import (
    Kind,
    canonical_bytes,
    public_jwk,
    sha256_hex,
    sign_compact,
    thumbprint,
)
from agent.protocol.period import Period
from agent.protocol.report import ReportMeta, build_report, report_has_samples, report_id
from bureau.evidence_export import evaluate_from_store
from bureau.registry import KeyRegistry
from bureau.store import SqliteReportStore, StoredReport
from indicators.columns import BASE_MEASURE_COLUMNS, COUNT_COLUMNS, INVENTORY_COLUMNS
from indicators.policy import PolicyFiles

try:  # absent from trees before issue 18, which the verify and ingest stages also measure
    from bureau import measures_table
except ImportError:
    measures_table = None  # type: ignore[assignment]

TZ = "Asia/Shanghai"
YEAR = 2025
TEMPLATES = 4
POLICY = ROOT / "config" / "policies" / "default-2026.yaml"
BENCHMARKS = ROOT / "config" / "benchmarks" / "example-2026.yaml"
DECLARATIONS = ROOT / "config" / "declarations.example.yaml"
PARAMS: dict[str, Any] = {
    "realtime_bound_s": 5.0,
    "networked_completeness": 0.95,
    "max_unknown_share": 0.05,
    "industry_type": "discrete",
    "time_zone": TZ,
    "count_tolerance": 0.0,
    "min_auto_share": 0.01,
    "performance_flag_above": 1.05,
    "industry_code": "C3484",
    "province": "tianjin",
}


def factory_id(n: int) -> str:
    return f"f{n:05d}"


def inventory(devices: int) -> pd.DataFrame:
    rows = [
        {
            "device_id": f"m{i}",
            "line": "L1",
            "process_step": f"op{i}",
            "key_process": True,
            "kind": "cnc",
            "digital": True,
            "connection": "opcua",
        }
        for i in range(devices)
    ]
    return pd.DataFrame(rows, columns=list(INVENTORY_COLUMNS))


def day_base(day: date, devices: int, rng: np.random.Generator) -> pd.DataFrame:
    start, _ = Period("day", day.isoformat(), TZ).bounds()
    hours = np.arange(start, start + 86400, 3600, dtype=np.int64)
    frames = []
    for i in range(devices):
        n = len(hours)
        pdt = rng.choice([0.0, 600.0], n)
        apt = rng.integers(1800, 2900, n).astype(float) - pdt
        asut = rng.integers(0, 100, n).astype(float)
        adet = rng.integers(0, 100, n).astype(float)
        adot = 3600.0 - pdt - apt - asut - adet
        produced = (apt // 30).astype(np.int64)
        scrap = rng.integers(0, 3, n)
        frames.append(
            pd.DataFrame(
                {
                    "device_id": f"m{i}",
                    "hour_start": hours,
                    "pot_s": 3600.0,
                    "pdt_s": pdt,
                    "apt_s": apt,
                    "asut_s": asut,
                    "adet_s": adet,
                    "adot_s": adot,
                    "unk_s": 0.0,
                    "auto_apt_s": apt,
                    "ideal_time_s": produced * 27.0,
                    "produced": produced,
                    "good": produced - scrap,
                    "scrap": scrap,
                    "rework": 0,
                    "unplanned_stops": (adet > 50).astype(np.int64),
                    "failures": (adet > 80).astype(np.int64),
                    "samples_expected": 720,
                    "samples_received": 720,
                    "samples_on_time": 719,
                    "samples_with_source_ts": 720,
                    "samples_bad": 0,
                    "energy_kwh": np.round(rng.uniform(1, 5, n), 3),
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True).loc[:, list(BASE_MEASURE_COLUMNS)]
    return frame.astype({c: np.int64 for c in COUNT_COLUMNS})


def _meta(fid: str, kid: str, period: Period) -> ReportMeta:
    return ReportMeta(
        factory_id=fid,
        enterprise_id=f"E{fid}",
        bureau_id="bureau-bench",
        agent_version="0.1.0",
        kid=kid,
        config_sha256="a" * 64,
        policy_sha256="b" * 64,
        period=period,
        issued_at=f"{YEAR + 1}-01-01T00:00:00Z",
    )


def templates(days: int, devices: int) -> list[list[dict[str, Any]]]:
    """TEMPLATES x `days` report bodies built by build_report (ids are specialised later)."""
    out = []
    for t in range(TEMPLATES):
        rng = np.random.default_rng(t)
        bodies = []
        for d in range(days):
            day = date(YEAR, 1, 1) + timedelta(days=d)
            period = Period("day", day.isoformat(), TZ)
            bodies.append(
                build_report(
                    _meta("template", "k" * 43, period),
                    seq=d + 1,
                    prev_sha256="0" * 64,
                    inventory=inventory(devices),
                    base=day_base(day, devices, rng),
                    evaluation={"tier_reached": None, "conditions": [], "gaps": []},
                    segment_digests=[],
                    params=PARAMS,
                )
            )
        out.append(bodies)
    return out


FactoryRows = tuple[dict[str, str], list[tuple[Any, ...]], list[tuple[Any, ...]]]


def factory_rows(args: tuple[int, list[dict[str, Any]]]) -> FactoryRows:
    """One factory's key, signed and chained store rows and their measures rows (as the
    receiver records them); runs in a worker process."""
    n, bodies = args
    fid = factory_id(n)
    key = OKPKey.generate_key("Ed25519")
    kid = thumbprint(public_jwk(key))
    prev = genesis_sha256(fid)
    rows: list[tuple[Any, ...]] = []
    measures: list[tuple[Any, ...]] = []
    for seq, body in enumerate(bodies, start=1):
        period = Period("day", body["period"]["key"], TZ)
        report = {
            **body,
            "factory_id": fid,
            "enterprise_id": f"E{fid}",
            "kid": kid,
            "seq": seq,
            "prev_sha256": prev,
            "report_id": report_id(fid, period, 0),
        }
        payload = canonical_bytes(report)
        token = sign_compact(payload, key, Kind.REPORT)
        digest = sha256_hex(payload)
        if measures_table is not None:
            measures.append(
                (report["report_id"], fid, period.key, report_has_samples(report),
                 measures_table.measure_rows(report))
            )
        rows.append(
            (
                report["report_id"],
                fid,
                seq,
                "day",
                period.key,
                0,
                kid,
                digest,
                prev,
                token,
                "accepted",
                time.time(),
                "-",
                "-",
            )
        )
        prev = digest
    return public_jwk(key), rows, measures


def build_store(db: Path, factories: int, days: int, devices: int, workers: int) -> None:
    started = time.perf_counter()
    bodies = templates(days, devices)
    print(f"templates built in {time.perf_counter() - started:.1f} s", flush=True)
    tmp = db.with_name(db.name + ".partial")
    tmp.unlink(missing_ok=True)
    store = SqliteReportStore(tmp)
    registry = KeyRegistry(store.db)
    jobs = ((n, bodies[n % TEMPLATES]) for n in range(factories))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for n, (jwk, rows, measures) in enumerate(pool.map(factory_rows, jobs, chunksize=4)):
            with store.transaction():
                registry.enroll(factory_id(n), jwk, at=0.0)
                for row in rows:
                    store.insert(StoredReport(*row))
                for measure in measures:
                    assert measures_table is not None
                    measures_table.write(store.db, *measure)
            if (n + 1) % 50 == 0:
                print(
                    f"  {n + 1} factories stored ({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
    store.close()
    tmp.rename(db)
    print(f"store generated in {time.perf_counter() - started:.1f} s: {db}", flush=True)


def annual_stage(args: argparse.Namespace) -> None:
    db = args.db or Path.home() / ".cache" / "tieragent-bench" / (
        f"bureau-{args.factories}x{args.days}x{args.devices}.db"
    )
    db.parent.mkdir(parents=True, exist_ok=True)
    if not db.exists():
        build_store(db, args.factories, args.days, args.devices, args.workers)
    else:
        print(f"using cached store {db}")
    files = PolicyFiles(POLICY, BENCHMARKS, DECLARATIONS)
    store = SqliteReportStore(db)
    old = min(args.old_factories, args.factories)
    reference: dict[int, bytes] = {}
    if old:
        started = time.perf_counter()
        from bureau.evidence_export import evaluate_from_payloads

        for n in range(old):
            result, _, _ = evaluate_from_payloads(store, factory_id(n), YEAR, files)
            reference[n] = hashlib.sha256(_evaluation_bytes(result)).digest()
        total = time.perf_counter() - started
        print(f"old path (every report's JSON): {old} factories in {total:.1f} s: "
              f"{total / old * 1000:.0f} ms per factory, "
              f"{total / old * args.factories:.0f} s for {args.factories}", flush=True)
    store.close()
    started = time.perf_counter()
    cpu = time.process_time()
    workers = max(1, args.eval_workers)
    jobs = [(db, range(w, args.factories, workers), args.days) for w in range(workers)]
    tiers: dict[str, int] = {}
    slowest = 0.0
    digests: dict[int, bytes] = {}
    if workers == 1:
        outcomes = [evaluate_factories(jobs[0])]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            outcomes = list(pool.map(evaluate_factories, jobs))
    for worker_tiers, worker_slowest, worker_bytes in outcomes:
        for tier, count in worker_tiers.items():
            tiers[tier] = tiers.get(tier, 0) + count
        slowest = max(slowest, worker_slowest)
        digests.update(worker_bytes)
    total = time.perf_counter() - started
    cpu_s = time.process_time() - cpu
    for n, expected in reference.items():
        assert digests[n] == expected, f"factory {n} differs from the old path"
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"columns path: evaluated {args.factories} factories x {args.days} daily reports "
        f"({args.devices} devices each) in {total:.1f} s with {workers} process(es) "
        f"(this process's CPU {cpu_s:.1f} s): {total / args.factories * 1000:.1f} ms per factory "
        f"(slowest {slowest * 1000:.0f} ms); peak RSS {peak_mb:.0f} MB; tiers {tiers}; "
        f"{len(reference)} evaluations byte-identical to the old path"
    )


def evaluate_factories(
    job: tuple[Path, range, int],
) -> tuple[dict[str, int], float, dict[int, bytes]]:
    """Evaluate some factories from columns in one process (its own store connection)."""
    db, numbers, days = job
    files = PolicyFiles(POLICY, BENCHMARKS, DECLARATIONS)
    store = SqliteReportStore(db)
    tiers: dict[str, int] = {}
    slowest = 0.0
    out: dict[int, bytes] = {}
    for n in numbers:
        t0 = time.perf_counter()
        result, _, _ = evaluate_from_store(store, factory_id(n), YEAR, files)
        slowest = max(slowest, time.perf_counter() - t0)
        tier = result.evaluation.tier_reached or "none"
        tiers[tier] = tiers.get(tier, 0) + 1
        assert result.coverage["accepted"] == days
        out[n] = hashlib.sha256(_evaluation_bytes(result)).digest()
    store.close()
    return tiers, slowest, out


def _evaluation_bytes(result: Any) -> bytes:
    return json.dumps(result.to_json(), sort_keys=True, ensure_ascii=False).encode("utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--factories", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--stages", default="verify,ingest,annual")
    parser.add_argument("--ingest-factories", type=int, default=50)
    parser.add_argument("--ingest-days", type=int, default=40)
    parser.add_argument("--old-factories", type=int, default=20)
    parser.add_argument("--eval-workers", type=int, default=1,
                        help="processes evaluating from columns (each its own connection)")
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL for the pg stage (default: start one, fsync on)")
    parser.add_argument("--receivers", type=int, default=3)
    parser.add_argument("--pg-factories", type=int, default=200)
    parser.add_argument("--pg-days", type=int, default=10)
    parser.add_argument("--profile-receiver", type=Path, default=None,
                        help="py-spy's raw stacks of receiver 0 during the pg stage")
    args = parser.parse_args()
    stages = set(args.stages.split(","))
    if stages & {"verify", "ingest"}:
        from bench.bureau_ingest import ingest_stage, signed_messages, verify_stage

        started = time.perf_counter()
        messages, keys = signed_messages(
            args.ingest_factories, args.ingest_days, args.devices, templates, factory_rows,
            factory_id,
        )
        print(f"{len(messages)} signed reports ({args.ingest_factories} factories x "
              f"{args.ingest_days} days, {len(messages[0][1])} bytes each) built in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        if "verify" in stages:
            verify_stage(messages, keys, "bureau-bench")
        if "ingest" in stages:
            ingest_stage(messages, keys, "bureau-bench")
    if "pg" in stages:
        from bench.bureau_ingest import signed_messages
        from bench.bureau_pg import pg_stage

        messages, keys = signed_messages(
            args.pg_factories, args.pg_days, args.devices, templates, factory_rows, factory_id,
        )
        pg_stage(messages, keys, receivers=args.receivers, database_url=args.database_url,
                 profile=args.profile_receiver)
    if "annual" in stages:
        annual_stage(args)


if __name__ == "__main__":
    main()
