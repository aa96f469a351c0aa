"""Indicators of INDICATORS.md §2–3 computed from summed base measures and the device inventory.

Every indicator is a ratio of sums (never a mean of ratios), so splitting a period or a device set
and summing the base measures gives the same value. Undefined values are `None` with a reason,
never a division error or a fake 0 or 1. Inventory-based rates count device-days over the local
days present in `base`. Pure: no I/O, no clock, inputs are never mutated.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from indicators.columns import COUNT_COLUMNS, KEY_COLUMNS, MEASURE_COLUMNS

DEFINITION = "iso22400-2:2014+a1:2017"
AUTOMATED_KINDS = frozenset({"cnc", "robot", "plc_automated", "dcs"})

# Reasons a value is undefined.
NO_PLANNED_TIME = "no_planned_time"
NO_PRODUCTION = "no_production"
NO_FAILURES = "no_failures"
NO_INVENTORY = "no_inventory"
INSUFFICIENT_DATA = "insufficient_data"
NO_BASELINE = "no_baseline"
COUNT_MISMATCH = "count_mismatch"
NO_IDEAL_CYCLE_TIME = "no_ideal_cycle_time"


@dataclass(frozen=True)
class Params:
    """Bounds the indicators depend on (policy values; the policy file may override them)."""

    realtime_bound_s: float = 5.0  # informative here: the store applies it when counting on-time
    networked_completeness: float = 0.95
    max_unknown_share: float = 0.05
    industry_type: str = "discrete"
    time_zone: str = "Asia/Shanghai"
    count_tolerance: float = 0.0  # |GQ + SQ + RQ - PQ| / PQ allowed before count_mismatch
    min_auto_share: float = 0.01  # auto APT / APT for a device-day to count as run in auto mode
    performance_flag_above: float = 1.05
    industry_code: str = ""  # GB/T 4754, picks the benchmark row
    province: str = ""


@dataclass(frozen=True)
class IndicatorValue:
    """One indicator: `value` is None exactly when `reason` says why.

    `measured` carries the computed number when the value is withheld as insufficient_data, so
    the report can show it beside the reason.
    """

    id: str
    value: float | None
    reason: str | None
    inputs: dict[str, float]
    unit: str
    flags: tuple[str, ...] = ()
    measured: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "value": _finite(self.value),
            "reason": self.reason,
            "inputs": {k: _finite(v) for k, v in sorted(self.inputs.items())},
            "unit": self.unit,
            "flags": list(self.flags),
            "measured": _finite(self.measured),
        }


@dataclass(frozen=True)
class IndicatorInfo:
    unit: str
    label_zh: str
    label_en: str
    time_based: bool = False  # withheld as insufficient_data when the unknown share is too high
    higher_is_better: bool = True


INDICATORS: dict[str, IndicatorInfo] = {
    "availability": IndicatorInfo("ratio", "时间开动率", "Availability (APT/PBT)", True),
    "availability_known": IndicatorInfo(
        "ratio", "时间开动率（已知时间）", "Availability over known time", True
    ),
    "unknown_share": IndicatorInfo("ratio", "无数据时间占比", "Unknown-time share", False, False),
    "performance": IndicatorInfo("ratio", "性能开动率", "Performance (effectiveness)"),
    "quality_ratio": IndicatorInfo("ratio", "合格品率", "Quality ratio"),
    "oee": IndicatorInfo("ratio", "设备综合效率", "OEE", True),
    "technical_efficiency": IndicatorInfo("ratio", "技术效率", "Technical efficiency", True),
    "setup_rate": IndicatorInfo("ratio", "换型时间比", "Setup rate", True, False),
    "utilisation": IndicatorInfo("ratio", "利用效率", "Utilisation efficiency (APT/AUBT)", True),
    "mtbf": IndicatorInfo("s", "平均故障间隔时间", "MTBF", True),
    "mttr": IndicatorInfo("s", "平均修复时间", "MTTR", True, False),
    "defect_rate": IndicatorInfo("ratio", "不良品率", "Defect (scrap) rate", False, False),
    "first_pass_yield": IndicatorInfo("ratio", "一次合格率", "First pass yield (proxy)"),
    "throughput": IndicatorInfo("units_per_h", "产出率", "Good units per planned hour", True),
    "energy_per_unit": IndicatorInfo(
        "kwh_per_unit", "单位产品能耗", "Energy per unit", False, False
    ),
    "energy_per_good_unit": IndicatorInfo(
        "kwh_per_unit", "单位合格品能耗", "Energy per good unit", False, False
    ),
    "digitization_rate": IndicatorInfo("ratio", "生产设备数字化率", "Digitization rate"),
    "networking_rate": IndicatorInfo("ratio", "生产设备联网率", "Networking rate"),
    "networking_rate_digital": IndicatorInfo(
        "ratio", "数字化生产设备联网率", "Networking rate of digital devices"
    ),
    "key_process_cnc_rate": IndicatorInfo("ratio", "关键工序数控化率", "Key-process CNC rate"),
    "key_process_cnc_rate_device": IndicatorInfo(
        "ratio", "关键工序数控化率（按设备）", "Key-process CNC rate, device-based"
    ),
    "key_process_cnc_rate_process": IndicatorInfo(
        "ratio", "关键工序数控化率（按工序）", "Key-process CNC rate, process-based"
    ),
    "key_process_cnc_rate_measured": IndicatorInfo(
        "ratio", "关键工序数控化率（实测）", "Key-process CNC rate, measured use"
    ),
    "key_process_auto_share": IndicatorInfo(
        "ratio", "关键工序自动运行率", "Auto-mode share of key-process running time"
    ),
    "data_collection_rate": IndicatorInfo("ratio", "数据自动采集率", "Data collection rate"),
    "realtime_rate": IndicatorInfo("ratio", "数据采集实时率", "Real-time rate"),
    "data_quality_rate": IndicatorInfo("ratio", "数据质量合格率", "Data quality rate"),
    "efficiency_gain": IndicatorInfo("ratio", "生产效率提升", "Production efficiency gain"),
    "defect_rate_change": IndicatorInfo(
        "ratio", "不良品率变化", "Defect rate change", False, False
    ),
    "energy_per_unit_change": IndicatorInfo(
        "ratio", "单位产品能耗变化", "Energy per unit change", False, False
    ),
    "energy_efficiency_gain": IndicatorInfo("ratio", "能源利用率提升", "Energy efficiency gain"),
}

BASELINE_INDICATORS: tuple[str, ...] = (
    "efficiency_gain",
    "defect_rate_change",
    "energy_per_unit_change",
    "energy_efficiency_gain",
)


def sum_measures(base: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sum every base-measure column over groups `by` (sorted by `by`); additive by contract."""
    missing = [c for c in (*by, *MEASURE_COLUMNS) if c not in base.columns]
    if missing:
        raise ValueError(f"base: missing column(s) {', '.join(missing)}")
    ordered, _, _ = _sorted(base)
    summed = ordered.groupby(by, sort=True, observed=True)[list(MEASURE_COLUMNS)].sum()
    for name in COUNT_COLUMNS:
        summed[name] = summed[name].astype(np.int64)
    return summed.reset_index()


