"""Tier evaluation: every policy condition against measured indicators, benchmarks and declarations.

Tiers are cumulative (advanced requires basic, ...): the tier reached is the highest one whose
required conditions all pass, and the gap list names what the next tier still lacks. Pure apart
from the file loaders re-exported from `indicators.policy`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from indicators.baseline import improvement
from indicators.catalog import BASELINE_INDICATORS, INDICATORS, IndicatorValue, Params
from indicators.kpi import compute
from indicators.local_days import local_day
from indicators.measures import daily_measures
from indicators.policy import (
    BenchmarkRef,
    Benchmarks,
    Condition,
    Declaration,
    Declarations,
    Policy,
    PolicyFileError,
    file_sha256,
    load_benchmarks,
    load_declarations,
    load_policy,
)
from indicators.vocabulary import PASSING, Source, Status

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}


@dataclass(frozen=True)
class ConditionResult:
    tier: str
    condition_id: str
    label_zh: str
    label_en: str
    indicator: str | None
    declared: str | None
    level: str
    comparator: str | None
    threshold: float | None
    threshold_ref: str | None  # "benchmark:province.avg" when the threshold came from one
    measured: float | bool | str | None
    status: Status
    source: Source
    required: bool
    policy_default: bool
    citation: str
    reason: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "condition_id": self.condition_id,
            "label_zh": self.label_zh,
            "label_en": self.label_en,
            "indicator": self.indicator,
            "declared": self.declared,
            "level": self.level,
            "comparator": self.comparator,
            "threshold": json_safe(self.threshold),
            "threshold_ref": self.threshold_ref,
            "measured": json_safe(self.measured),
            "status": self.status,
            "source": self.source,
            "required": self.required,
            "policy_default": self.policy_default,
            "citation": self.citation,
            "reason": self.reason,
            "evidence": json_safe(self.evidence),
        }


@dataclass(frozen=True)
class Evaluation:
    policy_id: str
    policy_version: str
    definition: str
    tier_reached: str | None
    next_tier: str | None
    conditions: tuple[ConditionResult, ...]
    gaps: tuple[ConditionResult, ...]
    coverage: float | None
    coverage_bound: float
    indicators: dict[str, dict[str, IndicatorValue]]  # scope ("factory", "line:L1", ...) -> id
    benchmark_id: str | None = None
    benchmark_example: bool = False

    def to_json(self) -> dict[str, Any]:
        """Stable, JSON-serialisable (no NaN or infinity) form for reports."""
        return {
            "policy": {
                "policy_id": self.policy_id,
                "version": self.policy_version,
                "definition": self.definition,
            },
            "benchmarks": {"benchmark_id": self.benchmark_id, "example": self.benchmark_example},
            "tier_reached": self.tier_reached,
            "next_tier": self.next_tier,
            "coverage": {
                "day_share": json_safe(self.coverage),
                "min_day_share": self.coverage_bound,
            },
            "conditions": [c.to_json() for c in self.conditions],
            "gaps": [c.condition_id for c in self.gaps],
            "indicators": {
                scope: {key: value.to_json() for key, value in sorted(values.items())}
                for scope, values in sorted(self.indicators.items())
            },
        }


def evaluate(
    base: pd.DataFrame,
    inventory: pd.DataFrame,
    policy: Policy,
    *,
    benchmarks: Benchmarks | None,
    declarations: Declarations | None,
    params: Params = Params(),
    baseline_base: pd.DataFrame | None = None,
    coverage: float | None = None,
) -> Evaluation:
    """Evaluate every condition of `policy` over `base` (hourly or daily rows) and `inventory`.

    `coverage` is the share of the period's days with data; when None it is computed from `base`
    over the days between its first and last local day. `params.industry_code` and
    `params.province` select the benchmark rows. Raises PolicyFileError when a benchmark's
    direction contradicts a condition's comparator.
    """
    params = policy.params_over(params)
    daily = daily_measures(base, params.time_zone)
    baseline_daily = (
        None if baseline_base is None else daily_measures(baseline_base, params.time_zone)
    )
    if coverage is None:
        coverage = _coverage(daily, params.time_zone)
    scopes = _Scopes(daily, baseline_daily, _inventory_frame(inventory), params)
    coverage_ok = coverage is not None and coverage >= policy.coverage.min_day_share

    results: list[ConditionResult] = []
    for tier in policy.tiers:
        for condition in tier.conditions:
            if condition.declared is not None:
                results.append(_declared(tier.id, condition, declarations))
            else:
                results.append(
                    _measured(tier.id, condition, scopes, benchmarks, params, coverage_ok)
                )

    reached, next_tier, gaps = tier_outcome(policy, results)
    return Evaluation(
        policy_id=policy.policy_id,
        policy_version=policy.version,
        definition=policy.definition,
        tier_reached=reached,
        next_tier=next_tier,
        conditions=tuple(results),
        gaps=gaps,
        coverage=coverage,
        coverage_bound=policy.coverage.min_day_share,
        indicators=scopes.computed,
        benchmark_id=None if benchmarks is None else benchmarks.benchmark_id,
        benchmark_example=False if benchmarks is None else benchmarks.example,
    )


# --- measured conditions -------------------------------------------------------------------------


def tier_outcome(
    policy: Policy, results: Sequence[ConditionResult]
) -> tuple[str | None, str | None, tuple[ConditionResult, ...]]:
    """The highest tier whose required conditions all pass, the next tier, and its gaps.

    Tiers are cumulative: the walk stops at the first tier with a blocking condition.
    """
    reached: str | None = None
    for tier in policy.tiers:
        blocking = tuple(
            r for r in results if r.tier == tier.id and r.required and r.status not in PASSING
        )
        if blocking:
            return reached, tier.id, blocking
        reached = tier.id
    return reached, None, ()


class _Scopes:
    """Indicators per scope, computed once each and kept for the evaluation's evidence."""

    def __init__(
        self,
        daily: pd.DataFrame,
        baseline: pd.DataFrame | None,
        inventory: pd.DataFrame,
        params: Params,
    ) -> None:
        self.daily = daily
        self.baseline = baseline
        self.inventory = inventory
        self.params = params
        self.computed: dict[str, dict[str, IndicatorValue]] = {}
        self._groups: dict[str, list[tuple[str, list[str] | None]]] = {}

    def groups(self, level: str) -> list[tuple[str, list[str] | None]]:
        """(scope name, device ids or None for all) for a condition level (kept per level:
        every condition of a level asks again)."""
        if level not in self._groups:
            self._groups[level] = self._new_groups(level)
        return [(scope, None if ids is None else list(ids)) for scope, ids in self._groups[level]]

    def _new_groups(self, level: str) -> list[tuple[str, list[str] | None]]:
        inv = self.inventory
        if level == "factory":
            return [("factory", None)]
        if level == "key_processes":
            return [("key_processes", sorted(inv.loc[inv["key_process"], "device_id"]))]
        if level == "line":
            return [
                (f"line:{line}", sorted(group["device_id"]))
                for line, group in inv.groupby("line", sort=True)
            ]
        devices = sorted(set(inv["device_id"]) | set(self.daily["device_id"].astype(str)))
        return [(f"device:{d}", [d]) for d in devices]

    def indicator(self, scope: str, devices: list[str] | None, key: str) -> IndicatorValue:
        values = self.computed.get(scope)
        if values is None:
            daily, inventory, baseline = self.daily, self.inventory, self.baseline
            if devices is not None:
                daily = daily[daily["device_id"].astype(str).isin(devices)]
                inventory = inventory[inventory["device_id"].isin(devices)]
                if baseline is not None:
                    baseline = baseline[baseline["device_id"].astype(str).isin(devices)]
            values = compute(daily, inventory, self.params, daily=True)
            values.update(improvement(daily, baseline, self.params, daily=True))
            self.computed[scope] = values
        return values[key]


