"""Indicators from the time model against the simulator's ground-truth ledger.

The simulator writes what really happened (intervals.csv, hourly.csv, devices.csv) plus the
samples a collector would have stored. Base measures are built with indicators.timemodel from
the ledger's intervals, deltas derived from its hourly counts and sample counts derived from
the samples; every indicator is then compared with a value computed here, independently, with
plain pandas arithmetic on the same ledger (relative error <= 1e-9).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from indicators.catalog import Params
from indicators.inventory_rates import AUTOMATED_KINDS
from indicators.kpi import compute
from indicators.timemodel import base_measures
from simulator.history import Gap, generate_history, load_samples
from simulator.ledger import Ledger, load_ledger
from simulator.model import SimFactory, load_factory

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "factories" / "demo.yaml"
T0 = 1_767_196_800.0  # 2026-01-01 00:00 Asia/Shanghai
SHANGHAI_S = 8 * 3600  # Asia/Shanghai has no DST: local day = (t + 8 h) // 1 day
MIN_FAILURE_S = 120.0
REL = 1e-9


def sample_counts(ledger_dir: Path, meta: dict[str, object]) -> pd.DataFrame:
    """Per device and hour: grid slots expected (every signal on every grid point) and the
    samples that filled them; on time = received within 5 s of the source timestamp."""
    start, end = float(meta["start"]), float(meta["end"])  # type: ignore[arg-type]
    interval = float(meta["sample_interval_s"])  # type: ignore[arg-type]
    first = math.ceil(start / interval) * interval
    grid = np.unique(np.concatenate([[start], np.arange(first, end + 1e-9, interval), [end]]))
    grid = grid[grid <= end]
    frames = []
    for path in sorted((ledger_dir / "samples").glob("*.npz")):
        samples = load_samples(path)
        signals = np.unique(samples["signal_id"])
        on_grid = np.isin(samples["source_ts"], grid)
        received = pd.DataFrame(
            {
                "hour_start": (np.floor(samples["source_ts"][on_grid] / 3600) * 3600).astype(
                    np.int64
                ),
                "on_time": (samples["received_ts"] - samples["source_ts"])[on_grid] <= 5.0,
                "bad": samples["quality"][on_grid] == 2,
            }
        )
        per_hour = received.groupby("hour_start").agg(
            samples_received=("on_time", "size"),
            samples_on_time=("on_time", "sum"),
            samples_bad=("bad", "sum"),
        )
        expected = (
            pd.Series((np.floor(grid / 3600) * 3600).astype(np.int64))
            .value_counts()
            .mul(len(signals))
            .rename("samples_expected")
        )
        frame = pd.concat([expected, per_hour], axis=1).fillna(0).astype(np.int64)
        frame.index.name = "hour_start"
        frame = frame.reset_index()
        frame["samples_with_source_ts"] = frame["samples_received"]
        frame.insert(0, "device_id", path.stem)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def deltas_from_hourly(ledger: Ledger) -> pd.DataFrame:
    """Counter deltas that reproduce the ledger's hourly counts, each ending in its hour."""
    hourly = ledger.hourly
    start, end = float(ledger.meta["start"]), float(ledger.meta["end"])
    spans = pd.DataFrame(
        {
            "device_id": hourly["device_id"],
            "start": np.maximum(hourly["hour_start"].astype(float), start),
            "end": np.minimum(hourly["hour_start"].astype(float) + 3600.0, end),
        }
    )
    parts = [
        spans.assign(role=role, delta=hourly[column].to_numpy())
        for role, column in (
            ("good_count", "good"),
            ("reject_count", "scrap"),
            ("energy_kwh", "energy_kwh"),
        )
    ]
    return pd.concat(parts, ignore_index=True)[["device_id", "role", "start", "end", "delta"]]


