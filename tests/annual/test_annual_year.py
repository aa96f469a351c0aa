"""A whole simulated year, every day through a real Mosquitto to the bureau, evaluated annually."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import OKPKey
from simdata import (
    BENCHMARKS,
    DECLARATIONS,
    FACTORY,
    POLICY,
    ROOT,
    commit_day,
    generate,
    load_period,
    report_params,
)

from agent.outbox import ACKED, INFLIGHT, PENDING, REJECTED, Outbox
from agent.protocol.envelope import Kind, unverified_payload
from agent.publisher import Publisher, PublisherSettings
from bureau.evidence_export import evaluate_from_store
from bureau.store import SqliteReportStore
from indicators.catalog import Params
from indicators.kpi import compute
from indicators.policy import PolicyFiles
from simulator.ledger import load_ledger
from tests.support.bureau_receiver import start_bureau
from tests.support.mosquitto import Broker

YEAR = 2025
DAYS = 365
AGENT_CONFIG = ROOT / "config" / "demo-agent.yaml"
# Grid samples once an hour (state changes and counter steps are samples of their own, so the
# ledger's times and counts are still exact). The agent's backfill and year report cost per
# sample: at the demo's 900 s they take 45-65 s here; at 300 s the backfill alone ~50 s.
SAMPLE_INTERVAL_S = 3600.0


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _values(indicators: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (v["value"], v["reason"]) for k, v in indicators.items()}


def _cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "tieragent", *map(str, args)]


def agent_year_report(history: Path, work: Path) -> dict[str, Any]:
    """The agent's own path: `tieragent backfill` of the history, then `tieragent report
    --period YEAR` from its store; returns the signed year report's payload."""
    data, keys = work / "data", work / "keys"
    steps = [
        _cli("backfill", "--config", AGENT_CONFIG, "--history", history, "--data-dir", data),
        _cli("keys", "init", "--dir", keys),
        _cli("report", "--config", AGENT_CONFIG, "--period", str(YEAR), "--data-dir", data,
             "--key-dir", keys),
    ]
    for args in steps:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert proc.returncode == 0, (args[3:], proc.stderr[-2000:])
    outbox = Outbox(data / "outbox.db")
    (item,) = outbox.items()
    outbox.close()
    payload = unverified_payload(item.jws, Kind.REPORT)
    assert payload["period"]["kind"] == "year" and payload["period"]["key"] == str(YEAR)
    return payload


def deliver(outbox: Outbox, settings: PublisherSettings, timeout_s: float) -> None:
    """Every queued report through the agent's publisher; returns when each one is
    acknowledged by a signed receipt."""
    with Publisher(settings, outbox) as publisher:
        drained = publisher.drain(timeout_s)
    assert drained, f"{outbox.unacked()} reports unacknowledged after {timeout_s:.0f} s"
    assert outbox.counts() == {PENDING: 0, INFLIGHT: 0, ACKED: DAYS, REJECTED: 0}, outbox.counts()


@pytest.mark.slow
def test_a_year_of_daily_reports_evaluates_to_the_ledgers_indicators(
    tmp_path: Path, mosquitto: Broker
) -> None:
    """If the demo factory's 2025 from the offline generator is reported day by day, every
    report through the agent's outbox and publisher, a real Mosquitto and the bureau receiver,
    then all 365 are accepted with signed receipts, coverage is complete, and the annual
    evaluation's indicators equal (rel 1e-9) those computed at once from the ledger's base
    measures of the year and those of the agent's own `tieragent report --period 2025` over
    a store that `tieragent backfill` filled from the same history."""
    started = time.monotonic()
    history = tmp_path / "history"
    generate(history, date(YEAR, 1, 1), DAYS, seed=3, interval_s=SAMPLE_INTERVAL_S)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The agent-side year report runs in its own processes meanwhile.
        agent_side = pool.submit(agent_year_report, history, tmp_path / "agent")
        sim = load_period(history, date(YEAR, 1, 1), DAYS, interval_s=SAMPLE_INTERVAL_S)
        key = OKPKey.generate_key("Ed25519")
        bureau = start_bureau(tmp_path / "bureau.db", mosquitto.url, {FACTORY: key})
        settings = PublisherSettings(
            broker_url=mosquitto.url, factory_id=FACTORY, bureau_keys=(bureau.public,),
            keepalive_s=5, reconnect_min_s=0.1, reconnect_max_s=2.0, receipt_timeout_s=20.0,
            window=16,
        )
        outbox = Outbox(tmp_path / "outbox.db")
        # All days are built first: back-to-back commit_report calls hold the outbox's write
        # lock almost continuously, and a publisher's receipt update waiting on it gives up
        # after the 10 s busy timeout ("database is locked").
        for day in sim.all_days():
            commit_day(outbox, sim, key, day)
        built_s = time.monotonic() - started
        try:
            deliver(outbox, settings, 120.0)
        finally:
            bureau.receiver.stop()
            outbox.close()
        delivered_s = time.monotonic() - started
        from_year_report = agent_side.result(timeout=300)["indicators"]
        agent_s = time.monotonic() - started

    store = SqliteReportStore(tmp_path / "bureau.db")
    result, _, _ = evaluate_from_store(
        store, FACTORY, YEAR, PolicyFiles(POLICY, BENCHMARKS, DECLARATIONS),
        baseline_year=YEAR - 1,
    )
    assert len(store.reports(FACTORY)) == DAYS
    store.close()
    assert result.coverage["accepted"] == DAYS and result.coverage["ok"]
    assert result.chain["gaps"] == [] and result.chain["rejections"] == []
    annual = {k: v.to_json() for k, v in result.indicators.items()}

    params = Params(**report_params())
    from_ledger = {k: v.to_json() for k, v in compute(sim.base, sim.inventory, params).items()}
    assert set(from_ledger) == set(from_year_report) and set(from_ledger) <= set(annual)
    for name, reference in (("ledger", from_ledger), ("year report", from_year_report)):
        for key_id, (value, reason) in _values(reference).items():
            got_value, got_reason = annual[key_id]["value"], annual[key_id]["reason"]
            assert got_reason == reason, (name, key_id)
            assert _close(got_value, value), (name, key_id, got_value, value)

    # Straight from the ledger's hourly counts, without the time model in between.
    ledger = load_ledger(history)
    networked = {d.id for d in sim.factory.devices if d.networked}
    hourly = ledger.hourly[ledger.hourly["device_id"].isin(networked)]
    produced = float(hourly["good"].sum() + hourly["scrap"].sum())
    assert _close(annual["quality_ratio"]["value"], float(hourly["good"].sum()) / produced)
    assert _close(annual["energy_per_unit"]["value"], float(hourly["energy_kwh"].sum()) / produced)
    assert annual["efficiency_gain"]["reason"] == "no_baseline"
    conditions = {c.condition_id: c for c in result.evaluation.conditions}
    assert conditions["basic.oee_above_province_avg"].status in ("pass", "fail")
    print(f"year test: generated and built by {built_s:.1f} s, delivered by {delivered_s:.1f} s, "
          f"agent year report by {agent_s:.1f} s, total {time.monotonic() - started:.1f} s")
