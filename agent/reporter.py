"""From the agent's store to signed reports in the outbox.

Seals the period's raw data (agent.store.sealed: each local day once, when its first report
is built), reads the period's base measures, inventory and sealed raw segments from the
store, evaluates the tier policy, computes the segment digests, and builds, signs and
commits the report in one outbox transaction (agent.outbox).

Only what is true is signed:

- A period is built only once it has ended plus the grace for late data
    (`reporting.grace_s`); before that `PeriodNotOver` names the earliest local time.
- A period without any received sample is reported as such: coverage 0, every condition
    insufficient_data (agent.assess), and the bureau does not count it as a coverage day.
- A period that already has a report at this revision is not rebuilt: the outbox keeps the
    signed bytes and resends those. If the store's base measures for the period changed
    since, `PeriodDataChanged` says so and asks for a new revision with a reason. Its raw
    data cannot change: it is sealed, and a sample arriving later goes to the open segment
    of its receive time.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from joserfc.jwk import OKPKey

from agent import raw_segments
from agent.assess import params_for
from agent.config import FactoryConfig
from agent.errors import AgentError
from agent.outbox import Outbox, OutboxItem
from agent.protocol.envelope import (
    Kind,
    public_jwk,
    sign_compact,
    thumbprint,
    unverified_payload,
)
from agent.protocol.keys import PRIVATE_NAME, load_private_key
from agent.protocol.merkle import SEGMENTING_RULE_V1, Segment
from agent.protocol.period import Period, PeriodError
from agent.protocol.report import (
    ReportMeta,
    build_report,
    build_report_payload,
    has_samples,
    report_id,
)
from agent.protocol.segment_codec import SealedSegment
from agent.report_inputs import InputPool, PeriodInputs, long_lived_frozen, period_inputs
from agent.store.sealed import SealPlan
from agent.store.store import Store
from indicators.policy import PolicySet, file_sha256

# From this many days on, `build_period_reports` computes days ahead in worker processes
# (starting them costs about a second).
POOL_MIN_DAYS = 20


def agent_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tieragent")
    except PackageNotFoundError:
        return "0+unknown"


def segments_of_report(
    store: Store,
) -> Callable[[Mapping[str, Any]], Iterable[Segment | SealedSegment]]:
    """For evidence export: the raw segments behind a report, as sealed when it was built;
    for a report of the first rule (signed before sealing) recomputed from the live store."""

    def segments_for(report: Mapping[str, Any]) -> Iterable[Segment | SealedSegment]:
        start, end = float(report["period"]["start"]), float(report["period"]["end"])
        if report["raw_data"]["segmenting_rule"] == SEGMENTING_RULE_V1:
            return list(raw_segments.segments(store.raw_samples(start, end)))
        return store.sealed_segments(start, end)

    return segments_for


def period_days(period: Period) -> list[tuple[int, int]]:
    """[start, end) of each local day of `period`: the units raw data is sealed in."""
    if period.kind == "day":
        return [period.bounds()]
    end = period.bounds()[1]
    days: list[tuple[int, int]] = []
    day = period.first_day()
    while True:
        bounds = Period.day(day, period.time_zone).bounds()
        if bounds[0] >= end:
            return days
        days.append(bounds)
        day += timedelta(days=1)


def seal_period(store: Store, period: Period, plans: Sequence[SealPlan] = ()) -> int:
    """Seal the raw segments of the period's days not sealed yet, from `plans` where they
    still hold; the number sealed otherwise."""
    return store.seal_days(period_days(period), plans)


class PeriodNotOver(AgentError):
    """A report asked for a period that has not ended plus the grace for late data."""


class PeriodDataChanged(AgentError):
    """The period already has a report at this revision and the store's data changed since."""


class RevisionReasonMissing(AgentError):
    """A correction (revision > 0) without a reason."""


@dataclass(frozen=True)
class ReportContext:
    config: FactoryConfig
    config_path: Path
    store: Store
    outbox: Outbox
    key_dir: Path
    policy: PolicySet
    bureau_id: str = "bureau"
    passphrase: bytes | None = None
    now: Callable[[], float] = time.time  # the clock that decides whether a period is over