def compute(
    base: pd.DataFrame, inventory: pd.DataFrame, params: Params = Params()
) -> dict[str, IndicatorValue]:
    """All indicators over the rows given (the caller filters a line or the key processes).

    `base` rows may be hourly or daily sums; per-device-day figures group rows by the local day
    (params.time_zone) of `hour_start`. Baseline comparisons are in `improvement`.
    """
    # Daily rows carry every sum the indicators need and make the rest cheap on large inputs.
    base = daily_measures(base, params.time_zone)
    totals = _totals(base)
    values: dict[str, IndicatorValue] = {}
    for item in _efficiency(totals, params):
        values[item.id] = item
    for item in _inventory_rates(base, inventory, params):
        values[item.id] = item
    for item in _data_rates(totals):
        values[item.id] = item
    return {key: values[key] for key in INDICATORS if key in values}


def improvement(
    base: pd.DataFrame, baseline_base: pd.DataFrame | None, params: Params = Params()
) -> dict[str, IndicatorValue]:
    """Change against a baseline period: efficiency_gain = (GQ/PBT)/(GQ/PBT)_b − 1,
    defect_rate_change = DR/DR_b − 1, energy_per_unit_change = EPU/EPU_b − 1 and
    energy_efficiency_gain = EPU_b/EPU − 1 ("+10 % energy efficiency" is EPU × 1/1.1)."""
    now = _totals(daily_measures(base, params.time_zone))
    then = (
        None if baseline_base is None else _totals(daily_measures(baseline_base, params.time_zone))
    )
    pairs = {
        "efficiency_gain": (_gq_per_pbt, False),
        "defect_rate_change": (_defect_rate, False),
        "energy_per_unit_change": (_energy_per_unit, False),
        "energy_efficiency_gain": (_energy_per_unit, True),
    }
    result: dict[str, IndicatorValue] = {}
    for key, (metric, inverted) in pairs.items():
        current = metric(now)
        previous = metric(then) if then is not None else None
        inputs = {
            name: number
            for name, number in (("period", current), ("baseline", previous))
            if number is not None
        }
        if current is None:
            result[key] = _undefined(key, INSUFFICIENT_DATA, inputs)
        elif previous is None or previous == 0.0:
            result[key] = _undefined(key, NO_BASELINE, inputs)
        elif inverted:
            if current == 0.0:
                result[key] = _undefined(key, INSUFFICIENT_DATA, inputs)
            else:
                result[key] = _value(key, previous / current - 1.0, inputs)
        else:
            result[key] = _value(key, current / previous - 1.0, inputs)
    return result


