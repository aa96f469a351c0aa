"""Tier evaluation against the default policy, the example benchmarks and declarations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from indicators.catalog import Params
from indicators.columns import BASE_MEASURE_COLUMNS
from indicators.evaluate import (
    Declarations,
    Evaluation,
    Policy,
    PolicyFileError,
    evaluate,
    file_sha256,
    load_benchmarks,
    load_declarations,
    load_policy,
)
from tieragent.evaluation_view import evaluation_json, render_evaluation

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "config" / "policies" / "default-2026.yaml"
BENCHMARKS = ROOT / "config" / "benchmarks" / "example-2026.yaml"
DECLARATIONS = ROOT / "config" / "declarations.example.yaml"
T0 = 1_767_196_800  # 2026-01-01 00:00 Asia/Shanghai
PARAMS = Params(industry_code="C3484", province="tianjin")


def factory(
    devices: int = 6,
    days: int = 10,
    *,
    received_share: float = 0.99,
    scrap_share: float = 0.02,
    auto_share: float = 0.9,
    unknown_share: float = 0.0,
    silent_days: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hourly base measures and inventory of a small factory with chosen rates.

    Per hour: 3000 s running (auto_share of it in auto mode), 300 s setup, 300 s idle (part of
    it unknown), 100 items at 24 s ideal cycle time, 0.5 kWh per item. The first
    `silent_days` days have no data at all.
    """
    ids = [f"M{i:02d}" for i in range(devices)]
    hours = np.arange(silent_days * 24, days * 24)
    rows = []
    for device in ids:
        for hour in hours:
            scrap = round(100 * scrap_share)
            rows.append(
                {
                    "device_id": device,
                    "hour_start": T0 + 3600 * int(hour),
                    "pot_s": 3600.0,
                    "pdt_s": 0.0,
                    "apt_s": 3000.0,
                    "asut_s": 300.0,
                    "adet_s": 0.0,
                    "adot_s": 300.0 - 3600.0 * unknown_share,
                    "unk_s": 3600.0 * unknown_share,
                    "auto_apt_s": 3000.0 * auto_share,
                    "ideal_time_s": 2400.0,
                    "produced": 100,
                    "good": 100 - scrap,
                    "scrap": scrap,
                    "rework": 0,
                    "unplanned_stops": 0,
                    "failures": 0,
                    "samples_expected": 1000,
                    "samples_received": round(1000 * received_share),
                    "samples_on_time": round(1000 * received_share),
                    "samples_with_source_ts": round(1000 * received_share),
                    "samples_bad": 0,
                    "energy_kwh": 50.0,
                }
            )
    base = pd.DataFrame(rows, columns=list(BASE_MEASURE_COLUMNS))
    inventory = pd.DataFrame(
        {
            "device_id": ids,
            "line": ["L1" if i < devices // 2 else "L2" for i in range(devices)],
            "process_step": [f"step-{i % 3}" for i in range(devices)],
            "key_process": [i % 2 == 0 for i in range(devices)],
            "kind": ["cnc"] * devices,
            "digital": [True] * devices,
            "connection": ["opcua"] * devices,
        }
    )
    return base, inventory


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(POLICY)


@pytest.fixture(scope="module")
def declarations() -> Declarations:
    return load_declarations(DECLARATIONS)


def run(
    base: pd.DataFrame,
    inventory: pd.DataFrame,
    policy: Policy,
    declarations: Declarations | None,
    **kwargs: object,
) -> Evaluation:
    return evaluate(
        base,
        inventory,
        policy,
        benchmarks=load_benchmarks(BENCHMARKS),
        declarations=declarations,
        params=PARAMS,
        **kwargs,  # type: ignore[arg-type]
    )


def status(evaluation: Evaluation, condition_id: str) -> str:
    return next(c.status for c in evaluation.conditions if c.condition_id == condition_id)


def result(evaluation: Evaluation, condition_id: str):  # type: ignore[no-untyped-def]
    return next(c for c in evaluation.conditions if c.condition_id == condition_id)


def test_shipped_policy_files_load_and_cite_their_sources(policy: Policy) -> None:
    """Every condition has a citation; every measured numeric threshold is a policy default."""
    assert [t.id for t in policy.tiers] == ["basic", "advanced", "excellent", "leading"]
    assert policy.status == "policy_default"
    for tier in policy.tiers:
        for condition in tier.conditions:
            assert condition.citation.strip()
            if condition.indicator is not None:
                assert condition.policy_default, condition.id
    assert load_benchmarks(BENCHMARKS).example is True
    assert len(file_sha256(POLICY)) == 64


def test_factory_meeting_basic_but_not_advanced_gets_the_right_gaps(
    policy: Policy, declarations: Declarations
) -> None:
    """The example declarations lack MES-ERP integration and have 3 of 15 scenarios; the
    measured defect rate 2 % is above the province P75 (1.8 %): those three are the gaps."""
    base, inventory = factory()
    evaluation = run(base, inventory, policy, declarations)
    basic = [c for c in evaluation.conditions if c.tier == "basic"]
    assert all(c.status in ("pass", "declared_pass") for c in basic), [
        (c.condition_id, c.status, c.reason) for c in basic if c.status not in ("pass",)
    ]
    assert evaluation.tier_reached == "basic"
    assert evaluation.next_tier == "advanced"
    assert [g.condition_id for g in evaluation.gaps] == [
        "advanced.data_integration",
        "advanced.key_scenarios",
        "advanced.defect_rate_province_leading",
    ]
    oee = result(evaluation, "basic.oee_above_province_avg")
    assert oee.source == "benchmark" and oee.threshold == 0.50
    assert oee.threshold_ref == "benchmark:province.avg"
    assert oee.measured == pytest.approx((3000 / 3600) * (2400 / 3000) * 0.98)
    assert oee.evidence["indicator"] == "oee"
    assert oee.evidence["scopes"][0]["inputs"]["apt_s"] == 3000.0 * 6 * 240
    # Informative conditions without a baseline do not block the tier.
    assert status(evaluation, "advanced.efficiency_gain") == "insufficient_data"


def test_measured_condition_fails_below_threshold(
    policy: Policy, declarations: Declarations
) -> None:
    base, inventory = factory(received_share=0.9)
    evaluation = run(base, inventory, policy, declarations)
    collection = result(evaluation, "basic.core_data_collection")
    assert collection.status == "fail" and collection.measured == pytest.approx(0.9)
    assert status(evaluation, "basic.key_process_networking") == "fail"
    assert evaluation.tier_reached is None and evaluation.next_tier == "basic"
    assert "basic.core_data_collection" in [g.condition_id for g in evaluation.gaps]


def test_missing_days_make_measured_conditions_insufficient_but_show_the_value(
    policy: Policy, declarations: Declarations
) -> None:
    """If data covers 7 of 10 days and the policy needs 90 %, then passing measured conditions
    become insufficient_data; the value is still shown. Declared ones are unaffected."""
    base, inventory = factory(days=10, silent_days=3)
    evaluation = run(base, inventory, policy, declarations, coverage=0.7)
    auto = result(evaluation, "basic.key_process_automation")
    assert auto.status == "insufficient_data" and auto.reason == "coverage_below_bound"
    assert auto.measured == pytest.approx(1.0)
    assert status(evaluation, "basic.production_management_system") == "declared_pass"
    assert evaluation.tier_reached is None


def test_coverage_is_computed_from_the_data_when_not_given(
    policy: Policy, declarations: Declarations
) -> None:
    base, inventory = factory(days=10)
    gap = base[(base["hour_start"] < T0 + 3 * 86400) | (base["hour_start"] >= T0 + 6 * 86400)]
    evaluation = run(gap, inventory, policy, declarations)
    assert evaluation.coverage == pytest.approx(0.7)
    assert status(evaluation, "basic.key_process_automation") == "insufficient_data"


def test_unknown_time_above_bound_is_insufficient_data(
    policy: Policy, declarations: Declarations
) -> None:
    base, inventory = factory(unknown_share=0.08)
    evaluation = run(base, inventory, policy, declarations)
    oee = result(evaluation, "basic.oee_above_province_avg")
    assert oee.status == "insufficient_data" and oee.reason == "insufficient_data"
    assert oee.measured is not None


def test_declared_conditions(policy: Policy, declarations: Declarations) -> None:
    """Declared true passes, declared false fails, a number is compared, a list is counted,
    and a missing declaration fails with its reason."""
    base, inventory = factory()
    evaluation = run(base, inventory, policy, declarations)
    assert status(evaluation, "basic.production_management_system") == "declared_pass"
    assert status(evaluation, "advanced.data_integration") == "declared_fail"
    maturity = result(evaluation, "excellent.maturity_level")
    assert (maturity.status, maturity.measured, maturity.threshold) == ("declared_fail", 2, 3.0)
    scenarios = result(evaluation, "advanced.key_scenarios")
    assert (scenarios.status, scenarios.measured) == ("declared_fail", 3.0)
    twin = result(evaluation, "leading.digital_twin")
    assert (twin.status, twin.reason, twin.source) == (
        "not_declared", "missing_declaration", "declared"
    )
    mes = result(evaluation, "basic.production_management_system")
    assert mes.evidence["documents"][0]["reference"] == "IT-2023-014"
    nothing = run(base, inventory, policy, None)
    assert nothing.tier_reached is None
    assert status(nothing, "basic.production_management_system") == "not_declared"
    assert result(nothing, "basic.production_management_system").reason == "no_declarations_file"


def test_line_level_condition_needs_every_line(declarations: Declarations) -> None:
    """If one of two lines misses the threshold, then a line-level condition fails and shows
    the worst line's value, with every line in the evidence."""
    policy = Policy.model_validate(
        {
            "policy_id": "t",
            "version": "1",
            "status": "test",
            "tiers": [
                {
                    "id": "basic",
                    "name_zh": "基础级",
                    "citation": "test",
                    "conditions": [
                        {
                            "id": "basic.lines",
                            "label_zh": "数据采集率",
                            "label_en": "collection per line",
                            "indicator": "data_collection_rate",
                            "level": "line",
                            "comparator": ">=",
                            "threshold": 0.95,
                            "citation": "test",
                        }
                    ],
                }
            ],
        }
    )
    base, inventory = factory()
    low = base["device_id"].isin(["M03", "M04", "M05"])  # line L2
    base.loc[low, "samples_received"] = 900
    evaluation = run(base, inventory, policy, declarations)
    lines = result(evaluation, "basic.lines")
    assert lines.status == "fail" and lines.measured == pytest.approx(0.9)
    assert [s["scope"] for s in lines.evidence["scopes"]] == ["line:L1", "line:L2"]
    base.loc[low, "samples_received"] = 990
    assert status(run(base, inventory, policy, declarations), "basic.lines") == "pass"


def test_baseline_improvement_conditions(policy: Policy, declarations: Declarations) -> None:
    """Defect rate 4 % -> 2 % is -50 % (passes -20 %); energy per unit unchanged fails +10 %."""
    base, inventory = factory()
    baseline, _ = factory(scrap_share=0.04)
    evaluation = run(base, inventory, policy, declarations, baseline_base=baseline)
    assert status(evaluation, "advanced.defect_rate_reduction") == "pass"
    assert result(evaluation, "advanced.defect_rate_reduction").measured == pytest.approx(-0.5)
    assert status(evaluation, "advanced.energy_efficiency_gain") == "fail"


def test_benchmark_missing_for_the_industry_is_insufficient_data(
    policy: Policy, declarations: Declarations
) -> None:
    base, inventory = factory()
    evaluation = evaluate(
        base,
        inventory,
        policy,
        benchmarks=load_benchmarks(BENCHMARKS),
        declarations=declarations,
        params=Params(industry_code="C9999", province="tianjin"),
    )
    oee = result(evaluation, "basic.oee_above_province_avg")
    assert (oee.status, oee.reason) == ("insufficient_data", "no_benchmark")


def test_benchmark_direction_contradicting_the_comparator_is_refused(
    tmp_path: Path, declarations: Declarations
) -> None:
    text = POLICY.read_text(encoding="utf-8").replace(
        'indicator: defect_rate\n        level: factory\n        comparator: "<"',
        'indicator: defect_rate\n        level: factory\n        comparator: ">"',
        1,
    )
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    base, inventory = factory()
    with pytest.raises(PolicyFileError, match="contradicts the benchmark"):
        run(base, inventory, load_policy(path), declarations)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("policy_id: [unclosed", "not valid YAML"),
        ("- a list", "mapping at the top level"),
        (
            "policy_id: x\nversion: '1'\nstatus: s\ntiers:\n  - id: basic\n    name_zh: b\n"
            "    citation: c\n    conditions:\n      - {id: c1, label_zh: a, label_en: b,"
            " indicator: magic, comparator: '>=', threshold: 1, citation: c}\n",
            "tiers.0.conditions.0: Value error, unknown indicator 'magic'",
        ),
        (
            "policy_id: x\nversion: '1'\nstatus: s\ntiers:\n  - id: advanced\n    name_zh: b\n"
            "    citation: c\n    conditions: []\n  - id: basic\n    name_zh: b\n"
            "    citation: c\n    conditions: []\n",
            "in the order",
        ),
        ("policy_id: x\nversion: '1'\nstatus: s\nparams: {speed: 1}\ntiers: []\n", "speed"),
    ],
)
def test_bad_policy_files_give_keyed_messages(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyFileError) as error:
        load_policy(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="cannot read"):
        load_declarations(tmp_path / "nope.yaml")