@dataclass(frozen=True)
class PeriodReport:
    """What `build_period_report` did: `created` False when the period already had this
    report at this revision and the store's data is unchanged (the queued one is returned)."""

    item: OutboxItem
    created: bool
    has_data: bool


def local_time(epoch_s: float, time_zone: str) -> str:
    """'2026-11-22 00:15 CST (Asia/Shanghai)': a moment as the factory's people read it."""
    moment = datetime.fromtimestamp(epoch_s, ZoneInfo(time_zone))
    return f"{moment:%Y-%m-%d %H:%M %Z} ({time_zone})"


def buildable_from(period: Period, grace_s: float) -> float:
    """The earliest epoch second at which `period`'s report may be built: its end + grace."""
    return period.buildable_from(grace_s)


def check_period_over(period: Period, grace_s: float, now: float) -> None:
    """Raise PeriodNotOver unless `period` ended at least `grace_s` before `now`."""
    ready = buildable_from(period, grace_s)
    if now < ready:
        raise PeriodNotOver(
            f"{period.kind} {period.key} is not over: its report can be built from "
            f"{local_time(ready, period.time_zone)} on, when the period has ended plus "
            f"{grace_s / 60:g} min of grace for late data (reporting.grace_s)."
        )


def build_period_report(
    context: ReportContext, key: str, *, revision: int = 0, reason: str | None = None
) -> PeriodReport:
    """Build, sign and commit the report of one period (day, month or year), once it is over.

    Raises PeriodNotOver, PeriodDataChanged (the queued report at this revision no longer
    matches the store) or RevisionReasonMissing (revision > 0 without `reason`).
    """
    return _build(context, _Shared.load(context), key, revision=revision, reason=reason)


def build_period_reports(
    context: ReportContext,
    keys: Sequence[str],
    progress: Callable[[str, PeriodReport], None] | None = None,
    *,
    workers: int | None = None,
) -> list[PeriodReport]:
    """`build_period_report` of every key in order (revision 0), sharing what they can: the
    signing key, file digests and inventory are read once, and day reports read their base
    measures a month at a time. The reports are the same bytes as one by one (apart from
    `issued_at`), each committed in its own transaction.

    From POOL_MIN_DAYS days on, the measured part of each day (evaluation, indicators,
    segment digests) is computed `workers` days ahead in worker processes (default: one per
    core, at most two; 0 for none), while this process signs and commits in order.

    `progress(key, report)` is called after each. The first error stops the run and is
    raised; the reports committed before it stay.
    """
    with long_lived_frozen():
        return _build_all(context, keys, progress, workers)


def _build_all(
    context: ReportContext, keys: Sequence[str],
    progress: Callable[[str, PeriodReport], None] | None, workers: int | None,
) -> list[PeriodReport]:
    shared = _Shared.load(context)
    zone = context.config.factory.time_zone
    days = [Period.parse(key, zone).bounds() for key in keys if _is_day(key, zone)]
    window = _BaseWindow(context.store, max((end for _, end in days), default=0.0))
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    pool = None
    if workers > 0 and len(days) >= POOL_MIN_DAYS:
        pool = InputPool(
            context.store.path, context.config, context.policy, shared.inventory, workers
        )
    try:
        ahead = iter(pool.inputs(days)) if pool is not None else None
        built: list[PeriodReport] = []
        for key in keys:
            inputs = next(ahead) if ahead is not None and _is_day(key, zone) else None
            report = _build(
                context, shared, key, revision=0, reason=None, window=window, inputs=inputs
            )
            built.append(report)
            if progress is not None:
                progress(key, report)
        return built
    finally:
        if pool is not None:
            pool.close()


def _is_day(key: str, zone: str) -> bool:
    try:
        return Period.parse(key, zone).kind == "day"
    except PeriodError:
        return False  # raised again, in order, when its turn comes