# --- totals -------------------------------------------------------------------------------------


def _check_base(base: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in (*KEY_COLUMNS, *MEASURE_COLUMNS) if c not in base.columns]
    if missing:
        raise ValueError(f"base: missing column(s) {', '.join(missing)}")
    return base


def _sorted(
    base: pd.DataFrame,
) -> tuple[pd.DataFrame, npt.NDArray[np.int32], npt.NDArray[np.object_]]:
    """`base` in (device_id, hour_start) order, with its rows' device codes and the sorted ids,
    so float sums are the same bit for bit whatever order the rows arrived in. Already-sorted
    input (the store's and base_measures' order) is not copied."""
    codes, names = device_codes(base["device_id"])
    if len(base) < 2:
        return base, codes, names
    hour = base["hour_start"].to_numpy()
    in_order = (codes[1:] > codes[:-1]) | ((codes[1:] == codes[:-1]) & (hour[1:] >= hour[:-1]))
    if bool(in_order.all()):
        return base, codes, names
    order = np.lexsort((hour, codes))
    return base.iloc[order], codes[order], names


def device_codes(
    device: pd.Series,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.object_]]:
    """Integer codes of device ids in sorted-id order, and the sorted ids (as str).

    Categorical columns (used for large frames) are coded without touching every row's string.
    """
    if isinstance(device.dtype, pd.CategoricalDtype):
        names = np.asarray(device.cat.categories.astype(str), dtype=object)
        order = np.argsort(names, kind="stable")
        rank = np.empty(len(order), dtype=np.int32)
        rank[order] = np.arange(len(order), dtype=np.int32)
        raw = device.cat.codes.to_numpy()
        if (raw < 0).any():
            raise ValueError("base.device_id: missing device id")
        return rank[raw], names[order]
    codes, uniques = pd.factorize(device.astype(str), sort=True)
    if (codes < 0).any():
        raise ValueError("base.device_id: missing device id")
    return codes.astype(np.int32), np.asarray(uniques, dtype=object)


def _totals(base: pd.DataFrame) -> dict[str, float]:
    totals: dict[str, float] = {}
    for name in MEASURE_COLUMNS:
        column = base[name].to_numpy()
        if name in COUNT_COLUMNS:
            totals[name] = float(column.sum(dtype=np.int64))
        else:
            totals[name] = float(column.sum(dtype=np.float64))
    totals["pbt_s"] = totals["pot_s"] - totals["pdt_s"]
    return totals


# --- efficiency (INDICATORS.md §2) ---------------------------------------------------------------


