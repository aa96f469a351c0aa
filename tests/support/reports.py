"""Synthetic reports for the delivery, bureau and annual tests and bench/delivery.py: an
inventory, hourly base measures consistent with the time-model identities, raw segments,
report metadata and signed reports committed to an outbox.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from joserfc.jwk import OKPKey

from agent.outbox import Outbox, OutboxItem
from agent.protocol.envelope import Kind, public_jwk, sign_compact, thumbprint
from agent.protocol.merkle import Segment, ordered_digests
from agent.protocol.period import Period
from agent.protocol.report import ReportMeta, build_report
from indicators.columns import BASE_MEASURE_COLUMNS, COUNT_COLUMNS, INVENTORY_COLUMNS

FACTORY = "demo-tj-001"
BUREAU = "bureau-tj"
TZ = "Asia/Shanghai"


def inventory(devices: int = 3) -> pd.DataFrame:
    rows = []
    for i in range(devices):
        rows.append(
            {
                "device_id": f"m{i}",
                "line": "L1",
                "process_step": f"op{i}",
                "key_process": i % 2 == 0,
                "kind": "cnc" if i % 2 == 0 else "manual",
                "digital": i % 2 == 0,
                "connection": "opcua" if i % 2 == 0 else "none",
            }
        )
    return pd.DataFrame(rows, columns=list(INVENTORY_COLUMNS))


def synthetic_base(period: Period, devices: int = 3, seed: int = 1) -> pd.DataFrame:
    """Hourly base measures over a period, consistent with the time-model identities."""
    rng = np.random.default_rng(seed)
    start, end = period.bounds()
    rows = []
    for i in range(devices):
        for hour in range(start, end, 3600):
            pdt = float(rng.choice([0.0, 600.0]))
            apt = float(rng.integers(1800, 3000 - int(pdt)))
            asut = float(rng.integers(0, 200))
            adet = float(rng.integers(0, 200))
            unk = float(rng.integers(0, 20))
            adot = 3600.0 - pdt - apt - asut - adet - unk
            produced = int(apt // 30)
            scrap = int(rng.integers(0, 3))
            expected = 720
            received = int(expected - rng.integers(0, 10))
            rows.append(
                [
                    f"m{i}",
                    hour,
                    3600.0,
                    pdt,
                    apt,
                    asut,
                    adet,
                    adot,
                    unk,
                    apt * 0.9,
                    produced * 28.5,
                    produced,
                    produced - scrap,
                    scrap,
                    0,
                    int(adet > 100),
                    int(adet > 150),
                    expected,
                    received,
                    received - 2,
                    received,
                    1,
                    round(float(rng.uniform(1, 5)), 3),
                ]
            )
    frame = pd.DataFrame(rows, columns=list(BASE_MEASURE_COLUMNS))
    for column in COUNT_COLUMNS:
        frame[column] = frame[column].astype("int64")
    return frame


def segments(period: Period, devices: int = 2, seed: int = 1) -> list[Segment]:
    """Raw segments (device, signal, hour) with a few samples each."""
    rng = np.random.default_rng(seed)
    start, end = period.bounds()
    result = []
    for i in range(devices):
        for hour in range(start, end, 3600):
            for signal_id in ("state", "good"):
                samples = tuple(
                    (
                        float(hour + k * 600),
                        float(hour + k * 600 + 0.25),
                        signal_id,
                        int(rng.integers(0, 100)),
                        "good",
                    )
                    for k in range(3)
                )
                result.append(Segment(f"m{i}", signal_id, hour, samples))
    return result


def day(n: int) -> Period:
    return Period("day", f"2025-03-{n:02d}", TZ)


EVALUATION: dict[str, Any] = {"tier_reached": None, "conditions": [], "gaps": []}


def meta(
    key: OKPKey, period: Period, factory: str = FACTORY, revision: int = 0, bureau: str = BUREAU
) -> ReportMeta:
    return ReportMeta(
        factory_id=factory,
        enterprise_id="91120000XXXXXXXX",
        bureau_id=bureau,
        agent_version="0.1.0",
        kid=thumbprint(public_jwk(key)),
        config_sha256="a" * 64,
        policy_sha256="b" * 64,
        period=period,
        issued_at="2025-03-02T00:05:00Z",
        revision=revision,
    )


def make_report(
    key: OKPKey,
    period: Period,
    seq: int,
    prev: str,
    *,
    factory: str = FACTORY,
    devices: int = 2,
    **overrides: Any,
) -> dict[str, Any]:
    digests = [d for _, d in ordered_digests(segments(period, devices))]
    report = build_report(
        meta(key, period, factory),
        seq=seq,
        prev_sha256=prev,
        inventory=inventory(devices),
        base=synthetic_base(period, devices),
        evaluation=EVALUATION,
        segment_digests=digests,
    )
    report.update(overrides)
    return report


def commit_days(
    outbox: Outbox, key: OKPKey, days: range, factory: str = FACTORY, devices: int = 2
) -> list[OutboxItem]:
    def sign(payload: bytes) -> str:
        return sign_compact(payload, key, Kind.REPORT)

    items = []
    for n in days:
        period = day(n)

        def build(seq: int, prev: str, period: Period = period) -> dict[str, Any]:
            return make_report(key, period, seq, prev, factory=factory, devices=devices)

        items.append(outbox.commit_report(factory, period.slot(0), build, sign))
    return items


def commit_nth_day(outbox: Outbox, key: OKPKey, n: int, devices: int = 1) -> OutboxItem:
    """The report of day 2024-01-01 + n (one device: about 13 KB signed): for runs of more
    reports than `commit_days`'s March has days."""
    period = Period("day", (date(2024, 1, 1) + timedelta(days=n)).isoformat(), TZ)

    def build(seq: int, prev: str) -> dict[str, Any]:
        return make_report(key, period, seq, prev, devices=devices)

    return outbox.commit_report(
        FACTORY, period.slot(0), build, lambda payload: sign_compact(payload, key, Kind.REPORT)
    )
