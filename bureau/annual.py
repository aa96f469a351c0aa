"""The annual evaluation of a factory at the bureau: aggregate a year of daily reports, show the
coverage, evaluate the tier policy.

Only ACCEPTED daily reports with data count. Their hourly base measures are summed per device
and local day (never a ratio averaged) and the indicators are recomputed with `indicators.kpi`
and evaluated with `indicators.evaluate`, the same code the agent runs. A day with several
accepted revisions counts once, with its highest revision. A report whose base measures rest on
no received sample (a day the agent did not collect) is a day without data: it is shown as
`no_data` and never counted as a coverage day (the agent applies the same rule,
`agent.protocol.report.has_samples`).

Coverage is explicit: for every month of the period, the days with an accepted report, the days
with no report, the days whose accepted report has no data, and the days with only rejected or
pending-link reports. When the share of days with an accepted report is below the policy's
bound for the period or for any single month, every measured condition is insufficient_data
(its measured value is still shown): a month withheld must not hide inside a good year.

The chain section walks the year's daily reports with the other reports of the factory's one
chain between them (month and year reports, revisions: `bureau.evidence_export.load_chain`),
so a gap is a sequence number the bureau does not hold, never a month report or a revision.

`evaluate_year` is pure (no I/O apart from reading the policy files named in `PolicyFiles`),
so the offline verifier of an evidence folder runs exactly the same computation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pandas as pd

from agent.protocol.chain import ChainEntry, walk_chain
from agent.protocol.envelope import payload_sha256
from agent.protocol.report import base_frame, report_has_samples
from bureau.errors import BureauError
from bureau.store import ACCEPTED, PENDING_LINK, REJECTED, YearEntry
from indicators.baseline import improvement
from indicators.catalog import INDICATORS, IndicatorValue, Params
from indicators.columns import BASE_MEASURE_COLUMNS
from indicators.evaluate import (
    Evaluation,
    Policy,
    evaluate,
    json_safe,
    tier_outcome,
)
from indicators.kpi import compute
from indicators.measures import daily_measures
from indicators.policy import PolicyFileError, PolicyFiles

FORMAT = "tieragent-annual-evaluation/v1"
COVERAGE_REASON = "coverage_below_bound"
NO_DATA = "no_data"  # a day whose accepted report has no sample: not a coverage day
# Indicators shown month by month (trend table and charts of the evidence report).
KEY_INDICATORS: tuple[str, ...] = (
    "oee",
    "availability",
    "performance",
    "quality_ratio",
    "defect_rate",
    "energy_per_unit",
    "data_collection_rate",
    "realtime_rate",
    "networking_rate",
    "key_process_cnc_rate",
)
_PARAM_NAMES = frozenset(f.name for f in dataclasses.fields(Params))


class AnnualError(BureauError):
    """A user mistake or missing data; str() is one sentence for the console."""


@dataclass(frozen=True, slots=True)
class DayEntry:
    """One report as the evaluation sees it (payload None when unreadable or not needed): a
    daily report of the year, or, in the chain section, a report of any `kind`."""

    period_key: str
    state: str  # accepted | pending-link | rejected
    report_id: str | None
    seq: int | None
    kid: str | None
    revision: int
    payload_sha256: str | None
    prev_sha256: str | None
    reason: str | None
    payload: dict[str, Any] | None = dataclasses.field(default=None, repr=False, compare=False)
    jws: str | None = dataclasses.field(default=None, repr=False, compare=False)
    kind: str = "day"  # the period kind: day, month or year

    @classmethod
    def from_year_entry(cls, entry: YearEntry) -> DayEntry:
        return cls.from_parts(entry.period_key, entry.state, entry.reason, entry.payload, entry.jws)

    @classmethod
    def from_parts(
        cls,
        period_key: str,
        state: str,
        reason: str | None,
        payload: Mapping[str, Any] | None,
        jws: str | None,
        report_id: str | None = None,
        kind: str = "day",
    ) -> DayEntry:
        body = dict(payload) if payload is not None else None
        return cls(
            period_key=period_key,
            state=state,
            report_id=str(body["report_id"]) if body else report_id,
            seq=int(body["seq"]) if body else None,
            kid=str(body["kid"]) if body else None,
            revision=int(body.get("revision", 0)) if body else 0,
            payload_sha256=payload_sha256(jws) if jws else None,
            prev_sha256=str(body["prev_sha256"]) if body else None,
            reason=reason,
            payload=body,
            jws=jws,
            kind=str(body["period"]["kind"]) if body else kind,
        )


@dataclass(frozen=True)
class AnnualEvaluation:
    """The year's aggregate, coverage, chain and tier evaluation; `to_json` is its record."""

    factory_id: str
    enterprise_id: str
    year: int
    first_day: date
    last_day: date
    time_zone: str
    params: dict[str, Any]
    inputs: dict[str, str | None]
    coverage: dict[str, Any]
    chain: dict[str, Any]
    monthly: list[dict[str, Any]]
    indicators: dict[str, IndicatorValue]
    baseline: dict[str, Any]
    evaluation: Evaluation

    def to_json(self) -> dict[str, Any]:
        """Deterministic and JSON-safe (no NaN); the evidence folder stores exactly this."""
        return json_safe(
            {
                "format": FORMAT,
                "factory_id": self.factory_id,
                "enterprise_id": self.enterprise_id,
                "year": self.year,
                "period": {
                    "first_day": self.first_day.isoformat(),
                    "last_day": self.last_day.isoformat(),
                    "time_zone": self.time_zone,
                },
                "params": self.params,
                "inputs": self.inputs,
                "coverage": self.coverage,
                "chain": self.chain,
                "indicators": {k: v.to_json() for k, v in sorted(self.indicators.items())},
                "monthly": self.monthly,
                "baseline": self.baseline,
                "evaluation": self.evaluation.to_json(),
            }
        )


