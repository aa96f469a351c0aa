"""Improvement against a baseline period (docs/indicators.md §5): efficiency, defect-rate and energy
changes, each a ratio of the two periods' ratios of sums."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from indicators.catalog import (
    INSUFFICIENT_DATA,
    NO_BASELINE,
    IndicatorValue,
    Params,
    defined,
    undefined,
)
from indicators.measures import daily_measures, totals


def improvement(
    base: pd.DataFrame, baseline_base: pd.DataFrame | None, params: Params = Params(), *,
    daily: bool = False,
) -> dict[str, IndicatorValue]:
    """Change against a baseline period: efficiency_gain = (GQ/PBT)/(GQ/PBT)_b − 1,
    defect_rate_change = DR/DR_b − 1, energy_per_unit_change = EPU/EPU_b − 1 and
    energy_efficiency_gain = EPU_b/EPU − 1 ("+10 % energy efficiency" is EPU × 1/1.1).

    `daily`: both frames are `daily_measures` already, or rows of them (as in `compute`)."""

    def summed(frame: pd.DataFrame) -> dict[str, float]:
        return totals(frame if daily else daily_measures(frame, params.time_zone))

    now = summed(base)
    then = None if baseline_base is None else summed(baseline_base)
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
            result[key] = undefined(key, INSUFFICIENT_DATA, inputs)
        elif previous is None or previous == 0.0:
            result[key] = undefined(key, NO_BASELINE, inputs)
        elif inverted:
            if current == 0.0:
                result[key] = undefined(key, INSUFFICIENT_DATA, inputs)
            else:
                result[key] = defined(key, previous / current - 1.0, inputs)
        else:
            result[key] = defined(key, current / previous - 1.0, inputs)
    return result


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