def test_json_is_stable_and_has_no_nan(policy: Policy, declarations: Declarations) -> None:
    base, inventory = factory()
    first = run(base, inventory, policy, declarations)
    second = run(base.sample(frac=1.0, random_state=2), inventory, policy, declarations)
    text = json.dumps(first.to_json(), sort_keys=True, allow_nan=False)
    assert text == json.dumps(second.to_json(), sort_keys=True, allow_nan=False)
    data = json.loads(evaluation_json(first))
    assert data["tier_reached"] == "basic"
    assert data["gaps"] == [g.condition_id for g in first.gaps]
    row = data["conditions"][0]
    assert set(row) >= {"tier", "condition_id", "indicator", "level", "comparator", "threshold"}
    assert set(row) >= {"measured", "status", "source", "evidence"}


def test_rich_view_shows_labels_values_and_statuses(
    policy: Policy, declarations: Declarations
) -> None:
    base, inventory = factory()
    console = Console(record=True, width=200)
    render_evaluation(run(base, inventory, policy, declarations), console)
    text = console.export_text()
    for expected in (
        "核心数据实时采集",
        "Key production processes",
        "PASS",
        "FAIL (declared)",
        "NOT DECLARED (missing_declaration)",
        ">= 95.0%",
        "province.avg",
        "Gaps to 先进级 advanced",
        "EXAMPLE",
    ):
        assert expected in text, expected


def test_rich_view_at_80_columns_wraps_and_keeps_every_column(
    policy: Policy, declarations: Declarations
) -> None:
    """At 80 columns no column is dropped or cut: each table line ends with its border."""
    from rich.cells import cell_len

    base, inventory = factory()
    console = Console(record=True, width=80)
    render_evaluation(run(base, inventory, policy, declarations), console)
    lines = console.export_text().splitlines()
    assert max(cell_len(line) for line in lines) <= 80
    rows = [line for line in lines if line.startswith(("┃", "│", "┏", "┡", "└"))]
    assert rows and all(line.rstrip()[-1] in "┃│┓┩┘" for line in rows), rows[:3]
    header = "".join(line for line in lines if line.startswith("┃"))
    for word in ("Condition", "Level", "Measured", "Threshold", "Source", "Status"):
        assert word in header, word