@dataclass(frozen=True)
class _Shared:
    """What every report of one run has in common, read once."""

    signing_key: OKPKey
    kid: str
    agent_version: str
    config_sha256: str
    policy_sha256: str
    params: dict[str, Any]
    inventory: pd.DataFrame

    @classmethod
    def load(cls, context: ReportContext) -> _Shared:
        signing_key = load_private_key(context.key_dir / PRIVATE_NAME, context.passphrase)
        return cls(
            signing_key=signing_key,
            kid=thumbprint(public_jwk(signing_key)),
            agent_version=agent_version(),
            config_sha256=file_sha256(context.config_path),
            policy_sha256=file_sha256(context.policy.files.policy),
            # The report carries the parameters it was computed with (industry code and
            # province pick the benchmark rows at the bureau), so anyone can recompute it.
            params=dataclasses.asdict(params_for(context.config, context.policy.policy)),
            inventory=context.store.inventory(),
        )


class _BaseWindow:
    """Base measures of consecutive days, read from the store a month at a time; a day's
    slice is the frame `Store.base_measures` would give for it (a day without rows is read
    on its own, so that even its empty frame's column types are the store's)."""

    SPAN_S = 32 * 86400.0

    def __init__(self, store: Store, horizon: float) -> None:
        self.store = store
        self.horizon = horizon  # the end of the last day asked for
        self.start = self.end = 0.0
        self.frame: pd.DataFrame | None = None
        self.hours = np.zeros(0, dtype=np.int64)

    def day(self, start: float, end: float) -> pd.DataFrame:
        if self.frame is None or start < self.start or end > self.end:
            self.start, self.end = start, max(end, min(start + self.SPAN_S, self.horizon))
            self.frame = self.store.base_measures(self.start, self.end)
            self.hours = self.frame["hour_start"].to_numpy(np.int64)
        rows = (self.hours >= start) & (self.hours < end)
        if not rows.any():
            return self.store.base_measures(start, end)
        return self.frame.loc[rows].reset_index(drop=True)


def _build(
    context: ReportContext, shared: _Shared, key: str, *, revision: int, reason: str | None,
    window: _BaseWindow | None = None, inputs: PeriodInputs | None = None,
) -> PeriodReport:
    config = context.config
    period = Period.parse(key, config.factory.time_zone)
    check_period_over(period, config.report_grace_s, context.now())
    reason = reason.strip() if reason else None
    if revision > 0 and not reason:
        raise RevisionReasonMissing(
            f"revision {revision} of {period.kind} {period.key} is a correction: give --reason "
            "with what changed and why."
        )
    factory_id = config.factory.factory_id
    queued = context.outbox.find(factory_id, period.slot(revision))
    start, end = period.bounds()
    if inputs is None and period.kind == "day":
        inputs = _day_inputs(context, shared, period, window)
    # Inputs computed ahead (by a worker, or just above) stand if the period's days are
    # sealed as planned (or were sealed already); otherwise they are computed again here.
    if seal_period(context.store, period, inputs.seals if inputs else ()) or inputs is None:
        if window is not None and period.kind == "day":
            base = window.day(start, end)
        else:
            base = context.store.base_measures(start, end)
        inputs = period_inputs(
            config, context.policy, shared.inventory, base,
            lambda: context.store.sealed_digests(start, end),
        )
    base = inputs.base
    meta = ReportMeta(
        factory_id=factory_id,
        enterprise_id=config.factory.enterprise_id,
        bureau_id=context.bureau_id,
        agent_version=shared.agent_version,
        kid=shared.kid,
        config_sha256=shared.config_sha256,
        policy_sha256=shared.policy_sha256,
        period=period,
        issued_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(context.now())),
        revision=revision,
        supersedes=_superseded(context.outbox, factory_id, period, revision),
        revision_reason=reason if revision > 0 else None,
    )
    report_args: dict[str, Any] = {
        "inventory": shared.inventory,
        "base": base,
        "evaluation": inputs.evaluation,
        "segment_digests": inputs.digests,
        "params": shared.params,
        "indicators": inputs.indicators,
        # What the agent saw go wrong in the period's signals (agent.derive.issues).
        "data_quality": {"signal_issues": context.store.signal_issues(start, end)},
    }
    with_data = has_samples(base)
    if queued is not None:
        _check_unchanged(queued, meta, report_args, context.outbox)
        return PeriodReport(queued, created=False, has_data=with_data)
    item = commit_signed_report(
        context.outbox, meta, shared.signing_key, merkle_root=inputs.merkle_root, **report_args
    )
    return PeriodReport(item, created=True, has_data=with_data)


