"""What the factory page shows, from the bureau's store and its annual evaluation.

The evaluation is `bureau.evidence_export.evaluate_from_payloads` (the evidence folder's:
the per-device table and the downloads need each counted report's payload, which the
column path of `tieragent bureau evaluate` does not read; both give the same evaluation),
with the portal's policy and benchmark files and the factory's own declarations when the
declarations folder has `<factory_id>.yaml`.
Everything else is derived from what it returns or from the stored reports:

- per-device figures: each inventory device's summed base measures over the days the
  evaluation counted (the accepted daily report of each day, its highest revision, with data:
  the rule of bureau.annual), put through `indicators.kpi.compute`, so a device's OEE is the
  same ratio of sums as the factory's;
- declared conditions with their documents and declarant (the declarations file
  evaluated), and the status the latest counted daily report carries for each;
- the chain with issue and receipt times, so backfilled history shows as such.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent.protocol.chain import genesis_sha256
from agent.protocol.report import base_frame, inventory_from_rows, report_has_samples
from bureau.annual import KEY_INDICATORS, AnnualEvaluation, DayEntry, indicator_unit
from bureau.evidence_export import evaluate_from_payloads
from bureau.store import ACCEPTED, SqlReportStore
from bureau.web.queries import ChainRow, chain_rows, issued_at
from bureau.web.settings import WebSettings
from indicators.catalog import IndicatorValue, Params
from indicators.columns import BASE_MEASURE_COLUMNS
from indicators.inventory_rates import AUTOMATED_KINDS
from indicators.kpi import compute
from indicators.policy import PolicyFiles

BUREAU_ZONE = ZoneInfo("Asia/Shanghai")
DEVICE_INDICATORS = ("oee", "availability", "data_collection_rate", "networking_rate")


@dataclass(frozen=True)
class Figure:
    """One indicator value as shown: the value, or None with the reason it has none."""

    value: float | None
    unit: str
    reason: str | None = None

    @classmethod
    def of(cls, item: IndicatorValue | None, key: str) -> Figure:
        if item is None:
            return cls(None, indicator_unit(key), "no_data")
        return cls(item.value, indicator_unit(key), item.reason)


@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    line: str
    process_step: str
    connection: str
    kind: str
    key_process: bool
    automated: bool
    figures: dict[str, Figure]


@dataclass(frozen=True)
class ChainView:
    row: ChainRow
    issued_at: str | None
    period_end: float | None
    linked: bool  # prev_sha256 is the stored previous report's payload SHA-256 (or genesis)

    @property
    def delay_days(self) -> float | None:
        """Days between the end of the period and the bureau receiving the report."""
        if self.period_end is None:
            return None
        return (self.row.received_at - self.period_end) / 86400.0


@dataclass(frozen=True)
class FactoryView:
    factory_id: str
    year: int
    through: date | None
    evaluation: AnnualEvaluation | None
    error: str | None
    devices: list[DeviceRow]
    declared: list[dict[str, Any]]
    declared_by: str | None
    trends: list[dict[str, Any]]
    chain: list[ChainView]


def policy_files(settings: WebSettings, factory_id: str) -> PolicyFiles:
    declarations: Path | None = None
    if settings.declarations_dir is not None:
        candidate = settings.declarations_dir / f"{factory_id}.yaml"
        declarations = candidate if candidate.is_file() else None
    return PolicyFiles(settings.policy, settings.benchmarks, declarations)


def default_through(year: int) -> date | None:
    """A year still running is evaluated up to yesterday (as `tieragent bureau evaluate`)."""
    yesterday = datetime.now(BUREAU_ZONE).date() - timedelta(days=1)
    return yesterday if yesterday.year == year else None


def baseline_year(year: int, files: PolicyFiles) -> int:
    """The declarations' baseline year when it lies before `year`, else the year before."""
    if files.declarations is not None:
        baseline = files.load().declarations
        period = baseline.baseline.period if baseline and baseline.baseline else ""
        if period.isdigit() and int(period) < year:
            return int(period)
    return year - 1