def _efficiency(t: Mapping[str, float], params: Params) -> list[IndicatorValue]:
    pbt, apt, asut, adet, unk = t["pbt_s"], t["apt_s"], t["asut_s"], t["adet_s"], t["unk_s"]
    produced, good, scrap, rework = t["produced"], t["good"], t["scrap"], t["rework"]
    unknown_share = unk / pbt if pbt > 0 else None
    time_withheld = unknown_share is not None and unknown_share > params.max_unknown_share
    # GQ counts reworked-then-good units too (INDICATORS.md FPY = (GQ - RQ) / PQ), so the
    # counters agree when GQ + SQ = PQ and RQ <= GQ.
    mismatch = produced > 0 and (
        abs(good + scrap - produced) > params.count_tolerance * produced or rework > good
    )
    out: list[IndicatorValue] = []

    def ratio(
        key: str,
        numerator: float,
        denominator: float,
        inputs: dict[str, float],
        reason_if_zero: str,
        *,
        quality: bool = False,
        flags: tuple[str, ...] = (),
    ) -> IndicatorValue:
        if denominator <= 0:
            return _undefined(key, reason_if_zero, inputs)
        value = numerator / denominator
        if quality and mismatch:
            return _undefined(key, COUNT_MISMATCH, inputs, measured=value)
        if INDICATORS[key].time_based and time_withheld:
            return _undefined(key, INSUFFICIENT_DATA, inputs, measured=value)
        return _value(key, value, inputs, flags)

    out.append(
        ratio("availability", apt, pbt, {"apt_s": apt, "pbt_s": pbt, "unk_s": unk}, NO_PLANNED_TIME)
    )
    out.append(
        ratio(
            "availability_known",
            apt,
            pbt - unk,
            {"apt_s": apt, "pbt_s": pbt, "unk_s": unk},
            NO_PLANNED_TIME if pbt <= 0 else INSUFFICIENT_DATA,
        )
    )
    out.append(ratio("unknown_share", unk, pbt, {"unk_s": unk, "pbt_s": pbt}, NO_PLANNED_TIME))
    performance = _performance(t, params)
    out.append(performance)
    quality = ratio(
        "quality_ratio",
        good,
        produced,
        {"good": good, "produced": produced, "scrap": scrap, "rework": rework},
        NO_PRODUCTION,
        quality=True,
    )
    out.append(quality)
    out.append(_oee(t, out[0], performance, quality, mismatch, time_withheld))
    out.append(
        ratio(
            "technical_efficiency",
            apt,
            apt + adet,
            {"apt_s": apt, "adet_s": adet},
            NO_PLANNED_TIME,
        )
    )
    out.append(ratio("setup_rate", asut, apt + asut, {"asut_s": asut, "apt_s": apt}, NO_PRODUCTION))
    out.append(
        ratio(
            "utilisation",
            apt,
            apt + asut + adet,
            {"apt_s": apt, "asut_s": asut, "adet_s": adet},
            NO_PLANNED_TIME,
        )
    )
    failures, stops = t["failures"], t["unplanned_stops"]
    out.append(
        ratio(
            "mtbf",
            apt + asut,
            failures,
            {"apt_s": apt, "asut_s": asut, "failures": failures},
            NO_FAILURES,
        )
    )
    out.append(ratio("mttr", adet, stops, {"adet_s": adet, "unplanned_stops": stops}, NO_FAILURES))
    quantity_inputs = {"scrap": scrap, "produced": produced, "good": good, "rework": rework}
    out.append(ratio("defect_rate", scrap, produced, quantity_inputs, NO_PRODUCTION, quality=True))
    out.append(
        ratio(
            "first_pass_yield",
            good - rework,
            produced,
            quantity_inputs,
            NO_PRODUCTION,
            quality=True,
            flags=("proxy_without_serialisation",),
        )
    )
    out.append(
        ratio("throughput", good, pbt / 3600.0, {"good": good, "pbt_s": pbt}, NO_PLANNED_TIME)
    )
    energy = t["energy_kwh"]
    for key, units, name in (
        ("energy_per_unit", produced, "produced"),
        ("energy_per_good_unit", good, "good"),
    ):
        inputs = {"energy_kwh": energy, name: units}
        if units > 0 and energy <= 0:
            # Production without a single kWh means no meter, not free production.
            out.append(_undefined(key, INSUFFICIENT_DATA, inputs, flags=("no_energy_data",)))
        else:
            out.append(ratio(key, energy, units, inputs, NO_PRODUCTION))
    return out


def _performance(t: Mapping[str, float], params: Params) -> IndicatorValue:
    ideal, apt, produced = t["ideal_time_s"], t["apt_s"], t["produced"]
    inputs = {"ideal_time_s": ideal, "apt_s": apt, "produced": produced}
    if apt <= 0:
        return _undefined("performance", NO_PRODUCTION, inputs)
    if produced > 0 and ideal <= 0:
        return _undefined("performance", NO_IDEAL_CYCLE_TIME, inputs)
    value = ideal / apt
    # ISO 22400-2 allows > 1; it points at a wrong ideal cycle time, so flag it, never cap it.
    flags = ("above_one",) if value > params.performance_flag_above else ()
    if value > 1.0 and not flags:
        flags = ("above_one_within_tolerance",)
    return _value("performance", value, inputs, flags)