def _day_inputs(
    context: ReportContext, shared: _Shared, period: Period, window: _BaseWindow | None
) -> PeriodInputs:
    """A day's inputs planned as a worker plans them (agent.report_inputs): its segments
    encoded once, their digests kept from the plan rather than read back once sealed."""
    start, end = period.bounds()
    plans = context.store.plan_seals([(start, end)])
    base = window.day(start, end) if window is not None else context.store.base_measures(start, end)
    inputs = period_inputs(
        context.config, context.policy, shared.inventory, base,
        lambda: context.store.sealed_digests(start, end, plans),
    )
    return dataclasses.replace(inputs, seals=tuple(plans))


def _superseded(outbox: Outbox, factory_id: str, period: Period, revision: int) -> str | None:
    """The report id of the period's highest queued revision below `revision`."""
    for earlier in range(revision - 1, -1, -1):
        if outbox.find(factory_id, period.slot(earlier)) is not None:
            return report_id(factory_id, period, earlier)
    return None


def _next_revision(outbox: Outbox, meta: ReportMeta) -> int:
    """The lowest revision above `meta.revision` that the period has no report for."""
    revision = meta.revision + 1
    while outbox.find(meta.factory_id, meta.period.slot(revision)) is not None:
        revision += 1
    return revision


def _check_unchanged(
    queued: OutboxItem, meta: ReportMeta, report_args: dict[str, Any], outbox: Outbox
) -> None:
    """Raise PeriodDataChanged when the report the store gives now differs from the queued
    one in its base measures or its raw-data Merkle root. A report of the first segmenting
    rule (signed before sealing) is compared on its base measures only: its root is of
    another rule than the one a build gives now."""
    old = unverified_payload(queued.jws, Kind.REPORT)
    new = build_report(
        meta, seq=int(old["seq"]), prev_sha256=str(old["prev_sha256"]), **report_args
    )
    members = [("base measures", "base_measures")]
    if old["raw_data"]["segmenting_rule"] != SEGMENTING_RULE_V1:
        members.append(("raw data", "raw_data"))
    changed = [what for what, member in members if new[member] != old[member]]
    if changed:
        period = meta.period
        raise PeriodDataChanged(
            f"{period.kind} {period.key} already has report {queued.report_id} (revision "
            f"{meta.revision}, seq {queued.seq}, {queued.state}), and the store's "
            f"{' and '.join(changed)} for it changed since: build a correction with "
            f"--revision {_next_revision(outbox, meta)} --reason \"<what changed and why>\"."
        )


def commit_signed_report(
    outbox: Outbox,
    meta: ReportMeta,
    signing_key: OKPKey,
    *,
    inventory: pd.DataFrame,
    base: pd.DataFrame,
    evaluation: Mapping[str, Any],
    segment_digests: Sequence[bytes],
    params: Mapping[str, Any] | None = None,
    indicators: Mapping[str, Any] | None = None,
    merkle_root: bytes | None = None,
    data_quality: Mapping[str, Any] | None = None,
) -> OutboxItem:
    """Build, sign and commit the report `meta` describes, once per period and revision: the
    outbox assigns seq and prev_sha256 inside its transaction, so a rebuild is not re-signed.
    The canonical bytes made while building are the ones signed (no second canonicalisation).
    """

    def build(seq: int, prev: str) -> tuple[dict[str, Any], bytes]:
        return build_report_payload(
            meta,
            seq=seq,
            prev_sha256=prev,
            inventory=inventory,
            base=base,
            evaluation=evaluation,
            segment_digests=segment_digests,
            params=params,
            indicators=indicators,
            merkle_root=merkle_root,
            data_quality=data_quality,
        )

    return outbox.commit_payload(
        meta.factory_id,
        meta.period.slot(meta.revision),
        build,
        lambda payload: sign_compact(payload, signing_key, Kind.REPORT),
    )


def days_between(first: date, last: date) -> list[str]:
    """Every local day from first to last inclusive, as 'YYYY-MM-DD'."""
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
