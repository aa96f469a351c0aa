"""Benchmark: every indicator and the tier evaluation over a year of hourly base measures.

    .venv/bin/python bench/indicators.py [--devices 500] [--days 365] [--seed 7]

Synthetic, seeded base measures (500 devices x 8760 hours = 4.38 M rows) in compact dtypes
(whole seconds and counts as uint16, device ids categorical), as a store would hand them over.
Prints the time of `compute` and of `evaluate` (default policy) and the process's peak RSS.
Targets: under 2 s together, under 500 MB peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd
from _paths import ROOT

from indicators.catalog import Params
from indicators.evaluate import (
    evaluate,
    load_benchmarks,
    load_declarations,
    load_policy,
)
from indicators.kpi import compute

YEAR_START = 1_767_196_800  # 2025-12-31T16:00:00Z = 2026-01-01 00:00 Asia/Shanghai


def synthetic_base(devices: int, days: int, seed: int) -> pd.DataFrame:
    """Hourly base measures in (device_id, hour_start) order; built column by column so the
    peak memory stays close to the frame's own size."""
    rng = np.random.default_rng(seed)
    hours = days * 24
    n = devices * hours
    names = [f"dev-{i:04d}" for i in range(devices)]
    frame = pd.DataFrame(
        {
            "device_id": pd.Categorical.from_codes(
                np.repeat(np.arange(devices, dtype=np.int16), hours),
                dtype=pd.CategoricalDtype(names),
            ),
            "hour_start": np.tile(YEAR_START + 3600 * np.arange(hours, dtype=np.int64), devices),
        }
    )
    planned = rng.random(n, dtype=np.float32) < 0.1

    def seconds(low: int, high: int) -> np.ndarray:
        values = rng.integers(low, high, size=n, dtype=np.uint16)
        values[planned] = 0
        return values

    frame["pot_s"] = np.full(n, 3600, dtype=np.uint16)
    frame["pdt_s"] = (planned * np.uint16(3600)).astype(np.uint16)
    for name, low, high in (
        ("apt_s", 2400, 3300),
        ("asut_s", 0, 150),
        ("adet_s", 0, 100),
        ("unk_s", 0, 30),
    ):
        frame[name] = seconds(low, high)
    busy = frame["apt_s"].to_numpy() + frame["asut_s"].to_numpy()
    busy += frame["adet_s"].to_numpy()
    busy += frame["unk_s"].to_numpy()
    adot = np.uint16(3600) - busy
    adot[planned] = 0
    frame["adot_s"] = adot
    del busy, adot
    apt = frame["apt_s"].to_numpy()
    frame["auto_apt_s"] = apt - apt // np.uint16(10)
    produced = apt // np.uint16(30)
    frame["produced"] = produced
    frame["ideal_time_s"] = produced * 27.5
    scrap = rng.binomial(produced, 0.02).astype(np.uint16)
    frame["good"] = produced - scrap
    frame["scrap"] = scrap
    frame["rework"] = np.zeros(n, dtype=np.uint16)
    adet = frame["adet_s"].to_numpy()
    frame["unplanned_stops"] = (adet > 60).astype(np.uint16)
    frame["failures"] = (adet > 90).astype(np.uint16)
    frame["samples_expected"] = np.full(n, 10_800, dtype=np.uint16)
    received = np.uint16(10_800) - rng.integers(0, 300, size=n, dtype=np.uint16)
    frame["samples_received"] = received
    frame["samples_on_time"] = received - received // np.uint16(100)
    frame["samples_with_source_ts"] = received
    frame["samples_bad"] = received // np.uint16(500)
    frame["energy_kwh"] = produced.astype(np.float32) * np.float32(0.55)
    return frame


def synthetic_inventory(devices: int) -> pd.DataFrame:
    kinds = ["cnc", "robot", "plc_automated", "manual"]
    return pd.DataFrame(
        {
            "device_id": [f"dev-{i:04d}" for i in range(devices)],
            "line": [f"L{i % 10}" for i in range(devices)],
            "process_step": [f"step-{i % 25}" for i in range(devices)],
            "key_process": [i % 3 == 0 for i in range(devices)],
            "kind": [kinds[i % 4] for i in range(devices)],
            "digital": [i % 4 != 3 for i in range(devices)],
            "connection": ["opcua" if i % 4 != 3 else "none" for i in range(devices)],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    base = synthetic_base(args.devices, args.days, args.seed)
    inventory = synthetic_inventory(args.devices)
    policy = load_policy(ROOT / "config/policies/default-2026.yaml")
    benchmarks = load_benchmarks(ROOT / "config/benchmarks/example-2026.yaml")
    declarations = load_declarations(ROOT / "config/declarations.example.yaml")
    params = Params(industry_code="C3484", province="tianjin")
    built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    started = time.perf_counter()
    values = compute(base, inventory, params)
    computed = time.perf_counter()
    evaluation = evaluate(
        base, inventory, policy, benchmarks=benchmarks, declarations=declarations, params=params
    )
    finished = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"rows: {len(base):,} ({args.devices} devices x {args.days * 24} hours)")
    print(f"base frame: {base.memory_usage(deep=True).sum() / 2**20:.0f} MiB")
    print(f"compute: {len(values)} indicators in {computed - started:.3f} s")
    print(
        f"evaluate: {len(evaluation.conditions)} conditions in {finished - computed:.3f} s "
        f"(tier reached: {evaluation.tier_reached}, next: {evaluation.next_tier})"
    )
    print(f"total: {finished - started:.3f} s")
    print(f"peak RSS: {peak:.0f} MiB (after building the input: {built:.0f} MiB)")
    print(f"oee: {values['oee'].value:.6f}  networking_rate: {values['networking_rate'].value}")


if __name__ == "__main__":
    main()