def _oee(
    t: Mapping[str, float],
    availability: IndicatorValue,
    performance: IndicatorValue,
    quality: IndicatorValue,
    mismatch: bool,
    time_withheld: bool,
) -> IndicatorValue:
    inputs = {
        "apt_s": t["apt_s"],
        "pbt_s": t["pbt_s"],
        "unk_s": t["unk_s"],
        "ideal_time_s": t["ideal_time_s"],
        "produced": t["produced"],
        "good": t["good"],
    }
    factors = (availability, performance, quality)
    numbers = [f.value if f.value is not None else f.measured for f in factors]
    for factor, number in zip(factors, numbers, strict=True):
        if number is None:
            return _undefined("oee", factor.reason or INSUFFICIENT_DATA, inputs)
    a, p, q = (float(n) for n in numbers if n is not None)
    value = a * p * q
    if mismatch:
        return _undefined("oee", COUNT_MISMATCH, inputs, measured=value)
    if time_withheld:
        return _undefined("oee", INSUFFICIENT_DATA, inputs, measured=value)
    return _value("oee", value, inputs, performance.flags)


# --- inventory rates (INDICATORS.md §3) ----------------------------------------------------------


def _inventory_rates(
    base: pd.DataFrame, inventory: pd.DataFrame, params: Params
) -> list[IndicatorValue]:
    ids = (
        "digitization_rate",
        "networking_rate",
        "networking_rate_digital",
        "key_process_cnc_rate",
        "key_process_cnc_rate_device",
        "key_process_cnc_rate_process",
        "key_process_cnc_rate_measured",
        "key_process_auto_share",
    )
    inv = _inventory(inventory)
    if inv.empty:
        return [_undefined(key, NO_INVENTORY, {}) for key in ids]
    days = _device_days(base, list(inv["device_id"]), params)
    n_days = float(days.n_days)
    digital = inv["digital"].to_numpy(bool)
    key = inv["key_process"].to_numpy(bool)
    automated = inv["kind"].isin(list(AUTOMATED_KINDS)).to_numpy(bool)
    networked = days.networked  # device-days per inventory device
    auto_days = days.auto_networked
    out: list[IndicatorValue] = []

    def rate(name: str, numerator: float, denominator: float, **extra: float) -> IndicatorValue:
        inputs = {"numerator_device_days": numerator, "denominator_device_days": denominator}
        inputs.update(extra)
        inputs["days"] = n_days
        if n_days == 0:
            return _undefined(name, INSUFFICIENT_DATA, inputs)
        if denominator <= 0:
            return _undefined(name, NO_INVENTORY, inputs)
        return _value(name, numerator / denominator, inputs)

    devices = float(len(inv))
    out.append(rate("digitization_rate", float(digital.sum()) * n_days, devices * n_days))
    out.append(rate("networking_rate", float(networked.sum()), devices * n_days))
    out.append(
        rate(
            "networking_rate_digital",
            float(networked[digital].sum()),
            float(digital.sum()) * n_days,
        )
    )
    by_device = rate(
        "key_process_cnc_rate_device",
        float((key & automated).sum()) * n_days,
        float(key.sum()) * n_days,
    )
    steps = inv.loc[key, ["process_step"]].assign(automated=automated[key])
    served = steps.groupby("process_step", sort=True)["automated"].any()
    by_process = rate(
        "key_process_cnc_rate_process",
        float(served.sum()) * n_days,
        float(len(served)) * n_days,
        key_processes=float(len(served)),
    )
    headline = by_process if params.industry_type == "process" else by_device
    out.append(
        IndicatorValue(
            "key_process_cnc_rate",
            headline.value,
            headline.reason,
            dict(headline.inputs),
            headline.unit,
            (f"basis_{'process' if params.industry_type == 'process' else 'device'}",),
        )
    )
    out.append(by_device)
    out.append(by_process)
    out.append(
        rate(
            "key_process_cnc_rate_measured",
            float(auto_days[key & automated].sum()),
            float(key.sum()) * n_days,
        )
    )
    key_ids = set(inv.loc[key, "device_id"])
    if not key_ids:
        out.append(_undefined("key_process_auto_share", NO_INVENTORY, {}))
    else:
        rows = base["device_id"].isin(list(key_ids)).to_numpy()
        auto_apt = float(base["auto_apt_s"].to_numpy()[rows].sum(dtype=np.float64))
        apt = float(base["apt_s"].to_numpy()[rows].sum(dtype=np.float64))
        inputs = {"auto_apt_s": auto_apt, "apt_s": apt}
        if apt <= 0:
            out.append(_undefined("key_process_auto_share", NO_PRODUCTION, inputs))
        else:
            out.append(_value("key_process_auto_share", auto_apt / apt, inputs))
    return out


