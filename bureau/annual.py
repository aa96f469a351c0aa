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
from datetime import date
from typing import Any, Protocol

import pandas as pd

from agent.protocol.envelope import payload_sha256
from agent.protocol.report import base_frame, report_has_samples
from bureau.annual_sections import chain_section, coverage_section, day_in, period_days
from bureau.errors import BureauError
from bureau.store import ACCEPTED, YearEntry
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


class StoredColumns(Protocol):
    """A stored report's metadata columns (bureau.store.StoredReport, a measures-table
    ReportMeta)."""

    @property
    def report_id(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def period_kind(self) -> str: ...
    @property
    def period_key(self) -> str: ...
    @property
    def revision(self) -> int: ...
    @property
    def kid(self) -> str: ...
    @property
    def payload_sha256(self) -> str: ...
    @property
    def prev_sha256(self) -> str: ...
    @property
    def state(self) -> str: ...


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
    # Whether the report rests on a received sample, when known without its payload (the
    # measures table, bureau.measures_table); None: decided from `payload`.
    has_samples: bool | None = None

    @property
    def readable(self) -> bool:
        return self.payload is not None or self.has_samples is not None

    @classmethod
    def from_year_entry(cls, entry: YearEntry) -> DayEntry:
        return cls.from_parts(entry.period_key, entry.state, entry.reason, entry.payload, entry.jws)

    @classmethod
    def from_columns(
        cls, row: StoredColumns, *, has_samples: bool | None = None, jws: str | None = None
    ) -> DayEntry:
        """A stored report from its metadata columns, its payload not decoded (the chain
        walk and the column evaluation); `jws` kept when the caller read it anyway."""
        return cls(
            period_key=row.period_key,
            state=row.state,
            report_id=row.report_id,
            seq=row.seq,
            kid=row.kid,
            revision=row.revision,
            payload_sha256=row.payload_sha256,
            prev_sha256=row.prev_sha256,
            reason=None,
            jws=jws,
            kind=row.period_kind,
            has_samples=has_samples,
        )

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
    measures: MeasureSource | None = None,
) -> AnnualEvaluation:
    """Evaluate `factory_id` over `year` (Jan 1 to `through`, default Dec 31) from its daily
    report entries. `overrides` replace report params (e.g. industry_code, province) before the
    policy's own params apply. `chain` holds the other stored reports of the factory's chain
    between the first and the last seq of the year (month and year reports, revisions, other
    years' days; entries already in `entries` may be repeated): the chain section walks them
    with the year's daily reports. `measures`: where the chosen reports' payload and summed
    base measures come from when the entries carry no payload (the bureau's measures table);
    by default, from each entry's payload. Either gives the same evaluation, byte for byte
    (tests/annual/test_measures_table.py). Raises AnnualError when no accepted report lies in
    the period or a file is unusable."""
    source = measures or _FROM_PAYLOADS
    if baseline_year is not None and baseline_year >= year:
        raise AnnualError(f"The baseline year {baseline_year} must lie before {year}.")
    try:
        loaded = files.load()
    except PolicyFileError as error:
        raise AnnualError(str(error)) from None
    policy, benchmarks, declarations = loaded.policy, loaded.benchmarks, loaded.declarations
    first, last = year_days(year, through)
    in_period = [e for e in entries if day_in(e.period_key, first, last)]
    accepted = _latest_accepted(in_period)
    chosen = _with_data(accepted)
    if not chosen:
        without = f" with data ({len(accepted)} without)" if accepted else ""
        raise AnnualError(
            f"Factory {factory_id!r} has no accepted daily report{without} between {first} "
            f"and {last}."
        )
    latest = source.payload(chosen[max(chosen)])
    time_zone = str(latest["period"]["time_zone"])
    params = _params(latest, overrides)
    run_params = policy.params_over(Params(**params))
    inventory = pd.DataFrame(latest["inventory"])
    base = source.daily_base(list(chosen.values()), time_zone)

    baseline_chosen = _chosen(
        [
            e
            for e in baseline_entries
            if baseline_year and e.period_key.startswith(f"{baseline_year}")
        ]
    )
    baseline_base = (
        source.daily_base(list(baseline_chosen.values()), time_zone) if baseline_chosen else None
    )

    coverage = coverage_section(
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
    # `base` is daily_measures' frame in the reports' zone (both sources of `daily_base`).
    daily = run_params.time_zone == time_zone
    indicators = compute(base, inventory, run_params, daily=daily)
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
        chain=chain_section(entries, chain, chosen, first, last),
        monthly=_monthly(base, inventory, run_params, first, last, daily),
        indicators=indicators,
        baseline={
            "year": baseline_year,
            "days": len(baseline_chosen),
            "used": baseline_base is not None,
        },
        evaluation=evaluation,
    )


# --- aggregation ---------------------------------------------------------------------------------


def _chosen(entries: Sequence[DayEntry]) -> dict[str, DayEntry]:
    """The accepted report of each day that counts: its highest revision, if it has data."""
    return _with_data(_latest_accepted(entries))


def _with_data(accepted: Mapping[str, DayEntry]) -> dict[str, DayEntry]:
    """The days whose report rests on received samples (`report_has_samples`)."""
    return {
        day: entry
        for day, entry in accepted.items()
        if (
            entry.has_samples
            if entry.has_samples is not None
            else entry.payload is not None and report_has_samples(entry.payload)
        )
    }


def _latest_accepted(entries: Sequence[DayEntry]) -> dict[str, DayEntry]:
    """The accepted report of each day; the highest revision when the day was revised."""
    chosen: dict[str, DayEntry] = {}
    for entry in entries:
        if entry.state != ACCEPTED or not entry.readable:
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


class MeasureSource(Protocol):
    """Where the evaluation reads a chosen report's payload and the chosen reports' base
    measures summed per device and local day (`daily_measures`)."""

    def payload(self, entry: DayEntry) -> Mapping[str, Any]: ...
    def daily_base(self, entries: Sequence[DayEntry], time_zone: str) -> pd.DataFrame: ...


class _FromPayloads:
    """The entries' own payloads: the reports as signed (the evidence verifier's way)."""

    def payload(self, entry: DayEntry) -> Mapping[str, Any]:
        assert entry.payload is not None
        return entry.payload

    def daily_base(self, entries: Sequence[DayEntry], time_zone: str) -> pd.DataFrame:
        return _daily_base(entries, time_zone)


_FROM_PAYLOADS = _FromPayloads()


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
    base: pd.DataFrame, inventory: pd.DataFrame, params: Params, first: date, last: date,
    daily: bool,
) -> list[dict[str, Any]]:
    """Key indicators of each month of the period, from that month's summed base measures
    (`daily`: `base` is daily_measures' frame in params.time_zone, so each month's rows are)."""
    stamps = pd.to_datetime(base["hour_start"], unit="s", utc=True).dt.tz_convert(params.time_zone)
    month_of = stamps.dt.strftime("%Y-%m").to_numpy()
    out: list[dict[str, Any]] = []
    for month in sorted({d.isoformat()[:7] for d in period_days(first, last)}):
        rows = base[month_of == month]
        values = compute(rows, inventory, params, daily=daily) if len(rows) else {}
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
