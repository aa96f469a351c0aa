"""The bureau's numpy recomputation of a daily report's indicators gives what the pandas
recomputation gives, value, reason, inputs and flags (issue 18 item 6), and the fast schema
check says valid exactly when the Python validator does."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

import pytest
from joserfc.jwk import OKPKey

from agent.protocol.period import Period
from agent.protocol.report import (
    _python_schema_errors,
    build_report,
    indicator_mismatches,
    recompute_indicators,
    schema_errors,
)
from bureau.indicator_check import day_sums, recompute_fast
from tests.support.reports import EVALUATION, TZ, inventory, meta, synthetic_base

KEY = OKPKey.generate_key("Ed25519")
PARAMS: dict[str, Any] = {
    "time_zone": TZ, "realtime_bound_s": 5.0, "networked_completeness": 0.95,
    "max_unknown_share": 0.05, "count_tolerance": 0.0, "min_auto_share": 0.01,
    "performance_flag_above": 1.05, "industry_code": "", "province": "",
}


def _report(n: int) -> dict[str, Any]:
    """Report variants: 1-4 devices, no production, no samples, no running time, a device
    of the inventory without rows, an inventory device without data, both CNC bases."""
    period = Period("day", (date(2024, 1, 1) + timedelta(days=n * 7)).isoformat(), TZ)
    devices = 1 + n % 4
    base = synthetic_base(period, devices, seed=n)
    if n % 5 == 1:
        base.loc[:, ["produced", "good", "scrap"]] = 0
    if n % 5 == 2:
        base.loc[:, "samples_received"] = 0
    if n % 5 == 3:
        base.loc[:, ["apt_s", "auto_apt_s"]] = 0.0
    if n % 7 == 5 and devices > 1:
        base = base[base.device_id != "m0"]
    params = {**PARAMS, "industry_type": "process" if n % 2 else "discrete"}
    report = build_report(
        meta(KEY, period), seq=1, prev_sha256="0" * 64, inventory=inventory(devices + n % 3),
        base=base, evaluation=EVALUATION, segment_digests=[], params=params,
    )
    return dict(json.loads(json.dumps(report)))  # as the bureau parses it


@pytest.mark.parametrize("n", range(40))
def test_the_fast_recomputation_equals_the_pandas_one(n: int) -> None:
    report = _report(n)
    sums = day_sums(report)
    assert sums is not None
    fast = recompute_fast(report, sums)
    assert fast == recompute_indicators(report)
    assert indicator_mismatches(report["indicators"], fast) == []


def test_a_changed_indicator_or_measure_is_a_mismatch() -> None:
    """If a signed indicator or a base measure is changed, then the fast recomputation
    disagrees with the signed indicators, as the pandas one does."""
    report = _report(0)
    report["indicators"]["oee"]["value"] = 0.99
    sums = day_sums(report)
    assert sums is not None
    assert indicator_mismatches(report["indicators"], recompute_fast(report, sums)) == ["oee"]
    report = _report(0)
    report["base_measures"]["rows"][3][12] -= 5  # good
    sums = day_sums(report)
    assert sums is not None
    assert "quality_ratio" in indicator_mismatches(report["indicators"],
                                                   recompute_fast(report, sums))


def test_rows_outside_one_local_day_or_out_of_order_take_the_pandas_path() -> None:
    report = _report(0)
    rows = report["base_measures"]["rows"]
    assert day_sums({**report, "base_measures": {**report["base_measures"],
                                                 "rows": rows[::-1]}}) is None
    shifted = [list(rows[0]), *rows[1:]]
    shifted[-1] = [*rows[-1][:1], rows[-1][1] + 3600, *rows[-1][2:]]  # into the next day
    assert day_sums({**report, "base_measures": {**report["base_measures"],
                                                 "rows": shifted}}) is None
    assert day_sums({**report, "period": {**report["period"], "kind": "month"}}) is None


def test_the_fast_schema_check_and_jsonschema_agree() -> None:
    """If a report is altered in any of many ways, then the Rust validator's verdict is the
    Python validator's (which names the problems)."""
    report = _report(1)
    variants: list[Any] = [report, {}, [], {**report, "seq": "1"}, {**report, "seq": 0},
                           {**report, "extra": 1}, {**report, "kid": "short"},
                           {**report, "period": {**report["period"], "kind": "week"}},
                           {**report, "inventory": [{"device_id": "m0"}]},
                           {**report, "indicators": {"oee": {"value": "x"}}}]
    for drop in report:
        variants.append({k: v for k, v in report.items() if k != drop})
    for column in range(23):
        rows = [list(r) for r in report["base_measures"]["rows"]]
        for bad in (-1, "x", None, 1.5, True):
            rows[0][column] = bad
            variants.append({**report, "base_measures": {**report["base_measures"],
                                                          "rows": [list(r) for r in rows]}})
    for variant in variants:
        assert (schema_errors(variant) == []) == (_python_schema_errors(variant) == []), variant