def _measured(
    tier: str,
    condition: Condition,
    scopes: _Scopes,
    benchmarks: Benchmarks | None,
    params: Params,
    coverage_ok: bool,
) -> ConditionResult:
    assert condition.indicator is not None and condition.comparator is not None
    key = condition.indicator
    comparator = condition.comparator
    source: Source = "measured"
    threshold_ref: str | None = None
    threshold: float | None
    reason: str | None = None
    if isinstance(condition.threshold, BenchmarkRef):
        source, threshold_ref = "benchmark", f"benchmark:{condition.threshold.benchmark}"
        threshold, reason = _benchmark_threshold(condition, condition.threshold, benchmarks, params)
    else:
        threshold = None if condition.threshold is None else float(condition.threshold)

    per_scope: list[dict[str, Any]] = []
    worst: float | None = None
    undefined: str | None = None
    failed = False
    for scope, devices in scopes.groups(condition.level):
        value = scopes.indicator(scope, devices, key)
        shown = value.value if value.value is not None else value.measured
        per_scope.append(
            {"scope": scope, "value": shown, "reason": value.reason, "inputs": value.inputs}
        )
        if value.value is None:
            undefined = undefined or value.reason or "insufficient_data"
        elif threshold is not None and not _COMPARE[comparator](value.value, threshold):
            failed = True
        if shown is not None and (worst is None or _worse(comparator, shown, worst)):
            worst = shown

    status: Status
    if not per_scope:
        status, reason = "insufficient_data", "no_inventory"
    elif threshold is None:
        status = "insufficient_data"
    elif failed:
        status = "fail"
    elif undefined is not None:
        status, reason = "insufficient_data", undefined
    elif not coverage_ok:
        status, reason = "insufficient_data", "coverage_below_bound"
    else:
        status = "pass"
    return ConditionResult(
        tier=tier,
        condition_id=condition.id,
        label_zh=condition.label_zh,
        label_en=condition.label_en,
        indicator=key,
        declared=None,
        level=condition.level,
        comparator=comparator,
        threshold=threshold,
        threshold_ref=threshold_ref,
        measured=worst,
        status=status,
        source=source,
        required=condition.required,
        policy_default=condition.policy_default,
        citation=condition.citation,
        reason=reason,
        evidence={"indicator": key, "unit": INDICATORS[key].unit, "scopes": per_scope},
    )


