"""Fixtures of the annual-evaluation tests: a simulated period, delivered to a bureau."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from joserfc.jwk import OKPKey
from simdata import (
    BENCHMARKS,
    DECLARATIONS,
    FACTORY,
    POLICY,
    SimPeriod,
    commit_day,
    simulate,
)

from agent.outbox import Outbox
from agent.protocol.mqtt import report_topic
from bureau.evidence_export import export_evidence
from bureau.store import SqliteReportStore
from indicators.policy import PolicyFiles
from tests.support.bureau_receiver import start_bureau

TOPIC = report_topic(FACTORY)


@dataclass(frozen=True)
class Scenario:
    """Jan 1 - Feb 28 2025 at the bureau, plus ten baseline days of January 2024.

    Jan 10 withheld (never built). Feb 3 rejected (indicators tampered, so Feb 4 waits as
    pending-link). Feb 10 built but never delivered (a chain gap; Feb 11 pending-link).
    January: 30/31 accepted; February 24/28 (below 90 %); together 54/59 (above 90 %).
    """

    sim: SimPeriod
    baseline: SimPeriod
    db: Path | str  # the bureau database: a SQLite file (a PostgreSQL URL in test_coverage)
    key: OKPKey


# The bureau key that seals evidence folders (the receipts' key in a real bureau).
BUREAU_KEY = OKPKey.generate_key("Ed25519")
WITHHELD = {date(2025, 1, 10)}
REJECTED_DAY = date(2025, 2, 3)
UNDELIVERED = date(2025, 2, 10)
BASELINE_DAYS = 10
SHIFT_S = 366 * 86400  # 2025-01-01 -> 2024-01-01 (2024 is a leap year)


def _tamper(report: dict) -> None:
    report["indicators"]["oee"]["value"] = 0.99


def _shifted(sim: SimPeriod) -> SimPeriod:
    """The first ten days of the simulation relabelled as January 2024 (baseline year)."""
    base = sim.base.assign(hour_start=sim.base["hour_start"] - SHIFT_S)
    end = int(pd.Timestamp("2024-01-11", tz="Asia/Shanghai").timestamp())
    return SimPeriod(sim.factory, date(2024, 1, 1), BASELINE_DAYS, base[base["hour_start"] < end],
                     sim.inventory)


def deliver(bureau_receiver, item) -> None:  # type: ignore[no-untyped-def]
    reply = bureau_receiver.handle(TOPIC, item.jws.encode("ascii"))
    assert reply is not None


@pytest.fixture(scope="session")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    root = tmp_path_factory.mktemp("annual")
    sim = simulate(root / "history", date(2025, 1, 1), 59, seed=5)
    baseline = _shifted(sim)
    key = OKPKey.generate_key("Ed25519")
    bureau = start_bureau(root / "bureau.db", None, {FACTORY: key}, key=BUREAU_KEY)
    outbox = Outbox(root / "outbox.db")
    for day in baseline.all_days():
        deliver(bureau.receiver, commit_day(outbox, baseline, key, day))
    for day in sim.all_days():
        if day in WITHHELD:
            continue
        item = commit_day(outbox, sim, key, day, _tamper if day == REJECTED_DAY else None)
        if day != UNDELIVERED:
            deliver(bureau.receiver, item)
    bureau.receiver.stop()
    return Scenario(sim, baseline, root / "bureau.db", key)


@pytest.fixture(scope="session")
def evidence(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("evidence") / "2025"
    store = SqliteReportStore(scenario.db)
    export_evidence(store, FACTORY, 2025, out, PolicyFiles(POLICY, BENCHMARKS, DECLARATIONS),
                    baseline_year=2024, through=date(2025, 2, 28), bureau_key=BUREAU_KEY)
    store.close()
    return out


def day_range(first: date, days: int) -> list[date]:
    return [first + timedelta(days=n) for n in range(days)]


def open_store(path: Path) -> SqliteReportStore:
    return SqliteReportStore(path)