def expected_indicators(
    ledger: Ledger, samples: pd.DataFrame, ict: dict[str, float]
) -> dict[str, float | None]:
    """Every indicator straight from the ledger with pandas: totals, then ratios."""
    iv = ledger.intervals.assign(duration=lambda f: f["end"] - f["start"])
    by_state = iv.groupby("state")["duration"].sum()

    def state(name: str) -> float:
        return float(by_state.get(name, 0.0))

    pot = float(iv["duration"].sum())
    pdt, apt, asut, adet = (
        state("planned_stop"),
        state("running"),
        state("setup"),
        state("unplanned_stop"),
    )
    pbt = pot - pdt
    stopped = iv["state"].eq("unplanned_stop")
    previous_stopped = stopped.groupby(iv["device_id"]).shift(1, fill_value=False)
    event = (stopped & ~previous_stopped).cumsum()
    event_lengths = iv[stopped].groupby(event[stopped])["duration"].sum()
    stops, failures = len(event_lengths), int((event_lengths >= MIN_FAILURE_S).sum())

    hourly = ledger.hourly
    produced, good, scrap = (float(hourly[c].sum()) for c in ("produced", "good", "scrap"))
    energy = float(hourly["energy_kwh"].sum())
    ideal = float((hourly["produced"] * hourly["device_id"].map(ict)).sum())

    def ratio(top: float, bottom: float) -> float | None:
        return top / bottom if bottom > 0 else None

    a, p, q = ratio(apt, pbt), ratio(ideal, apt), ratio(good, produced)
    out: dict[str, float | None] = {
        "availability": a,
        "availability_known": a,
        "unknown_share": 0.0,
        "performance": p,
        "quality_ratio": q,
        "oee": None if None in (a, p, q) else a * p * q,  # type: ignore[operator]
        "technical_efficiency": ratio(apt, apt + adet),
        "setup_rate": ratio(asut, apt + asut),
        "utilisation": ratio(apt, apt + asut + adet),
        "mtbf": ratio(apt + asut, failures),
        "mttr": ratio(adet, stops),
        "defect_rate": ratio(scrap, produced),
        "first_pass_yield": ratio(good, produced),
        "throughput": ratio(good, pbt / 3600.0),
        "energy_per_unit": ratio(energy, produced),
        "energy_per_good_unit": ratio(energy, good),
    }

    received = float(samples["samples_received"].sum())
    out["data_collection_rate"] = ratio(received, float(samples["samples_expected"].sum()))
    out["realtime_rate"] = ratio(
        float(samples["samples_on_time"].sum()), float(samples["samples_with_source_ts"].sum())
    )
    out["data_quality_rate"] = ratio(received - float(samples["samples_bad"].sum()), received)

    # Device-days over the local days on which any row exists.
    def local_day(t: pd.Series | np.ndarray) -> np.ndarray:
        return np.floor((np.asarray(t, dtype=float) + SHANGHAI_S) / 86400).astype(np.int64)

    first_hour = np.floor(iv["start"] / 3600) * 3600
    last_hour = np.ceil(iv["end"] / 3600) * 3600 - 3600
    days = set(local_day(first_hour)) | set(local_day(last_hour))
    days |= set(local_day(samples["hour_start"])) | set(local_day(hourly["hour_start"]))
    n_days = len(days)
    per_day = samples.assign(day=local_day(samples["hour_start"])).groupby(["device_id", "day"])
    sums = per_day[["samples_expected", "samples_received"]].sum()
    networked = sums[
        (sums["samples_expected"] > 0)
        & (sums["samples_received"] >= 0.95 * sums["samples_expected"])
    ]
    networked_days = networked.groupby(level="device_id").size()

    inv = ledger.devices
    digital = inv["digital"].astype(bool)
    key = inv["key_process"].astype(bool)
    automated = inv["kind"].isin(list(AUTOMATED_KINDS))
    n = len(inv)
    days_of = inv["device_id"].map(networked_days).fillna(0)
    out["digitization_rate"] = digital.sum() / n
    out["networking_rate"] = days_of.sum() / (n * n_days)
    out["networking_rate_digital"] = days_of[digital].sum() / (digital.sum() * n_days)
    out["key_process_cnc_rate_device"] = (key & automated).sum() / key.sum()
    out["key_process_cnc_rate"] = out["key_process_cnc_rate_device"]
    served = inv[key].assign(automated=automated[key]).groupby("process_step")["automated"].any()
    out["key_process_cnc_rate_process"] = served.sum() / len(served)

    running = iv[iv["state"].eq("running")]
    key_ids = set(inv.loc[key, "device_id"])
    key_running = running[running["device_id"].isin(key_ids)]
    out["key_process_auto_share"] = ratio(
        float(key_running.loc[key_running["auto"].astype(bool), "duration"].sum()),
        float(key_running["duration"].sum()),
    )
    daily_run = running_by_day(running)
    measured = 0
    for device in inv.loc[key & automated, "device_id"]:
        for day in networked.loc[device].index if device in networked.index else []:
            apt_day, auto_day = daily_run.get((device, day), (0.0, 0.0))
            measured += auto_day > 0 and auto_day >= 0.01 * apt_day
    out["key_process_cnc_rate_measured"] = measured / (key.sum() * n_days)
    return out