def year_days(year: int, through: date | None = None) -> tuple[date, date]:
    """First and last day of the evaluated period: the calendar year, cut at `through`."""
    first, last = date(year, 1, 1), date(year, 12, 31)
    if through is not None:
        if through.year != year or through < first:
            raise AnnualError(f"--through {through.isoformat()} is not a day of {year}.")
        last = through
    return first, last


def evaluate_year(
    factory_id: str,
    year: int,
    entries: Sequence[DayEntry],
    files: PolicyFiles,
    *,
    baseline_entries: Sequence[DayEntry] = (),
    baseline_year: int | None = None,
    through: date | None = None,
    overrides: Mapping[str, Any] | None = None,
    chain: Sequence[DayEntry] = (),
) -> AnnualEvaluation:
    """Evaluate `factory_id` over `year` (Jan 1 to `through`, default Dec 31) from its daily
    report entries. `overrides` replace report params (e.g. industry_code, province) before the
    policy's own params apply. `chain` holds the other stored reports of the factory's chain
    between the first and the last seq of the year (month and year reports, revisions, other
    years' days; entries already in `entries` may be repeated): the chain section walks them
    with the year's daily reports. Raises AnnualError when no accepted report lies in the
    period or a file is unusable."""
    if baseline_year is not None and baseline_year >= year:
        raise AnnualError(f"The baseline year {baseline_year} must lie before {year}.")
    try:
        loaded = files.load()
    except PolicyFileError as error:
        raise AnnualError(str(error)) from None
    policy, benchmarks, declarations = loaded.policy, loaded.benchmarks, loaded.declarations
    first, last = year_days(year, through)
    in_period = [e for e in entries if _day_in(e.period_key, first, last)]
    accepted = _latest_accepted(in_period)
    chosen = _with_data(accepted)
    if not chosen:
        without = f" with data ({len(accepted)} without)" if accepted else ""
        raise AnnualError(
            f"Factory {factory_id!r} has no accepted daily report{without} between {first} "
            f"and {last}."
        )
    latest = chosen[max(chosen)].payload
    assert latest is not None
    time_zone = str(latest["period"]["time_zone"])
    params = _params(latest, overrides)
    run_params = policy.params_over(Params(**params))
    inventory = pd.DataFrame(latest["inventory"])
    base = _daily_base(list(chosen.values()), time_zone)

    baseline_chosen = _chosen(
        [
            e
            for e in baseline_entries
            if baseline_year and e.period_key.startswith(f"{baseline_year}")
        ]
    )
    baseline_base = (
        _daily_base(list(baseline_chosen.values()), time_zone) if baseline_chosen else None
    )

    coverage = _coverage(
        in_period, chosen, set(accepted) - set(chosen), first, last,
        policy.coverage.min_day_share,
    )
    evaluation = evaluate(
        base,
        inventory,
        policy,
        benchmarks=benchmarks,
        declarations=declarations,
        params=run_params,
        baseline_base=baseline_base,
        coverage=coverage["share"],
    )
    if not coverage["ok"]:
        evaluation = _withhold_measured(evaluation, policy)
    indicators = compute(base, inventory, run_params)
    indicators.update(improvement(base, baseline_base, run_params))
    return AnnualEvaluation(
        factory_id=factory_id,
        enterprise_id=str(latest["enterprise_id"]),
        year=year,
        first_day=first,
        last_day=last,
        time_zone=time_zone,
        params=dataclasses.asdict(run_params),
        inputs=files.digests(),
        coverage=coverage,
        chain=_chain(entries, chain, chosen, first, last),
        monthly=_monthly(base, inventory, run_params, first, last),
        indicators=indicators,
        baseline={
            "year": baseline_year,
            "days": len(baseline_chosen),
            "used": baseline_base is not None,
        },
        evaluation=evaluation,
    )


