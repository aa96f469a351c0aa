"""Inventory-based rates (docs/indicators.md §3): digitization, networking and key-process CNC
rates.

They count device-days over the local days present in `base`: a device-day is networked when
enough of its expected samples arrived, and run in auto mode when enough of its running time was
automatic. Devices in the inventory but never connected count in the denominators.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from indicators.catalog import (
    INSUFFICIENT_DATA,
    NO_INVENTORY,
    NO_PRODUCTION,
    IndicatorValue,
    Params,
    defined,
    undefined,
)
from indicators.local_days import local_day_index
from indicators.measures import device_codes

AUTOMATED_KINDS = frozenset({"cnc", "robot", "plc_automated", "dcs"})


def inventory_rates(
    base: pd.DataFrame, inventory: pd.DataFrame, params: Params
) -> list[IndicatorValue]:
    facts = inventory_facts(inventory)
    if not facts.device_ids:
        return [undefined(key, NO_INVENTORY, {}) for key in RATE_IDS]
    days = _device_days(base, list(facts.device_ids), params)
    key_sums: tuple[float, float] | None = None
    if facts.key_ids:
        rows = base["device_id"].isin(list(facts.key_ids)).to_numpy()
        auto_apt = float(base["auto_apt_s"].to_numpy()[rows].sum(dtype=np.float64))
        apt = float(base["apt_s"].to_numpy()[rows].sum(dtype=np.float64))
        key_sums = (auto_apt, apt)
    return rates_from_counts(
        facts, days.n_days, days.networked, days.auto_networked, key_sums, params
    )


RATE_IDS: tuple[str, ...] = (
    "digitization_rate",
    "networking_rate",
    "networking_rate_digital",
    "key_process_cnc_rate",
    "key_process_cnc_rate_device",
    "key_process_cnc_rate_process",
    "key_process_cnc_rate_measured",
    "key_process_auto_share",
)


@dataclass(frozen=True)
class InventoryFacts:
    """What the rates need of an inventory, in `device_id` order (one per device)."""

    device_ids: tuple[str, ...]
    digital: npt.NDArray[np.bool_]
    key: npt.NDArray[np.bool_]
    automated: npt.NDArray[np.bool_]
    key_steps: int  # distinct process steps of key devices
    key_steps_automated: int  # of those, the ones served by an automated device
    key_ids: frozenset[str]


def inventory_facts(inventory: pd.DataFrame) -> InventoryFacts:
    """The facts of `inventory`, kept per distinct inventory: an annual evaluation asks for
    the same inventory's facts some fifteen times (year, months, conditions), and building
    them with pandas costs about 10 ms."""
    key = (tuple(map(str, inventory.columns)), tuple(inventory.itertuples(index=False, name=None)))
    try:
        return _kept_facts(key)
    except TypeError:  # an unhashable cell: computed each time
        return _facts(inventory)


@functools.lru_cache(maxsize=256)
def _kept_facts(key: tuple[tuple[str, ...], tuple[tuple[object, ...], ...]]) -> InventoryFacts:
    columns, rows = key
    return _facts(pd.DataFrame(list(rows), columns=list(columns)))


def _facts(inventory: pd.DataFrame) -> InventoryFacts:
    inv = _inventory(inventory)
    key = inv["key_process"].to_numpy(bool)
    automated = inv["kind"].isin(list(AUTOMATED_KINDS)).to_numpy(bool)
    steps = inv.loc[key, ["process_step"]].assign(automated=automated[key])
    served = steps.groupby("process_step", sort=True)["automated"].any()
    return InventoryFacts(
        device_ids=tuple(str(d) for d in inv["device_id"]),
        digital=inv["digital"].to_numpy(bool),
        key=key,
        automated=automated,
        key_steps=len(served),
        key_steps_automated=int(served.sum()),
        key_ids=frozenset(str(d) for d in inv.loc[key, "device_id"]),
    )


def rates_from_counts(
    facts: InventoryFacts,
    n_days_int: int,
    networked: npt.NDArray[np.int64],
    auto_days: npt.NDArray[np.int64],
    key_sums: tuple[float, float] | None,
    params: Params,
) -> list[IndicatorValue]:
    """The rates from the device-day counts (`networked`, `auto_days`: per inventory device)
    and the key devices' (auto APT, APT) sums; `inventory_rates` and the bureau's per-report
    check (bureau.indicator_check) share it, so both give the same values."""
    n_days = float(n_days_int)
    digital, key, automated = facts.digital, facts.key, facts.automated
    out: list[IndicatorValue] = []

    def rate(name: str, numerator: float, denominator: float, **extra: float) -> IndicatorValue:
        inputs = {"numerator_device_days": numerator, "denominator_device_days": denominator}
        inputs.update(extra)
        inputs["days"] = n_days
        if n_days == 0:
            return undefined(name, INSUFFICIENT_DATA, inputs)
        if denominator <= 0:
            return undefined(name, NO_INVENTORY, inputs)
        return defined(name, numerator / denominator, inputs)

    devices = float(len(facts.device_ids))
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
    by_process = rate(
        "key_process_cnc_rate_process",
        float(facts.key_steps_automated) * n_days,
        float(facts.key_steps) * n_days,
        key_processes=float(facts.key_steps),
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
    if key_sums is None:
        out.append(undefined("key_process_auto_share", NO_INVENTORY, {}))
    else:
        auto_apt, apt = key_sums
        inputs = {"auto_apt_s": auto_apt, "apt_s": apt}
        if apt <= 0:
            out.append(undefined("key_process_auto_share", NO_PRODUCTION, inputs))
        else:
            out.append(defined("key_process_auto_share", auto_apt / apt, inputs))
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
