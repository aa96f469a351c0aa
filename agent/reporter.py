"""From the agent's store to signed reports in the outbox.

Reads a period's base measures, inventory and raw samples from the store, evaluates the
tier policy, computes the raw-data segment digests, and builds, signs and commits the
report in one outbox transaction (agent.outbox).

Only what is true is signed:

- A period is built only once it has ended plus the grace for late data
    (`collection.report_grace_s`); before that `PeriodNotOver` names the earliest local time.
- A period without any received sample is reported as such: coverage 0, every condition
    insufficient_data (agent.assess), and the bureau does not count it as a coverage day.
- A period that already has a report at this revision is not rebuilt: the outbox keeps the
    signed bytes and resends those. If the store's data for the period changed since (base
    measures or raw-data Merkle root), `PeriodDataChanged` says so and asks for a new
    revision with a reason.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from joserfc.jwk import OKPKey

from agent.assess import assess, params_for
from agent.config import FactoryConfig
from agent.errors import AgentError
from agent.outbox import Outbox, OutboxItem
from agent.protocol.envelope import (
    Kind,
    canonical_bytes,
    public_jwk,
    sign_compact,
    thumbprint,
    unverified_payload,
)
from agent.protocol.keys import PRIVATE_NAME, load_private_key
from agent.protocol.merkle import RECORD, Segment, leaf_hash, segment_header
from agent.protocol.period import Period
from agent.protocol.report import ReportMeta, build_report, has_samples, report_id
from agent.store.store import Store
from indicators.catalog import BASELINE_INDICATORS, INDICATORS
from indicators.policy import PolicySet, file_sha256
from indicators.vocabulary import Q_BAD, Q_GOOD, QUALITY_NAMES


def agent_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tieragent")
    except PackageNotFoundError:
        return "0+unknown"


def segments(raw: pd.DataFrame) -> Iterator[Segment]:
    """Raw samples grouped into (device, signal, UTC hour) segments (agent.protocol.merkle)."""
    if raw.empty:
        return
    hour = (raw["source_ts"].to_numpy(np.float64) // 3600).astype(np.int64) * 3600
    frame = raw.assign(hour_start=hour)
    for keys, group in frame.groupby(["device_id", "signal_id", "hour_start"], sort=True):
        device_id, signal_id, hour_start = cast(tuple[str, str, int], keys)
        rows = tuple(
            (
                float(s), float(r), str(signal_id), _plain(v),
                QUALITY_NAMES.get(int(q), QUALITY_NAMES[Q_BAD]),
            )
            for s, r, v, q in zip(
                group["source_ts"], group["received_ts"], group["value"], group["quality"],
                strict=True,
            )
        )
        yield Segment(str(device_id), str(signal_id), int(hour_start), rows)


def _plain(value: Any) -> Any:
    """Numpy scalars to plain Python values for canonical JSON."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def segment_digests(raw: pd.DataFrame) -> list[bytes]:
    """Leaf hashes of every segment of `raw`, in leaf order; vectorised.

    Produces exactly `segment_digest(segment)` for each segment of `segments(raw)` (a test
    holds the two to the same bytes) at a fraction of the cost.
    """
    if raw.empty:
        return []
    source_ts = raw["source_ts"].to_numpy(np.float64)
    received_ts = raw["received_ts"].to_numpy(np.float64)
    hour = (source_ts // 3600).astype(np.int64) * 3600
    devices = pd.Categorical(raw["device_id"].astype(str))
    signals = pd.Categorical(raw["signal_id"].astype(str))
    device_codes = np.asarray(devices.codes)
    signal_codes = np.asarray(signals.codes)
    values = pd.to_numeric(raw["value"], errors="coerce").to_numpy(np.float64)
    non_numeric = np.asarray(raw["value"].map(lambda v: not isinstance(v, int | float | np.number)))
    order = np.lexsort((received_ts, source_ts, signal_codes, device_codes, hour))
    records = np.zeros(len(order), dtype=RECORD)
    records["source_ts"] = source_ts[order]
    records["received_ts"] = received_ts[order]
    records["value"] = np.where(non_numeric, np.nan, values)[order]
    records["q"] = raw["quality"].to_numpy(np.int64)[order].clip(Q_GOOD, Q_BAD)
    keys = np.stack([hour[order], device_codes[order], signal_codes[order]], axis=1)
    starts = np.flatnonzero(np.r_[True, np.any(keys[1:] != keys[:-1], axis=1)])
    ends = np.r_[starts[1:], len(order)]
    sorted_non_numeric = non_numeric[order]
    device_names = np.asarray(devices.categories, dtype=object)
    signal_names = np.asarray(signals.categories, dtype=object)
    raw_values = raw["value"].to_numpy(object)[order]
    digests: list[bytes] = []
    for first, last in zip(starts.tolist(), ends.tolist(), strict=True):
        hour_start, device_code, signal_code = keys[first]
        data = segment_header(
            str(device_names[device_code]), str(signal_names[signal_code]), int(hour_start)
        ) + records[first:last].tobytes()
        if sorted_non_numeric[first:last].any():
            data += canonical_bytes([_plain(v) for v in raw_values[first:last]])
        digests.append(leaf_hash(data))
    return digests


def segments_of_report(store: Store) -> Callable[[Mapping[str, Any]], Iterable[Segment]]:
    """For evidence export: the raw segments behind a report, read back from the store."""

    def segments_for(report: Mapping[str, Any]) -> Iterable[Segment]:
        start, end = float(report["period"]["start"]), float(report["period"]["end"])
        return list(segments(store.raw_samples(start, end)))

    return segments_for


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
    return period.bounds()[1] + grace_s


def check_period_over(period: Period, grace_s: float, now: float) -> None:
    """Raise PeriodNotOver unless `period` ended at least `grace_s` before `now`."""
    ready = buildable_from(period, grace_s)
    if now < ready:
        raise PeriodNotOver(
            f"{period.kind} {period.key} is not over: its report can be built from "
            f"{local_time(ready, period.time_zone)} on, when the period has ended plus "
            f"{grace_s / 60:g} min of grace for late data (collection.report_grace_s)."
        )


def build_period_report(
    context: ReportContext, key: str, *, revision: int = 0, reason: str | None = None
) -> PeriodReport:
    """Build, sign and commit the report of one period (day, month or year), once it is over.

    Raises PeriodNotOver, PeriodDataChanged (the queued report at this revision no longer
    matches the store) or RevisionReasonMissing (revision > 0 without `reason`).
    """
    config = context.config
    period = Period.parse(key, config.factory.time_zone)
    check_period_over(period, config.collection.report_grace_s, context.now())
    reason = reason.strip() if reason else None
    if revision > 0 and not reason:
        raise RevisionReasonMissing(
            f"revision {revision} of {period.kind} {period.key} is a correction: give --reason "
            "with what changed and why."
        )
    factory_id = config.factory.factory_id
    queued = context.outbox.find(factory_id, period.slot(revision))
    start, end = period.bounds()
    base = context.store.base_measures(start, end)
    inventory = context.store.inventory()
    assessed = assess(config, base, inventory, context.policy)
    evaluation = assessed.to_json()
    # The evaluation computed the factory's indicators from these base measures already.
    factory_scope = assessed.indicators.get("factory")
    indicators = (
        {
            key: value.to_json()
            for key, value in sorted(factory_scope.items())
            if key in INDICATORS and key not in BASELINE_INDICATORS  # a report has no baseline
        }
        if factory_scope is not None
        else None
    )
    # The report carries the parameters it was computed with (industry code and province
    # pick the benchmark rows at the bureau), so anyone can recompute it from the report.
    params = dataclasses.asdict(params_for(config, context.policy.policy))
    raw = context.store.raw_samples(start, end)
    digests = segment_digests(raw)
    signing_key = load_private_key(context.key_dir / PRIVATE_NAME, context.passphrase)
    meta = ReportMeta(
        factory_id=factory_id,
        enterprise_id=config.factory.enterprise_id,
        bureau_id=context.bureau_id,
        agent_version=agent_version(),
        kid=thumbprint(public_jwk(signing_key)),
        config_sha256=file_sha256(context.config_path),
        policy_sha256=file_sha256(context.policy.files.policy),
        period=period,
        issued_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        revision=revision,
        supersedes=_superseded(context.outbox, factory_id, period, revision),
        revision_reason=reason if revision > 0 else None,
    )
    report_args: dict[str, Any] = {
        "inventory": inventory,
        "base": base,
        "evaluation": evaluation,
        "segment_digests": digests,
        "params": params,
        "indicators": indicators,
    }
    with_data = has_samples(base)
    if queued is not None:
        _check_unchanged(queued, meta, report_args, context.outbox)
        return PeriodReport(queued, created=False, has_data=with_data)
    item = commit_signed_report(context.outbox, meta, signing_key, **report_args)
    return PeriodReport(item, created=True, has_data=with_data)


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
    one in its base measures or its raw-data Merkle root."""
    old = unverified_payload(queued.jws, Kind.REPORT)
    new = build_report(
        meta, seq=int(old["seq"]), prev_sha256=str(old["prev_sha256"]), **report_args
    )
    changed = [
        what
        for what, member in (("base measures", "base_measures"), ("raw data", "raw_data"))
        if new[member] != old[member]
    ]
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
) -> OutboxItem:
    """Build, sign and commit the report `meta` describes, once per period and revision: the
    outbox assigns seq and prev_sha256 inside its transaction, so a rebuild is not re-signed."""

    def build(seq: int, prev: str) -> dict[str, Any]:
        return build_report(
            meta,
            seq=seq,
            prev_sha256=prev,
            inventory=inventory,
            base=base,
            evaluation=evaluation,
            segment_digests=segment_digests,
            params=params,
            indicators=indicators,
        )

    return outbox.commit_report(
        meta.factory_id,
        meta.period.slot(meta.revision),
        build,
        lambda payload: sign_compact(payload, signing_key, Kind.REPORT),
    )


def days_between(first: date, last: date) -> list[str]:
    """Every local day from first to last inclusive, as 'YYYY-MM-DD'."""
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
