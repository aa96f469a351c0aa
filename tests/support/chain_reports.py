"""One factory chain of every report kind: day, month and year periods and revisions, signed and
committed to an outbox the way the agent does (the outbox assigns seq and prev_sha256), for the
tests of chains that are more than day reports (issue 17)."""

from __future__ import annotations

import dataclasses
from typing import Any

from joserfc.jwk import OKPKey

from agent.outbox import Outbox, OutboxItem
from agent.protocol.envelope import Kind, sign_compact
from agent.protocol.merkle import ordered_digests
from agent.protocol.period import Period
from agent.protocol.report import build_report, report_id
from tests.support.reports import EVALUATION, FACTORY, TZ, inventory, meta, segments, synthetic_base


def commit(
    outbox: Outbox,
    key: OKPKey,
    kind: str,
    period_key: str,
    *,
    revision: int = 0,
    devices: int = 1,
    with_segments: bool = False,
) -> OutboxItem:
    """Sign the report of (`kind`, `period_key`, `revision`) as the next one of the chain.

    Its raw-data root covers `segments(period, devices)` when `with_segments`, else no
    segment (what an agent store without raw samples gives back)."""
    period = Period(kind, period_key, TZ)
    report_meta = meta(key, period, revision=revision)
    if revision:
        report_meta = dataclasses.replace(
            report_meta,
            supersedes=report_id(FACTORY, period, revision - 1),
            revision_reason="late counter data corrected",
        )
    digests = (
        [d for _, d in ordered_digests(segments(period, devices))] if with_segments else []
    )

    def build(seq: int, prev: str) -> dict[str, Any]:
        return build_report(
            report_meta,
            seq=seq,
            prev_sha256=prev,
            inventory=inventory(devices),
            base=synthetic_base(period, devices),
            evaluation=EVALUATION,
            segment_digests=digests,
        )

    def sign(payload: bytes) -> str:
        return sign_compact(payload, key, Kind.REPORT)

    return outbox.commit_report(FACTORY, period.slot(revision), build, sign)


# seq 1..7 of the chain: days, the February month report, a late year report of 2024 and a
# revision of Feb 27, in signing order. The year's day reports alone have seq 1, 2, 4, 6, 7.
MIXED: tuple[tuple[str, str, int], ...] = (
    ("day", "2025-02-27", 0),
    ("day", "2025-02-28", 0),
    ("month", "2025-02", 0),
    ("day", "2025-03-01", 0),
    ("year", "2024", 0),
    ("day", "2025-02-27", 1),
    ("day", "2025-03-02", 0),
)


def commit_mixed(outbox: Outbox, key: OKPKey, **options: Any) -> list[OutboxItem]:
    return [
        commit(outbox, key, kind, period_key, revision=revision, **options)
        for kind, period_key, revision in MIXED
    ]
