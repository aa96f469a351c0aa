"""Coverage, gaps, rejections and the baseline in the annual evaluation (Jan-Feb 2025)."""

from __future__ import annotations

import dataclasses
import math
from datetime import date
from pathlib import Path

import pytest
from annual_scenario import REJECTED_DAY, UNDELIVERED, Scenario
from simdata import BENCHMARKS, DECLARATIONS, FACTORY, POLICY, report_params

from bureau.annual import AnnualEvaluation
from bureau.evidence_export import evaluate_from_store
from bureau.html_report import render_html
from bureau.store import SqlReportStore
from indicators.baseline import improvement
from indicators.catalog import Params
from indicators.policy import PolicyFiles
from tests.support.postgres import copy_sqlite_bureau

FILES = PolicyFiles(POLICY, BENCHMARKS, DECLARATIONS)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def scenario(request: pytest.FixtureRequest, scenario: Scenario) -> Scenario:
    """The annual scenario's bureau as delivered (SQLite), then the same rows copied into
    PostgreSQL: the store-level evaluation must read the same year from both."""
    if request.param == "sqlite":
        return scenario
    url = request.getfixturevalue("postgres_server").create_database()
    assert isinstance(scenario.db, Path)
    copy_sqlite_bureau(scenario.db, url)
    return dataclasses.replace(scenario, db=url)


def _evaluate(scenario: Scenario, through: date) -> AnnualEvaluation:
    store = SqlReportStore(scenario.db)
    try:
        return evaluate_from_store(store, FACTORY, 2025, FILES, baseline_year=2024,
                                   through=through)[0]
    finally:
        store.close()


def test_missing_rejected_and_chain_gap_days_are_counted_per_month(scenario: Scenario) -> None:
    """If a day was withheld, one rejected and one never delivered, then each month's figures
    say so: missing, rejected and pending-link days, and the chain shows the seq gaps."""
    result = _evaluate(scenario, date(2025, 2, 28))
    january, february = result.coverage["months"]
    assert (january["accepted"], january["missing"], january["rejected"],
            january["pending_link"]) == (30, 1, 0, 0)
    assert (february["accepted"], february["missing"], february["rejected"],
            february["pending_link"]) == (24, 1, 1, 2)
    assert result.coverage["missing_days"] == ["2025-01-10", UNDELIVERED.isoformat()]
    assert result.coverage["rejected_days"] == [REJECTED_DAY.isoformat()]
    assert result.coverage["pending_link_days"] == ["2025-02-04", "2025-02-11"]
    rejection = result.chain["rejections"][0]
    assert (rejection["period_key"], rejection["reason"]) == (REJECTED_DAY.isoformat(),
                                                              "indicators")
    assert [g["next_seq"] - g["after_seq"] for g in result.chain["gaps"]] == [2, 2]
    counted = [r for r in result.chain["reports"] if r["counted"]]
    assert len(counted) == 54 and all(r["state"] == "accepted" for r in counted)


def test_a_month_below_the_bound_makes_measured_conditions_insufficient(
    scenario: Scenario,
) -> None:
    """If February has 24/28 accepted days (below 90 %) though the period has 54/59 (above),
    then no measured condition passes or fails: each is insufficient_data with its measured
    value still shown, and declared conditions are untouched. Through January alone (30/31)
    the same conditions are evaluated normally."""
    january = _evaluate(scenario, date(2025, 1, 31))
    both = _evaluate(scenario, date(2025, 2, 28))
    assert january.coverage["ok"] and january.coverage["months_below_bound"] == []
    assert both.coverage["share"] >= 0.9 and both.coverage["months_below_bound"] == ["2025-02"]
    before = {c.condition_id: c for c in january.evaluation.conditions}
    passed = [c for c in before.values() if c.source != "declared" and c.status == "pass"]
    assert passed, "some measured condition should pass with full coverage"
    for condition in both.evaluation.conditions:
        if condition.source == "declared":
            assert condition.status == before[condition.condition_id].status
        elif before[condition.condition_id].status in ("pass", "fail"):
            assert condition.status == "insufficient_data"
            assert condition.reason == "coverage_below_bound"
            assert condition.measured is not None
    assert all(c.status != "pass" for c in both.evaluation.gaps)
    assert both.evaluation.tier_reached is None


def test_improvement_is_measured_against_the_baseline_year(scenario: Scenario) -> None:
    """If the factory reported ten days of 2024, then the improvement indicators compare the
    period's summed base measures with those of the baseline year's accepted reports."""
    result = _evaluate(scenario, date(2025, 1, 31))
    assert result.baseline == {"year": 2024, "days": 10, "used": True}
    sim = scenario.sim
    counted = sim.base[sim.base["hour_start"] < sim.day_rows(date(2025, 2, 1))["hour_start"].min()]
    counted = counted[~counted["hour_start"].isin(sim.day_rows(date(2025, 1, 10))["hour_start"])]
    expected = improvement(counted, scenario.baseline.base, Params(**report_params()))
    for key in ("efficiency_gain", "defect_rate_change", "energy_efficiency_gain"):
        got = result.indicators[key].value
        assert got is not None and math.isclose(got, expected[key].value or 0.0, rel_tol=1e-9)


def test_the_html_lists_gaps_rejections_and_coverage(scenario: Scenario) -> None:
    """If the evaluation has missing, rejected and pending-link days and a chain gap, then the
    HTML report names each of them and shows February below the bound."""
    html = render_html(_evaluate(scenario, date(2025, 2, 28)).to_json())
    assert '<dd id="missing-days">2025-01-10, 2025-02-10</dd>' in html
    assert '<dd id="rejected-days">2025-02-03</dd>' in html
    assert '<dd id="pending-link-days">2025-02-04, 2025-02-11</dd>' in html
    assert 'data-rejected="2025-02-03"' in html and "indicators" in html
    assert 'data-chain-gap="' in html and '<dd id="months-below">2025-02</dd>' in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<svg" in html
