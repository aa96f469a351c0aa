"""A whole simulated year through a real broker and the bureau receiver, evaluated annually."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from delivery_support import Broker, start_bureau
from joserfc.jwk import OKPKey
from simdata import (
    BENCHMARKS,
    DECLARATIONS,
    FACTORY,
    POLICY,
    commit_day,
    report_params,
    simulate,
    year_report,
)

from agent.outbox import ACKED, Outbox
from agent.publish import Publisher, PublisherSettings
from bureau.annual import EvaluationFiles
from bureau.evidence_export import evaluate_from_store
from bureau.store import SqliteReportStore
from indicators.kpi import Params, compute
from simulator.ledger import load_ledger

TOPIC = f"tieragent/v1/{FACTORY}/report"


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _values(indicators: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (v["value"], v["reason"]) for k, v in indicators.items()}


@pytest.mark.slow
def test_a_year_of_daily_reports_evaluates_to_the_ledgers_indicators(
    tmp_path: Path, mosquitto: Broker
) -> None:
    """If the demo factory's 2025 is reported day by day (January through Mosquitto and the
    agent's publisher, February to December straight into the receiver's own verification entry
    point `Receiver.handle`, because 365 MQTT round trips would cost the suite too much), then
    every report is accepted, coverage is complete, and the annual evaluation's indicators equal
    (rel 1e-9) those computed at once from the ledger's base measures of the year and those of
    the agent's own year report over the same base measures."""
    sim = simulate(tmp_path / "history", date(2025, 1, 1), 365, seed=3)
    key = OKPKey.generate_key("Ed25519")
    bureau = start_bureau(tmp_path / "bureau.db", mosquitto.url, {FACTORY: key})
    outbox = Outbox(tmp_path / "outbox.db")
    days = sim.all_days()
    january = [commit_day(outbox, sim, key, d) for d in days if d.month == 1]
    settings = PublisherSettings(
        broker_url=mosquitto.url, factory_id=FACTORY, bureau_keys=(bureau.public,),
        keepalive_s=5, reconnect_min_s=0.1, reconnect_max_s=2.0, receipt_timeout_s=10.0,
        window=16,
    )
    with Publisher(settings, outbox) as publisher:
        assert publisher.drain(60), "January was not delivered through MQTT within 60 s"
    assert all(outbox.get(i.report_id).state == ACKED for i in january)  # type: ignore[union-attr]
    for day in days[len(january):]:
        item = commit_day(outbox, sim, key, day)
        assert bureau.receiver.handle(TOPIC, item.jws.encode("ascii")) is not None
    bureau.receiver.stop()

    store = SqliteReportStore(tmp_path / "bureau.db")
    result, _, _ = evaluate_from_store(
        store, FACTORY, 2025, EvaluationFiles(POLICY, BENCHMARKS, DECLARATIONS),
        baseline_year=2024,
    )
    assert result.coverage["accepted"] == 365 and result.coverage["ok"]
    assert result.chain["gaps"] == [] and result.chain["rejections"] == []
    annual = {k: v.to_json() for k, v in result.indicators.items()}

    params = Params(**report_params())
    from_ledger = {k: v.to_json() for k, v in compute(sim.base, sim.inventory, params).items()}
    from_year_report = year_report(sim, key, 2025)["indicators"]
    assert set(from_ledger) == set(from_year_report) and set(from_ledger) <= set(annual)
    for name, reference in (("ledger", from_ledger), ("year report", from_year_report)):
        for key_id, (value, reason) in _values(reference).items():
            got_value, got_reason = annual[key_id]["value"], annual[key_id]["reason"]
            assert got_reason == reason, (name, key_id)
            assert _close(got_value, value), (name, key_id, got_value, value)

    # Straight from the ledger's hourly counts, without the time model in between.
    ledger = load_ledger(tmp_path / "history")
    networked = {d.id for d in sim.factory.devices if d.networked}
    hourly = ledger.hourly[ledger.hourly["device_id"].isin(networked)]
    produced = float(hourly["good"].sum() + hourly["scrap"].sum())
    assert _close(annual["quality_ratio"]["value"], float(hourly["good"].sum()) / produced)
    assert _close(annual["energy_per_unit"]["value"], float(hourly["energy_kwh"].sum()) / produced)
    assert annual["efficiency_gain"]["reason"] == "no_baseline"
    conditions = {c.condition_id: c for c in result.evaluation.conditions}
    assert conditions["basic.oee_above_province_avg"].status in ("pass", "fail")