def evaluate(
    store: SqlReportStore, settings: WebSettings, factory_id: str, year: int,
    through: date | None,
) -> tuple[AnnualEvaluation, list[DayEntry]]:
    """The annual evaluation and the year's entries it used (raises AnnualError)."""
    files = policy_files(settings, factory_id)
    result, entries, _ = evaluate_from_payloads(
        store, factory_id, year, files, baseline_year=baseline_year(year, files),
        through=through if through is not None else default_through(year),
    )
    return result, entries


def counted_days(result: AnnualEvaluation, entries: list[DayEntry]) -> list[DayEntry]:
    """The daily reports the evaluation counted: per day of the period, the accepted report
    of the highest revision, when it has data (bureau.annual's rule)."""
    chosen: dict[str, DayEntry] = {}
    for entry in entries:
        if entry.state != ACCEPTED or entry.payload is None:
            continue
        try:
            day = date.fromisoformat(entry.period_key)
        except ValueError:
            continue
        if not result.first_day <= day <= result.last_day:
            continue
        current = chosen.get(entry.period_key)
        if current is None or entry.revision > current.revision:
            chosen[entry.period_key] = entry
    return [
        e for _, e in sorted(chosen.items())
        if e.payload is not None and report_has_samples(e.payload)
    ]


def device_rows(result: AnnualEvaluation, counted: list[DayEntry]) -> list[DeviceRow]:
    """Per inventory device: its kind and connection, and its indicators over the year."""
    if not counted:
        return []
    latest = counted[-1].payload
    assert latest is not None
    inventory = inventory_from_rows(latest["inventory"])
    rows: list[list[Any]] = []
    for entry in counted:
        assert entry.payload is not None
        rows.extend(entry.payload["base_measures"]["rows"])
    base = base_frame({"columns": BASE_MEASURE_COLUMNS, "rows": rows})
    params = Params(**result.params)
    out: list[DeviceRow] = []
    for device in inventory.to_dict("records"):
        device_id = str(device["device_id"])
        values = compute(
            base[base["device_id"] == device_id],
            inventory[inventory["device_id"] == device_id],
            params,
        )
        out.append(
            DeviceRow(
                device_id=device_id,
                line=str(device.get("line") or ""),
                process_step=str(device.get("process_step") or ""),
                connection=str(device.get("connection") or "none"),
                kind=str(device.get("kind") or ""),
                key_process=bool(device.get("key_process")),
                automated=str(device.get("kind")) in AUTOMATED_KINDS,
                figures={k: Figure.of(values.get(k), k) for k in DEVICE_INDICATORS},
            )
        )
    return out


def declared_conditions(
    result: AnnualEvaluation, counted: list[DayEntry], files: PolicyFiles
) -> tuple[list[dict[str, Any]], str | None]:
    """The evaluation's declared conditions with their documents, each with the status the
    latest counted report carries for it (None: the report does not state it); and the
    declarant of the declarations file evaluated (None: there is none)."""
    reported: dict[str, str] = {}
    if counted and counted[-1].payload is not None:
        carried = counted[-1].payload.get("evaluation") or {}
        for condition in carried.get("conditions", []):
            if condition.get("source") == "declared":
                reported[str(condition.get("condition_id"))] = str(condition.get("status"))
    rows = [
        {
            "condition_id": c.condition_id,
            "label_zh": c.label_zh,
            "label_en": c.label_en,
            "status": c.status,
            "measured": c.measured,
            "documents": list(c.evidence.get("documents", [])),
            "reported_status": reported.get(c.condition_id),
        }
        for c in result.evaluation.conditions
        if c.source == "declared"
    ]
    declarations = files.load().declarations if files.declarations is not None else None
    declarant = None
    if declarations is not None:
        declarant = f"{declarations.declared_by} ({declarations.declared_at})"
    return rows, declarant