def _inventory(inventory: pd.DataFrame) -> pd.DataFrame:
    needed = ("device_id", "process_step", "key_process", "kind", "digital")
    missing = [c for c in needed if c not in inventory.columns]
    if missing and not inventory.empty:
        raise ValueError(f"inventory: missing column(s) {', '.join(missing)}")
    if inventory.empty:
        return pd.DataFrame({c: [] for c in needed})
    inv = inventory.loc[:, list(needed)].copy()
    inv["device_id"] = inv["device_id"].astype(str)
    inv["key_process"] = inv["key_process"].fillna(False).astype(bool)
    inv["digital"] = inv["digital"].fillna(False).astype(bool)
    inv["kind"] = inv["kind"].astype(str)
    inv["process_step"] = inv["process_step"].astype(str)
    return inv.drop_duplicates("device_id").sort_values("device_id", ignore_index=True)


@dataclass(frozen=True)
class _DeviceDays:
    n_days: int
    networked: npt.NDArray[np.int64]  # per inventory device: networked device-days
    auto_networked: npt.NDArray[np.int64]  # networked and run in auto mode


def local_day(hour_start: npt.NDArray[np.int64], time_zone: str) -> npt.NDArray[np.int64]:
    """Local calendar day (days since 1970-01-01 in `time_zone`) of each UTC hour start."""
    days, index = local_day_index(hour_start, time_zone)
    return days[index]