# --- aggregation ---------------------------------------------------------------------------------


def _day_in(period_key: str, first: date, last: date) -> bool:
    try:
        day = date.fromisoformat(period_key)
    except ValueError:
        return False
    return first <= day <= last


def _chosen(entries: Sequence[DayEntry]) -> dict[str, DayEntry]:
    """The accepted report of each day that counts: its highest revision, if it has data."""
    return _with_data(_latest_accepted(entries))


def _with_data(accepted: Mapping[str, DayEntry]) -> dict[str, DayEntry]:
    """The days whose report rests on received samples (`report_has_samples`)."""
    return {
        day: entry
        for day, entry in accepted.items()
        if entry.payload is not None and report_has_samples(entry.payload)
    }


def _latest_accepted(entries: Sequence[DayEntry]) -> dict[str, DayEntry]:
    """The accepted report of each day; the highest revision when the day was revised."""
    chosen: dict[str, DayEntry] = {}
    for entry in entries:
        if entry.state != ACCEPTED or entry.payload is None:
            continue
        current = chosen.get(entry.period_key)
        if current is None or entry.revision > current.revision:
            chosen[entry.period_key] = entry
    return dict(sorted(chosen.items()))


def _params(report: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    params = {k: v for k, v in dict(report.get("params", {})).items() if k in _PARAM_NAMES}
    for key, value in (overrides or {}).items():
        if key not in _PARAM_NAMES:
            raise AnnualError(f"Unknown indicator parameter {key!r}.")
        params[key] = value
    return params


def _daily_base(entries: Sequence[DayEntry], time_zone: str) -> pd.DataFrame:
    """One frame of every report's base-measure rows, summed per device and local day."""
    rows: list[list[Any]] = []
    for entry in entries:
        assert entry.payload is not None
        member = entry.payload["base_measures"]
        if list(member["columns"]) != list(BASE_MEASURE_COLUMNS):
            raise AnnualError(f"Report {entry.report_id} has unexpected base-measure columns.")
        rows.extend(member["rows"])
    frame = base_frame({"columns": BASE_MEASURE_COLUMNS, "rows": rows})
    return daily_measures(frame, time_zone)


# --- coverage and chain --------------------------------------------------------------------------


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _coverage(
    entries: Sequence[DayEntry],
    chosen: Mapping[str, DayEntry],
    no_data: set[str],
    first: date,
    last: date,
    bound: float,
) -> dict[str, Any]:
    states: dict[str, set[str]] = {}
    for entry in entries:
        states.setdefault(entry.period_key, set()).add(entry.state)

    def status(day: str) -> str:
        if day in chosen:
            return ACCEPTED
        if day in no_data:
            return NO_DATA
        seen = states.get(day, set())
        if PENDING_LINK in seen:
            return PENDING_LINK
        if REJECTED in seen:
            return REJECTED
        return "missing"

    by_day = {d.isoformat(): status(d.isoformat()) for d in _days(first, last)}
    months: list[dict[str, Any]] = []
    for month in sorted({d[:7] for d in by_day}):
        days = {d: s for d, s in by_day.items() if d.startswith(month)}
        months.append(_tally(days, bound) | {"month": month})
    total = _tally(by_day, bound)
    ok = total["ok"] and all(m["ok"] for m in months)
    return total | {
        "min_day_share": bound,
        "ok": ok,
        "months": months,
        "months_below_bound": [m["month"] for m in months if not m["ok"]],
        "missing_days": [d for d, s in by_day.items() if s == "missing"],
        "no_data_days": [d for d, s in by_day.items() if s == NO_DATA],
        "rejected_days": [d for d, s in by_day.items() if s == REJECTED],
        "pending_link_days": [d for d, s in by_day.items() if s == PENDING_LINK],
    }


def _tally(days: Mapping[str, str], bound: float) -> dict[str, Any]:
    counts = {s: sum(1 for v in days.values() if v == s) for s in (ACCEPTED, "missing")}
    counts[REJECTED] = sum(1 for v in days.values() if v == REJECTED)
    counts[PENDING_LINK] = sum(1 for v in days.values() if v == PENDING_LINK)
    counts[NO_DATA] = sum(1 for v in days.values() if v == NO_DATA)
    share = counts[ACCEPTED] / len(days) if days else 0.0
    return {
        "days": len(days),
        "accepted": counts[ACCEPTED],
        "missing": counts["missing"],
        "no_data": counts[NO_DATA],
        "rejected": counts[REJECTED],
        "pending_link": counts[PENDING_LINK],
        "share": share,
        "ok": share >= bound,
    }


def _chain(
    entries: Sequence[DayEntry],
    chain: Sequence[DayEntry],
    chosen: Mapping[str, DayEntry],
    first: date,
    last: date,
) -> dict[str, Any]:
    """The year's stored reports and the chain's reports of any kind between them, in seq
    order with their link state; the seq gaps; the rejections."""
    unique: dict[str, DayEntry] = {}
    for entry in [*entries, *chain]:
        if entry.state != REJECTED and entry.seq is not None:
            unique.setdefault(entry.report_id or f"seq {entry.seq}", entry)
    stored = sorted(unique.values(), key=lambda e: int(e.seq or 0))
    used = {e.report_id for e in chosen.values()}
    links: list[dict[str, Any]] = []
    gaps: list[dict[str, int]] = []
    for link in walk_chain(
        [ChainEntry(int(e.seq or 0), e.payload_sha256, e.prev_sha256) for e in stored]
    ):
        entry = stored[link.index]
        if link.gap and link.previous_seq is not None:
            gaps.append({"after_seq": link.previous_seq, "next_seq": link.seq})
        links.append(
            {
                "seq": link.seq,
                "kind": entry.kind,
                "period_key": entry.period_key,
                "report_id": entry.report_id,
                "revision": entry.revision,
                "kid": entry.kid,
                "state": entry.state,
                "payload_sha256": entry.payload_sha256,
                "prev_sha256": entry.prev_sha256,
                "linked_to_previous": link.linked,
                "counted": entry.kind == "day"
                and entry.report_id in used
                and _day_in(entry.period_key, first, last),
            }
        )
    rejections = [
        {
            "period_key": e.period_key,
            "report_id": e.report_id,
            "seq": e.seq,
            "reason": e.reason,
            "payload_sha256": e.payload_sha256,
        }
        for e in entries
        if e.state == REJECTED
    ]
    return {"reports": links, "gaps": gaps, "rejections": rejections}


# --- evaluation ----------------------------------------------------------------------------------


def _withhold_measured(evaluation: Evaluation, policy: Policy) -> Evaluation:
    """Coverage below the bound: every measured condition becomes insufficient_data (the measured
    value stays), then the tier reached and the gaps are recomputed as `evaluate` does."""
    conditions = tuple(
        dataclasses.replace(c, status="insufficient_data", reason=COVERAGE_REASON)
        if c.source != "declared" and c.status != "insufficient_data"
        else c
        for c in evaluation.conditions
    )
    reached, next_tier, gaps = tier_outcome(policy, conditions)
    return dataclasses.replace(
        evaluation, conditions=conditions, tier_reached=reached, next_tier=next_tier, gaps=gaps
    )


def _monthly(
    base: pd.DataFrame, inventory: pd.DataFrame, params: Params, first: date, last: date
) -> list[dict[str, Any]]:
    """Key indicators of each month of the period, from that month's summed base measures."""
    stamps = pd.to_datetime(base["hour_start"], unit="s", utc=True).dt.tz_convert(params.time_zone)
    month_of = stamps.dt.strftime("%Y-%m").to_numpy()
    out: list[dict[str, Any]] = []
    for month in sorted({d.isoformat()[:7] for d in _days(first, last)}):
        rows = base[month_of == month]
        values = compute(rows, inventory, params) if len(rows) else {}
        out.append(
            {
                "month": month,
                "days_with_data": int(rows["hour_start"].nunique()),
                "indicators": {
                    key: (values[key].value if key in values else None) for key in KEY_INDICATORS
                },
            }
        )
    return out


def indicator_unit(key: str) -> str:
    return INDICATORS[key].unit if key in INDICATORS else ""
