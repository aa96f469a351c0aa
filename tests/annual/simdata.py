"""A simulated factory period turned into what the agent would report.

The demo factory's history comes from `simulator.history.generate_history`; the base measures
are built with `indicators.timemodel.base_measures` from the ledger's state intervals, counter
deltas taken from the ledger's hourly counts, and sample counts taken from the generated sample
files (grid samples per device-hour; expected = signals x grid slots). Only networked devices
produce data, as on a real gateway; the inventory lists every device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from joserfc.jwk import OKPKey

from agent.outbox import Outbox, OutboxItem
from agent.protocol.envelope import Kind, public_jwk, sign_compact, thumbprint
from agent.protocol.period import Period
from agent.protocol.report import ReportMeta, build_report
from indicators.catalog import Params
from indicators.columns import INVENTORY_COLUMNS
from indicators.evaluate import load_policy
from indicators.timemodel import base_measures
from simulator.history import Gap, generate_history, load_samples
from simulator.ledger import load_ledger
from simulator.model import SimFactory, load_factory

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "factories" / "demo.yaml"
POLICY = ROOT / "config" / "policies" / "default-2026.yaml"
BENCHMARKS = ROOT / "config" / "benchmarks" / "example-2026.yaml"
DECLARATIONS = ROOT / "config" / "declarations.example.yaml"
TZ = "Asia/Shanghai"
FACTORY = "demo-tj-001"
BUREAU = "bureau-tj"
INTERVAL_S = 300.0
# The example benchmark file keys provinces in lower case.
PROVINCE = "tianjin"
INDUSTRY = "C3484"
EVALUATION: dict[str, Any] = {"tier_reached": None, "conditions": [], "gaps": []}


@dataclass(frozen=True)
class SimPeriod:
    factory: SimFactory
    first: date
    days: int
    base: pd.DataFrame  # hourly, networked devices only
    inventory: pd.DataFrame

    def day_rows(self, day: date) -> pd.DataFrame:
        start, end = Period("day", day.isoformat(), TZ).bounds()
        hours = self.base["hour_start"]
        return self.base[(hours >= start) & (hours < end)]

    def all_days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range(self.days)]


def local_midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(TZ)).timestamp()


@cache
def _params() -> tuple[tuple[str, Any], ...]:
    params = Params(time_zone=TZ, industry_code=INDUSTRY, province=PROVINCE)
    return tuple(dataclasses.asdict(load_policy(POLICY).params_over(params)).items())


def report_params() -> dict[str, Any]:
    """The params an agent configured for the demo factory puts in its reports (the policy's
    overrides applied, so the report's indicators are the ones the policy evaluates)."""
    return dict(_params())


def generate(out: Path, first: date, days: int, seed: int = 11, gaps: Iterable[Gap] = (),
             interval_s: float = INTERVAL_S) -> None:
    """The offline generator's history (ledger + samples) of `days` local days from `first`."""
    start = local_midnight(first)
    generate_history(load_factory(DEMO), out, start, start + days * 86400.0, seed,
                     sample_interval_s=interval_s, gaps=list(gaps))


def simulate(out: Path, first: date, days: int, seed: int = 11,
             gaps: Iterable[Gap] = ()) -> SimPeriod:
    generate(out, first, days, seed, gaps)
    return load_period(out, first, days)


def load_period(out: Path, first: date, days: int,
                interval_s: float = INTERVAL_S) -> SimPeriod:
    """The hourly base measures of a generated history, from its ledger (see the module doc)."""
    factory = load_factory(DEMO)
    start = local_midnight(first)
    end = start + days * 86400.0
    ledger = load_ledger(out)
    networked = [d.id for d in factory.devices if d.networked]
    intervals = ledger.intervals[ledger.intervals["device_id"].isin(networked)]
    hourly = ledger.hourly[ledger.hourly["device_id"].isin(networked)]
    deltas = pd.concat(
        [
            pd.DataFrame({"device_id": hourly["device_id"], "role": role,
                          "start": hourly["hour_start"].astype(float),
                          "end": hourly["hour_start"].astype(float) + 3600.0,
                          "delta": hourly[column].astype(float)})
            for role, column in (("good_count", "good"), ("reject_count", "scrap"),
                                 ("energy_kwh", "energy_kwh"))
        ],
        ignore_index=True,
    )
    counts = pd.concat([_sample_counts(factory, out, d, start, end, interval_s)
                        for d in networked], ignore_index=True)
    ict = {d.id: d.ideal_cycle_time_s for d in factory.devices}
    base = base_measures(intervals, deltas, counts, ict)
    inventory = ledger.devices.loc[:, list(INVENTORY_COLUMNS)].astype(
        {"key_process": bool, "digital": bool})
    return SimPeriod(factory, first, days, base, inventory)


def _sample_counts(factory: SimFactory, out: Path, device_id: str, start: float,
                   end: float, interval_s: float) -> pd.DataFrame:
    samples = load_samples(out / "samples" / f"{device_id}.npz")
    signals = len(factory.signals_of(factory.device(device_id)))
    ts = samples["source_ts"]
    on_grid = (np.mod(ts, interval_s) == 0) & (ts >= start) & (ts < end)
    hour = (np.floor(ts[on_grid] / 3600) * 3600).astype(np.int64)
    latency = (samples["received_ts"] - ts)[on_grid]
    bad = samples["quality"][on_grid] == 2
    frame = pd.DataFrame({"hour_start": hour, "on_time": latency <= 5.0, "bad": bad})
    grouped = frame.groupby("hour_start").agg(received=("on_time", "size"),
                                              on_time=("on_time", "sum"), bad=("bad", "sum"))
    hours = np.arange(int(start), int(end), 3600, dtype=np.int64)
    grouped = grouped.reindex(hours, fill_value=0)
    per_hour = int(3600 / interval_s)
    return pd.DataFrame({
        "device_id": device_id,
        "hour_start": hours,
        "samples_expected": signals * per_hour,
        "samples_received": grouped["received"].to_numpy(np.int64),
        "samples_on_time": grouped["on_time"].to_numpy(np.int64),
        "samples_with_source_ts": grouped["received"].to_numpy(np.int64),
        "samples_bad": grouped["bad"].to_numpy(np.int64),
    })


def meta(key: OKPKey, period: Period, issued_at: str, revision: int = 0) -> ReportMeta:
    return ReportMeta(
        factory_id=FACTORY, enterprise_id="91120116MA05DEMO01", bureau_id=BUREAU,
        agent_version="0.1.0", kid=thumbprint(public_jwk(key)), config_sha256="a" * 64,
        policy_sha256="b" * 64, period=period, issued_at=issued_at, revision=revision,
    )


def issued_after(day: date) -> str:
    return f"{(day + timedelta(days=1)).isoformat()}T00:10:00Z"


def day_report(sim: SimPeriod, key: OKPKey, day: date, seq: int, prev: str,
               tamper: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    period = Period("day", day.isoformat(), TZ)
    report = build_report(meta(key, period, issued_after(day)), seq=seq, prev_sha256=prev,
                          inventory=sim.inventory, base=sim.day_rows(day), evaluation=EVALUATION,
                          segment_digests=[], params=report_params())
    if tamper is not None:
        tamper(report)
    return report


def commit_day(outbox: Outbox, sim: SimPeriod, key: OKPKey, day: date,
               tamper: Callable[[dict[str, Any]], None] | None = None) -> OutboxItem:
    return outbox.commit_report(
        FACTORY, Period.day(day, TZ).slot(0),
        lambda seq, prev: day_report(sim, key, day, seq, prev, tamper),
        lambda payload: sign_compact(payload, key, Kind.REPORT),
    )

