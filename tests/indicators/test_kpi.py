"""Indicators from base measures: ratio of sums, additivity, undefined values with reasons."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indicators.baseline import improvement
from indicators.catalog import INDICATORS, IndicatorValue, Params
from indicators.columns import BASE_MEASURE_COLUMNS, COUNT_COLUMNS, MEASURE_COLUMNS
from indicators.kpi import compute
from indicators.measures import daily_measures, sum_measures

T0 = 1_767_196_800  # 2026-01-01 00:00 Asia/Shanghai
H = 3600

# Indicators that are not ratios in [0, 1].
UNBOUNDED = {
    "performance",  # may exceed 1 (flagged)
    "mtbf",
    "mttr",
    "throughput",
    "energy_per_unit",
    "energy_per_good_unit",
    "efficiency_gain",
    "defect_rate_change",
    "energy_per_unit_change",
    "energy_efficiency_gain",
}


def inventory(devices: list[str], **overrides: list[Any]) -> pd.DataFrame:
    n = len(devices)
    frame = pd.DataFrame(
        {
            "device_id": devices,
            "line": ["L1"] * n,
            "process_step": [f"step-{i}" for i in range(n)],
            "key_process": [True] * n,
            "kind": ["cnc"] * n,
            "digital": [True] * n,
            "connection": ["opcua"] * n,
        }
    )
    for column, values in overrides.items():
        frame[column] = values
    return frame


def base_row(device: str, hour_start: int, **values: float) -> dict[str, object]:
    record: dict[str, object] = {"device_id": device, "hour_start": hour_start}
    for name in MEASURE_COLUMNS:
        record[name] = 0 if name in COUNT_COLUMNS else 0.0
    record.update(values)
    return record


def frame(*rows: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(BASE_MEASURE_COLUMNS))


@st.composite
def base_frames(draw: st.DrawFn) -> pd.DataFrame:
    """Consistent hourly base measures for 1-4 devices over 1-60 hours."""
    devices = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, unique=True))
    hours = draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = len(devices) * hours
    split = rng.dirichlet(np.ones(6), n) * 3600.0
    split[rng.random(n) < 0.2] = 0.0  # some hours outside the measured period
    produced = rng.integers(0, 200, n)
    scrap = rng.binomial(produced, 0.05)
    rework = rng.binomial(produced - scrap, 0.02)
    expected = rng.integers(0, 400, n)
    received = rng.binomial(expected, rng.uniform(0.8, 1.0, n))
    with_ts = rng.binomial(received, 0.9)
    apt = split[:, 1]
    data = {
        "device_id": np.repeat(devices, hours),
        "hour_start": np.tile(T0 + H * np.arange(hours), len(devices)),
        "pdt_s": split[:, 0],
        "apt_s": apt,
        "asut_s": split[:, 2],
        "adet_s": split[:, 3],
        "adot_s": split[:, 4],
        "unk_s": split[:, 5] * 0.02,
        "auto_apt_s": apt * rng.uniform(0, 1, n),
        "ideal_time_s": produced * rng.uniform(5, 15, n),
        "produced": produced,
        "good": produced - scrap,
        "scrap": scrap,
        "rework": rework,
        "unplanned_stops": rng.integers(0, 3, n),
        "failures": rng.integers(0, 2, n),
        "samples_expected": expected,
        "samples_received": received,
        "samples_on_time": rng.binomial(with_ts, 0.97),
        "samples_with_source_ts": with_ts,
        "samples_bad": rng.binomial(received, 0.01),
        "energy_kwh": produced * rng.uniform(0.1, 0.5, n),
    }
    out = pd.DataFrame(data)
    out["pot_s"] = out[["pdt_s", "apt_s", "asut_s", "adet_s", "adot_s", "unk_s"]].sum(axis=1)
    out["failures"] = np.minimum(out["failures"], out["unplanned_stops"])
    return out[list(BASE_MEASURE_COLUMNS)]


def assert_same(left: dict[str, IndicatorValue], right: dict[str, IndicatorValue]) -> None:
    assert left.keys() == right.keys()
    for key in left:
        a, b = left[key], right[key]
        assert (a.reason, a.flags) == (b.reason, b.flags), key
        if a.value is None:
            assert b.value is None, key
        else:
            assert b.value is not None and math.isclose(a.value, b.value, rel_tol=1e-12), key


def sorted_rows(base: pd.DataFrame) -> pd.DataFrame:
    return base.sort_values(["device_id", "hour_start"], kind="mergesort", ignore_index=True)


@settings(max_examples=60, deadline=None)
@given(base_frames(), st.data())
def test_splitting_the_period_and_summing_gives_the_same_indicators(
    base: pd.DataFrame, data: st.DataObject
) -> None:
    """If the hours are cut in two, each part summed to daily rows and the sums added, then
    every indicator equals the one computed on the whole (ratio of sums)."""
    inv = inventory(sorted(base["device_id"].unique()))
    whole = compute(base, inv)
    cut = T0 + H * data.draw(st.integers(0, int((base["hour_start"].max() - T0) // H)))
    early, late = base[base["hour_start"] < cut], base[base["hour_start"] >= cut]
    parts = pd.concat(
        [daily_measures(early, "Asia/Shanghai"), daily_measures(late, "Asia/Shanghai")]
    )
    assert_same(whole, compute(parts, inv))
    summed = sum_measures(base, ["device_id"]).assign(hour_start=T0)
    merged = compute(summed, inv)
    for key, value in whole.items():
        if key.startswith(("networking", "key_process_cnc_rate_measured")):
            continue  # device-day rules need the days, which a period total no longer has
        assert_same({key: value}, {key: merged[key]})


@settings(max_examples=60, deadline=None)
@given(base_frames(), st.data())
def test_splitting_the_device_set_adds_inputs(base: pd.DataFrame, data: st.DataObject) -> None:
    """If the devices are cut into two sets, then each indicator's inputs add up and the
    whole value is the ratio of the summed inputs (never a mean of the two ratios)."""
    devices = sorted(base["device_id"].unique())
    chosen = data.draw(st.lists(st.sampled_from(devices), unique=True))
    rest = [d for d in devices if d not in chosen]
    whole = compute(base, inventory(devices))
    a = compute(base[base["device_id"].isin(chosen)], inventory(chosen))
    b = compute(base[base["device_id"].isin(rest)], inventory(rest))
    pairs = {
        "availability": ("apt_s", "pbt_s"),
        "quality_ratio": ("good", "produced"),
        "defect_rate": ("scrap", "produced"),
        "data_collection_rate": ("samples_received", "samples_expected"),
        "realtime_rate": ("samples_on_time", "samples_with_source_ts"),
        "mtbf": (None, "failures"),
    }
    for key, (top, bottom) in pairs.items():
        for name in filter(None, (top, bottom)):
            total = a[key].inputs.get(name, 0.0) + b[key].inputs.get(name, 0.0)
            assert math.isclose(whole[key].inputs[name], total, rel_tol=1e-12, abs_tol=1e-9)
        value = whole[key].value
        if top and value is not None:
            expected = whole[key].inputs[top] / whole[key].inputs[bottom]
            assert math.isclose(value, expected, rel_tol=1e-12)
    for key in ("networking_rate", "digitization_rate"):
        days = whole[key].inputs["days"]
        numerators = [
            part[key].inputs.get("numerator_device_days", 0.0)
            for part in (a, b)
            if part[key].inputs
        ]
        assert whole[key].inputs["numerator_device_days"] == sum(numerators)
        assert whole[key].inputs["denominator_device_days"] == len(devices) * days


@settings(max_examples=80, deadline=None)
@given(base_frames())
def test_ratios_stay_in_unit_interval_and_undefined_values_have_reasons(
    base: pd.DataFrame,
) -> None:
    values = compute(base, inventory(sorted(base["device_id"].unique())))
    assert set(values) == set(INDICATORS) - {
        "efficiency_gain",
        "defect_rate_change",
        "energy_per_unit_change",
        "energy_efficiency_gain",
    }
    for key, value in values.items():
        assert (value.value is None) == (value.reason is not None), key
        if value.value is not None:
            assert math.isfinite(value.value), key
            if key == "oee" and value.value > 1.0:
                # Only a performance above one (a wrong ideal cycle time) can do this.
                assert "above_one" in value.flags or "above_one_within_tolerance" in value.flags
            elif key not in UNBOUNDED:
                assert 0.0 <= value.value <= 1.0, (key, value.value)
    performance = values["performance"]
    if performance.value is not None and performance.value > 1.05:
        assert "above_one" in performance.flags
    json.dumps([v.to_json() for v in values.values()], allow_nan=False)


@settings(max_examples=15, deadline=None)
@given(base_frames())
def test_input_is_not_mutated_and_row_order_does_not_change_a_bit(base: pd.DataFrame) -> None:
    before = base.copy()
    inv = inventory(sorted(base["device_id"].unique()))
    first = compute(base, inv)
    pd.testing.assert_frame_equal(base, before)
    shuffled = compute(base.sample(frac=1.0, random_state=4), inv)
    assert first == shuffled  # dataclass equality: every float identical


def test_empty_base_gives_reasons_not_errors() -> None:
    values = compute(frame(), inventory([]))
    assert values["availability"].reason == "no_planned_time"
    assert values["quality_ratio"].reason == "no_production"
    assert values["mtbf"].reason == "no_failures"
    assert values["networking_rate"].reason == "no_inventory"
    assert values["data_collection_rate"].reason == "insufficient_data"
    assert all(v.value is None for v in values.values())


def test_a_worked_example() -> None:
    """Two devices, one hour each: every formula of docs/indicators.md §2 by hand."""
    base = frame(
        base_row(
            "a",
            T0,
            pot_s=3600.0,
            pdt_s=600.0,
            apt_s=2000.0,
            asut_s=300.0,
            adet_s=400.0,
            adot_s=300.0,
            auto_apt_s=1500.0,
            ideal_time_s=1800.0,
            produced=100,
            good=95,
            scrap=5,
            rework=3,
            unplanned_stops=2,
            failures=1,
            energy_kwh=20.0,
        ),
        base_row("b", T0, pot_s=3600.0, apt_s=3600.0, ideal_time_s=3000.0, produced=60, good=60),
    )
    v = compute(base, inventory(["a", "b"]))
    pbt = 3000.0 + 3600.0
    assert v["availability"].value == pytest.approx(5600.0 / pbt)
    assert v["performance"].value == pytest.approx(4800.0 / 5600.0)
    assert v["quality_ratio"].value == pytest.approx(155 / 160)
    assert v["oee"].value == pytest.approx((5600 / pbt) * (4800 / 5600) * (155 / 160))
    assert v["technical_efficiency"].value == pytest.approx(5600 / 6000)
    assert v["setup_rate"].value == pytest.approx(300 / 5900)
    assert v["utilisation"].value == pytest.approx(5600 / 6300)
    assert v["mtbf"].value == pytest.approx(5900.0)
    assert v["mttr"].value == pytest.approx(200.0)
    assert v["defect_rate"].value == pytest.approx(5 / 160)
    assert v["first_pass_yield"].value == pytest.approx(152 / 160)
    assert v["throughput"].value == pytest.approx(155 / (pbt / 3600))
    assert v["energy_per_unit"].value == pytest.approx(20 / 160)
    assert v["energy_per_good_unit"].value == pytest.approx(20 / 155)
    assert v["key_process_auto_share"].value == pytest.approx(1500 / 5600)
    assert v["availability"].inputs == {"apt_s": 5600.0, "pbt_s": pbt, "unk_s": 0.0}


def test_unknown_time_above_the_bound_withholds_time_indicators_but_shows_them() -> None:
    base = frame(base_row("a", T0, pot_s=3600.0, apt_s=3000.0, unk_s=600.0))
    v = compute(base, inventory(["a"]), Params(max_unknown_share=0.05))
    assert v["availability"].value is None and v["availability"].reason == "insufficient_data"
    assert v["availability"].measured == pytest.approx(3000 / 3600)
    assert v["unknown_share"].value == pytest.approx(600 / 3600)
    relaxed = compute(base, inventory(["a"]), Params(max_unknown_share=0.2))
    assert relaxed["availability"].value == pytest.approx(3000 / 3600)
    assert relaxed["availability_known"].value == pytest.approx(1.0)


def test_performance_above_one_is_kept_and_flagged() -> None:
    base = frame(
        base_row("a", T0, pot_s=3600.0, apt_s=1000.0, ideal_time_s=1200.0, produced=10, good=10)
    )
    v = compute(base, inventory(["a"]))
    assert v["performance"].value == pytest.approx(1.2)
    assert v["performance"].flags == ("above_one",)
    assert v["oee"].value == pytest.approx((1000 / 3600) * 1.2)


def test_counts_that_do_not_add_up_make_quality_undefined() -> None:
    base = frame(
        base_row(
            "a", T0, pot_s=3600.0, apt_s=3600.0, ideal_time_s=900.0, produced=100, good=90, scrap=5
        )
    )
    v = compute(base, inventory(["a"]))
    for key in ("quality_ratio", "defect_rate", "first_pass_yield", "oee"):
        assert v[key].value is None and v[key].reason == "count_mismatch", key
    assert v["quality_ratio"].measured == pytest.approx(0.9)
    tolerant = compute(base, inventory(["a"]), Params(count_tolerance=0.05))
    assert tolerant["quality_ratio"].value == pytest.approx(0.9)


def test_production_without_ideal_cycle_time_or_energy_is_not_a_fake_zero() -> None:
    base = frame(base_row("a", T0, pot_s=3600.0, apt_s=3600.0, produced=10, good=10))
    v = compute(base, inventory(["a"]))
    assert v["performance"].reason == "no_ideal_cycle_time"
    assert v["energy_per_unit"].reason == "insufficient_data"
    assert v["oee"].value is None


def test_networking_counts_device_days_in_the_local_time_zone() -> None:
    """If device a delivers 96 % of its samples on day 1 and 50 % on day 2 (Shanghai days),
    b delivers everything but is not digital and c sends nothing, then networking is
    3 of 6 device-days, and of digital devices 1 of 4 device-days (b is not digital)."""
    day2 = T0 + 86400
    rows = [
        # 16:00 UTC on the eve is 00:00 in Shanghai: this row is day 1.
        base_row("a", T0, samples_expected=100, samples_received=96),
        base_row("a", day2 - H, samples_expected=100, samples_received=100),  # day 1, 23:00
        base_row("a", day2, samples_expected=400, samples_received=200),  # day 2
        base_row("b", T0, samples_expected=10, samples_received=10),
        base_row("b", day2, samples_expected=10, samples_received=10),
    ]
    inv = inventory(["a", "b", "c"], digital=[True, False, True], kind=["cnc", "cnc", "manual"])
    v = compute(frame(*rows), inv)
    assert v["networking_rate"].value == pytest.approx(3 / 6)
    assert v["networking_rate"].inputs["days"] == 2
    assert v["networking_rate_digital"].value == pytest.approx(1 / 4)
    assert v["digitization_rate"].value == pytest.approx(2 / 3)
    assert v["key_process_cnc_rate"].value == pytest.approx(2 / 3)


def test_cnc_rate_by_device_and_by_process_and_industry_type() -> None:
    """Key processes p1 (cnc + manual) and p2 (manual): device-based 1/3, process-based 1/2;
    a process-industry factory reports the process-based value as the headline."""
    inv = inventory(
        ["m1", "m2", "m3", "m4"],
        process_step=["p1", "p1", "p2", "p3"],
        kind=["cnc", "manual", "manual", "robot"],
        key_process=[True, True, True, False],
    )
    base = frame(base_row("m1", T0, pot_s=3600.0, apt_s=3600.0, auto_apt_s=3600.0))
    discrete = compute(base, inv)
    assert discrete["key_process_cnc_rate_device"].value == pytest.approx(1 / 3)
    assert discrete["key_process_cnc_rate_process"].value == pytest.approx(1 / 2)
    assert discrete["key_process_cnc_rate"].value == pytest.approx(1 / 3)
    process = compute(base, inv, Params(industry_type="process"))
    assert process["key_process_cnc_rate"].value == pytest.approx(1 / 2)
    # m1 ran in auto mode but sent no samples, so it was not networked: measured rate 0.
    assert discrete["key_process_cnc_rate_measured"].value == 0.0


def test_improvement_against_a_baseline() -> None:
    """+10 % energy efficiency means energy per unit x 1/1.1, not -10 %."""
    then = frame(
        base_row(
            "a", T0, pot_s=3600.0, apt_s=3600.0, produced=100, good=90, scrap=10, energy_kwh=110.0
        )
    )
    now = frame(
        base_row(
            "a",
            T0 + 86400 * 365,
            pot_s=3600.0,
            apt_s=3600.0,
            produced=100,
            good=92,
            scrap=8,
            energy_kwh=100.0,
        )
    )
    v = improvement(now, then)
    assert v["energy_efficiency_gain"].value == pytest.approx(0.10)
    assert v["energy_per_unit_change"].value == pytest.approx(1 / 1.1 - 1)
    assert v["defect_rate_change"].value == pytest.approx(-0.2)
    assert v["efficiency_gain"].value == pytest.approx(92 / 90 - 1)
    missing = improvement(now, None)
    assert all(x.value is None and x.reason == "no_baseline" for x in missing.values())


@settings(max_examples=15, deadline=None)
@given(base_frames())
def test_daily_rows_give_the_same_indicators_as_hourly_rows(base: pd.DataFrame) -> None:
    inv = inventory(sorted(base["device_id"].unique()))
    daily = daily_measures(base, "Asia/Shanghai")
    assert (daily["hour_start"] % 86400 == 16 * 3600).all()  # local midnight in UTC
    assert_same(compute(base, inv), compute(daily, inv))


@settings(max_examples=15, deadline=None)
@given(base_frames())
def test_categorical_and_string_device_ids_agree(base: pd.DataFrame) -> None:
    base = sorted_rows(base)
    inv = inventory(sorted(base["device_id"].unique()))
    categorical = base.assign(
        device_id=pd.Categorical(base["device_id"], categories=["d", "c", "b", "a"])
    )
    assert compute(base, inv) == compute(categorical, inv)
