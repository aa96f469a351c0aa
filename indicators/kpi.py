"""Indicators of docs/indicators.md §2–3 computed from summed base measures and the device
inventory.

Every indicator is a ratio of sums (never a mean of ratios), so splitting a period or a device set
and summing the base measures gives the same value. Undefined values are `None` with a reason,
never a division error or a fake 0 or 1. Inventory-based rates count device-days over the local
days present in `base`. Pure: no I/O, no clock, inputs are never mutated.

`compute` gathers the catalog's indicators from their modules: `efficiency` (§2),
`inventory_rates` and `data_rates` (§3); `baseline.improvement` compares against a baseline.
"""

from __future__ import annotations

import pandas as pd

from indicators.catalog import INDICATORS, IndicatorValue, Params
from indicators.data_rates import data_rates
from indicators.efficiency import efficiency
from indicators.inventory_rates import inventory_rates
from indicators.measures import daily_measures, totals


def compute(
    base: pd.DataFrame, inventory: pd.DataFrame, params: Params = Params(), *,
    daily: bool = False,
) -> dict[str, IndicatorValue]:
    """All indicators over the rows given (the caller filters a line or the key processes).

    `base` rows may be hourly or daily sums; per-device-day figures group rows by the local day
    (params.time_zone) of `hour_start`. Baseline comparisons are in `improvement`.
    `daily`: `base` is `daily_measures(..., params.time_zone)` already, or rows of it; summing
    it again would give the same frame (one row per device-day, in order), so it is skipped
    (the annual evaluation's thirteen calls on one year: a third of its time).
    """
    # Daily rows carry every sum the indicators need and make the rest cheap on large inputs.
    base = base.reset_index(drop=True) if daily else daily_measures(base, params.time_zone)
    sums = totals(base)
    values: dict[str, IndicatorValue] = {}
    for item in efficiency(sums, params):
        values[item.id] = item
    for item in inventory_rates(base, inventory, params):
        values[item.id] = item
    for item in data_rates(sums):
        values[item.id] = item
    return {key: values[key] for key in INDICATORS if key in values}