def trend_series(result: AnnualEvaluation) -> list[dict[str, Any]]:
    """One chart per key indicator: months and values (None where a month has none)."""
    months = [m["month"] for m in result.monthly]
    return [
        {
            "indicator": key,
            "unit": indicator_unit(key),
            "months": months,
            "values": [m["indicators"].get(key) for m in result.monthly],
        }
        for key in KEY_INDICATORS
    ]


def chain_view(
    store: SqlReportStore, factory_id: str, result: AnnualEvaluation | None,
    entries: list[DayEntry],
) -> list[ChainView]:
    """The factory's stored reports (those of the evaluated chain slice when there is one),
    each with whether it links to the stored report before it (seq 1: to the genesis
    hash)."""
    rows = chain_rows(store.db, factory_id)
    by_seq = {r.seq: r for r in rows}
    genesis = genesis_sha256(factory_id)

    def linked(row: ChainRow) -> bool:
        if row.seq == 1:
            return row.prev_sha256 == genesis
        previous = by_seq.get(row.seq - 1)
        return previous is not None and previous.payload_sha256 == row.prev_sha256

    if result is not None:
        in_slice = {str(link["report_id"]) for link in result.chain["reports"]}
        rows = [r for r in rows if r.report_id in in_slice]
    payloads = {e.report_id: e.payload for e in entries if e.payload is not None}
    out: list[ChainView] = []
    for row in rows:
        payload = payloads.get(row.report_id)
        stated, end = None, None
        if payload is not None:
            stated, end = payload.get("issued_at"), payload["period"]["end"]
        else:
            stored = store.get(row.report_id)
            if stored is not None:
                stated = issued_at(store.db, row.report_id)
                end = stored.payload()["period"]["end"]
        out.append(ChainView(row, stated, float(end) if end is not None else None,
                             linked(row)))
    return out


def factory_view(
    store: SqlReportStore, settings: WebSettings, factory_id: str, year: int,
    through: date | None,
) -> FactoryView:
    from bureau.annual import AnnualError

    try:
        result, entries = evaluate(store, settings, factory_id, year, through)
    except AnnualError as error:
        return FactoryView(factory_id, year, through, None, str(error), [], [], None, [],
                           chain_view(store, factory_id, None, []))
    counted = counted_days(result, entries)
    declared, declarant = declared_conditions(
        result, counted, policy_files(settings, factory_id))
    return FactoryView(
        factory_id=factory_id,
        year=year,
        through=result.last_day,
        evaluation=result,
        error=None,
        devices=device_rows(result, counted),
        declared=declared,
        declared_by=declarant,
        trends=trend_series(result),
        chain=chain_view(store, factory_id, result, entries),
    )


def default_year(store: SqlReportStore, factory_id: str) -> int:
    """The year of the factory's latest daily report (this year when it has none)."""
    latest = store.db.scalar(
        "SELECT MAX(period_key) FROM reports WHERE factory_id = :factory_id "
        "AND period_kind = 'day'",
        {"factory_id": factory_id},
    )
    if latest:
        return int(str(latest)[:4])
    return datetime.now(BUREAU_ZONE).year


def as_json(view: FactoryView) -> dict[str, Any]:
    """The factory page as JSON (the API's answer)."""
    return {
        "factory_id": view.factory_id,
        "year": view.year,
        "error": view.error,
        "evaluation": view.evaluation.to_json() if view.evaluation else None,
        "devices": [
            dataclasses.asdict(d) | {"figures": {k: dataclasses.asdict(f)
                                                 for k, f in d.figures.items()}}
            for d in view.devices
        ],
        "declared_by": view.declared_by,
        "chain": [
            dataclasses.asdict(c.row) | {"issued_at": c.issued_at, "delay_days": c.delay_days,
                                         "linked_to_previous": c.linked}
            for c in view.chain
        ],
    }