def _worse(comparator: str, candidate: float, current: float) -> bool:
    return candidate < current if comparator in (">=", ">") else candidate > current


def _benchmark_threshold(
    condition: Condition,
    ref: BenchmarkRef,
    benchmarks: Benchmarks | None,
    params: Params,
) -> tuple[float | None, str | None]:
    assert condition.indicator is not None and condition.comparator is not None
    if benchmarks is None:
        return None, "no_benchmark"
    entry = benchmarks.lookup(params.industry_code, params.province, condition.indicator, ref.scope)
    if entry is None:
        return None, "no_benchmark"
    wants_higher = condition.comparator in (">=", ">")
    if wants_higher != (entry.better == "higher"):
        raise PolicyFileError(
            "policy",
            [
                f"{condition.id}: comparator {condition.comparator} contradicts the benchmark "
                f"({condition.indicator} is better when {entry.better})"
            ],
        )
    number = entry.avg if ref.statistic == "avg" else entry.p75
    return (None, "no_benchmark") if number is None else (float(number), None)


# --- declared conditions -------------------------------------------------------------------------


def _declared(
    tier: str, condition: Condition, declarations: Declarations | None
) -> ConditionResult:
    assert condition.declared is not None
    item: Declaration | None = (
        None if declarations is None else declarations.items.get(condition.declared)
    )
    # The policy model forbids benchmark thresholds on declared conditions.
    raw = condition.threshold
    threshold = float(raw) if isinstance(raw, int | float) else None
    measured: float | bool | str | None = None
    reason: str | None = None
    status: Status
    if item is None:  # failing: a condition nobody declared is not met
        status = "not_declared"
        reason = "no_declarations_file" if declarations is None else "missing_declaration"
    else:
        value = item.value
        measured = float(len(value)) if isinstance(value, list) else value
        if condition.comparator is None or threshold is None:
            ok = value is True or (isinstance(value, list) and len(value) > 0)
        elif isinstance(measured, bool) or not isinstance(measured, int | float):
            ok, reason = False, "declared_value_not_a_number"
        else:
            ok = _COMPARE[condition.comparator](float(measured), threshold)
        status = "declared_pass" if ok else "declared_fail"
    documents = [] if item is None else [d.model_dump() for d in item.documents]
    return ConditionResult(
        tier=tier,
        condition_id=condition.id,
        label_zh=condition.label_zh,
        label_en=condition.label_en,
        indicator=None,
        declared=condition.declared,
        level=condition.level,
        comparator=condition.comparator,
        threshold=threshold,
        threshold_ref=None,
        measured=measured,
        status=status,
        source="declared",
        required=condition.required,
        policy_default=condition.policy_default,
        citation=condition.citation,
        reason=reason,
        evidence={"declaration": condition.declared, "documents": documents},
    )


# --- helpers -------------------------------------------------------------------------------------


def _inventory_frame(inventory: pd.DataFrame) -> pd.DataFrame:
    needed = ("device_id", "line", "process_step", "key_process", "kind", "digital")
    if inventory.empty:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in needed}).astype(
            {"key_process": bool, "digital": bool}
        )
    missing = [c for c in needed if c not in inventory.columns]
    if missing:
        raise ValueError(f"inventory: missing column(s) {', '.join(missing)}")
    inv = inventory.copy()
    inv["device_id"] = inv["device_id"].astype(str)
    inv["line"] = inv["line"].astype(str)
    inv["key_process"] = inv["key_process"].fillna(False).astype(bool)
    inv["digital"] = inv["digital"].fillna(False).astype(bool)
    return inv


def _coverage(daily: pd.DataFrame, time_zone: str) -> float | None:
    """Share of local days, first to last in `daily`, on which any device had data."""
    if daily.empty:
        return None
    day = local_day(daily["hour_start"].to_numpy(np.int64), time_zone)
    known = daily["pot_s"].to_numpy(np.float64) - daily["unk_s"].to_numpy(np.float64)
    with_data = (known > 0) | (daily["samples_received"].to_numpy(np.int64) > 0)
    span = int(day.max() - day.min()) + 1
    return len(np.unique(day[with_data])) / span


def json_safe(value: Any) -> Any:
    """Replace NaN/inf by None and numpy scalars by Python numbers, recursively."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


__all__ = [
    "BASELINE_INDICATORS",
    "Benchmarks",
    "ConditionResult",
    "Declarations",
    "Evaluation",
    "Policy",
    "PolicyFileError",
    "evaluate",
    "file_sha256",
    "load_benchmarks",
    "load_declarations",
    "load_policy",
]