def running_by_day(running: pd.DataFrame) -> dict[tuple[str, int], tuple[float, float]]:
    """(device, local day) -> (running s, running-in-auto s), intervals cut at local midnight."""
    totals: dict[tuple[str, int], list[float]] = {}
    for device, start, end, auto in running[["device_id", "start", "end", "auto"]].itertuples(
        index=False
    ):
        t = start
        while t < end:
            day = int((t + SHANGHAI_S) // 86400)
            cut = min(end, (day + 1) * 86400 - SHANGHAI_S)
            cell = totals.setdefault((device, day), [0.0, 0.0])
            cell[0] += cut - t
            cell[1] += (cut - t) if auto else 0.0
            t = cut
    return {k: (v[0], v[1]) for k, v in totals.items()}


def check_against_ledger(ledger_dir: Path, factory: SimFactory) -> dict[str, float | None]:
    ledger = load_ledger(ledger_dir)
    samples = sample_counts(ledger_dir, ledger.meta)
    ict = {d.id: d.ideal_cycle_time_s for d in factory.devices}
    base = base_measures(
        ledger.intervals, deltas_from_hourly(ledger), samples, ict, min_failure_s=MIN_FAILURE_S
    )
    got = compute(base, ledger.devices, Params())
    want = expected_indicators(ledger, samples, ict)
    assert set(want) == set(got), set(got) ^ set(want)
    for key, expected in want.items():
        value = got[key].value
        if expected is None:
            assert value is None, (key, value)
            continue
        assert value is not None, (key, got[key].reason)
        assert math.isclose(value, expected, rel_tol=REL, abs_tol=1e-15), (key, value, expected)
    return want


@pytest.fixture(scope="module")
def demo() -> SimFactory:
    return load_factory(DEMO)


def generate(
    factory: SimFactory, out: Path, days: float, gaps: list[Gap] | None = None
) -> Callable[[], Path]:
    # A start and end off the hour grid exercise partial first and last hours.
    start = T0 + 900.0
    return lambda: generate_history(
        factory, out, start, start + days * 86400 + 1800.0, seed=31, gaps=gaps
    )


def test_a_few_days_match_the_ledger(demo: SimFactory, tmp_path: Path) -> None:
    """Four days with a 7-hour collector outage on one device: every indicator matches."""
    gap = Gap("CNC-02", T0 + 86400 + 3600.0, T0 + 86400 + 8 * 3600.0)
    generate(demo, tmp_path, 4, [gap])()
    want = check_against_ledger(tmp_path, demo)
    # The outage leaves CNC-02 under 95 % on that day, so networking is below 1.
    assert want["networking_rate_digital"] is not None and want["networking_rate_digital"] < 1.0
    assert want["mtbf"] is not None and want["oee"] is not None


@pytest.mark.slow
def test_a_full_year_matches_the_ledger(demo: SimFactory, tmp_path: Path) -> None:
    """The acceptance run: a year of the demo factory, every indicator against the ledger."""
    started = time.perf_counter()
    generate(demo, tmp_path, 365)()
    check_against_ledger(tmp_path, demo)
    assert time.perf_counter() - started < 300