def local_day_index(
    hour_start: npt.NDArray[np.int64], time_zone: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    """The sorted distinct local days of `hour_start` and each row's index into them.

    Converts each distinct hour once through a dense table, so a year of rows costs one pass
    and no sort.
    """
    if len(hour_start) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
    hours = hour_start // 3600
    low, high = int(hours.min()), int(hours.max())
    if high - low > 4 * len(hours) + 1_000_000:
        span = np.unique(hours)
        slot = np.searchsorted(span, hours)
    else:
        span = np.arange(low, high + 1, dtype=np.int64)
        hours -= low
        slot = hours
    stamps = pd.to_datetime(span * 3600, unit="s", utc=True).tz_convert(time_zone)
    local = stamps.tz_localize(None).normalize()
    span_days = local.to_numpy().astype("datetime64[D]").astype(np.int64)
    days, span_index = np.unique(span_days, return_inverse=True)
    return days.astype(np.int64), span_index.astype(np.int32)[slot]


def _device_days(base: pd.DataFrame, device_ids: list[str], params: Params) -> _DeviceDays:
    if base.empty:
        zeros = np.zeros(len(device_ids), dtype=np.int64)
        return _DeviceDays(0, zeros, zeros)
    day_values, day_index = local_day_index(base["hour_start"].to_numpy(np.int64), params.time_zone)
    n_days = len(day_values)
    codes, names = device_codes(base["device_id"])
    lookup = {d: i for i, d in enumerate(device_ids)}
    inventory_index = np.array([lookup.get(name, -1) for name in names], dtype=np.int64)
    per_row = inventory_index[codes]
    known = per_row >= 0
    dev = per_row[known]
    group = dev * n_days + day_index[known]
    size = len(device_ids) * n_days

    def per_day(column: str) -> npt.NDArray[np.float64]:
        values = base[column].to_numpy()[known].astype(np.float64)
        return np.bincount(group, weights=values, minlength=size).astype(np.float64)

    expected = per_day("samples_expected")
    received = per_day("samples_received")
    networked = (expected > 0) & (received >= params.networked_completeness * expected)
    apt = per_day("apt_s")
    auto_apt = per_day("auto_apt_s")
    auto = (auto_apt > 0) & (auto_apt >= params.min_auto_share * apt)
    shape = (len(device_ids), n_days)
    return _DeviceDays(
        n_days,
        networked.reshape(shape).sum(axis=1).astype(np.int64),
        (networked & auto).reshape(shape).sum(axis=1).astype(np.int64),
    )


# --- data collection (INDICATORS.md §3) ----------------------------------------------------------


def _data_rates(t: Mapping[str, float]) -> list[IndicatorValue]:
    expected, received = t["samples_expected"], t["samples_received"]
    on_time, with_ts, bad = t["samples_on_time"], t["samples_with_source_ts"], t["samples_bad"]
    out = []
    for key, numerator, denominator, inputs in (
        (
            "data_collection_rate",
            received,
            expected,
            {"samples_received": received, "samples_expected": expected},
        ),
        (
            "realtime_rate",
            on_time,
            with_ts,
            {"samples_on_time": on_time, "samples_with_source_ts": with_ts},
        ),
        (
            "data_quality_rate",
            received - bad,
            received,
            {"samples_received": received, "samples_bad": bad},
        ),
    ):
        if denominator <= 0:
            out.append(_undefined(key, INSUFFICIENT_DATA, inputs))
        else:
            out.append(_value(key, numerator / denominator, inputs))
    return out


# --- baseline metrics ----------------------------------------------------------------------------


def _gq_per_pbt(t: Mapping[str, float] | None) -> float | None:
    if t is None or t["pbt_s"] <= 0:
        return None
    return t["good"] / t["pbt_s"]


def _defect_rate(t: Mapping[str, float] | None) -> float | None:
    if t is None or t["produced"] <= 0:
        return None
    return t["scrap"] / t["produced"]


def _energy_per_unit(t: Mapping[str, float] | None) -> float | None:
    if t is None or t["produced"] <= 0 or t["energy_kwh"] <= 0:
        return None
    return t["energy_kwh"] / t["produced"]


# --- helpers -------------------------------------------------------------------------------------


def _value(
    key: str, value: float, inputs: dict[str, float], flags: Iterable[str] = ()
) -> IndicatorValue:
    return IndicatorValue(key, float(value), None, dict(inputs), INDICATORS[key].unit, tuple(flags))


def _undefined(
    key: str,
    reason: str,
    inputs: dict[str, float],
    *,
    measured: float | None = None,
    flags: Iterable[str] = (),
) -> IndicatorValue:
    return IndicatorValue(
        key, None, reason, dict(inputs), INDICATORS[key].unit, tuple(flags), measured
    )


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return value


def daily_measures(base: pd.DataFrame, time_zone: str) -> pd.DataFrame:
    """Sum hourly rows into one row per device and local day; `hour_start` becomes the UTC epoch
    of the local midnight. Additive, so `compute` gives the same indicators on either form.

    Rows are sorted by (device_id, hour_start) first, so each device-day is one contiguous run
    summed in row order: deterministic, and without a float64 copy of the input.
    """
    base, codes, names = _sorted(_check_base(base))
    if base.empty:
        return _empty_measures()
    days, day_index = local_day_index(base["hour_start"].to_numpy(np.int64), time_zone)
    new_group = (codes[1:] != codes[:-1]) | (day_index[1:] != day_index[:-1])
    starts = np.flatnonzero(np.concatenate(([True], new_group)))
    del new_group
    frame: dict[str, Any] = {
        "device_id": names[codes[starts]],
        "hour_start": _local_midnight_epoch(days, time_zone)[day_index[starts]],
    }
    for name in MEASURE_COLUMNS:
        column = base[name].to_numpy()
        total_dtype = np.int64 if name in COUNT_COLUMNS else np.float64
        frame[name] = np.add.reduceat(column, starts, dtype=total_dtype)
    return pd.DataFrame(frame)


def _empty_measures() -> pd.DataFrame:
    frame: dict[str, pd.Series] = {
        "device_id": pd.Series([], dtype=object),
        "hour_start": pd.Series([], dtype=np.int64),
    }
    for name in MEASURE_COLUMNS:
        dtype = np.int64 if name in COUNT_COLUMNS else np.float64
        frame[name] = pd.Series([], dtype=dtype)
    return pd.DataFrame(frame)


def _local_midnight_epoch(days: npt.NDArray[np.int64], time_zone: str) -> npt.NDArray[np.int64]:
    midnight = pd.to_datetime(days, unit="D").tz_localize(
        time_zone, ambiguous=False, nonexistent="shift_forward"
    )
    return np.asarray(
        midnight.tz_convert("UTC")
        .tz_localize(None)
        .to_numpy()
        .astype("datetime64[s]")
        .astype(np.int64)
    )
