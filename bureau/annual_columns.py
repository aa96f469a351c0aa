"""The annual evaluation from the store's columns: report metadata from the `reports` table,
base measures from the measures table (bureau.measures_table), and the payload of one report
only (the latest counted day's, for its inventory and params).

The same `evaluate_year` runs on these entries as on entries carrying their payloads
(`bureau.evidence_export.load_year`, what the evidence folder holds); the evaluation JSON is
the same byte for byte (tests/annual/test_measures_table.py). Issue 18 item 6: 356 ms per
factory-year, 60 % of it re-reading each report's JSON, before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import pandas as pd

from agent.protocol.chain import chain_slice
from agent.protocol.envelope import Kind, unverified_payload
from bureau import measures_table
from bureau.annual import AnnualError, AnnualEvaluation, DayEntry, evaluate_year
from bureau.measures_table import ReportMeta
from bureau.store import ACCEPTED, REJECTED, SqliteReportStore
from indicators.policy import PolicyFiles


class TableMeasures:
    """`bureau.annual.MeasureSource` over the store's measures table."""

    def __init__(self, store: SqliteReportStore) -> None:
        self.db = store.db

    def payload(self, entry: DayEntry) -> Mapping[str, Any]:
        if entry.payload is not None:
            return entry.payload
        assert entry.report_id is not None
        return measures_table.payload(self.db, entry.report_id)

    def daily_base(self, entries: Sequence[DayEntry], time_zone: str) -> pd.DataFrame:
        ids = [str(entry.report_id) for entry in entries]
        return measures_table.daily_base(self.db, ids, time_zone)


def evaluate_from_columns(
    store: SqliteReportStore,
    factory_id: str,
    year: int,
    files: PolicyFiles,
    *,
    baseline_year: int | None = None,
    through: date | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[AnnualEvaluation, list[DayEntry], list[DayEntry]]:
    """`bureau.evidence_export.evaluate_from_store`, from columns: the evaluation and the
    year's and the baseline year's entries (without payloads)."""
    metas = measures_table.report_metas(store.db, factory_id)
    entries = load_year_columns(store, factory_id, year, metas)
    if not entries:
        raise AnnualError(f"Factory {factory_id!r} has no daily reports for {year}.")
    baseline = load_year_columns(store, factory_id, baseline_year, metas) if baseline_year else []
    prefix = f"{year:04d}"
    of_year = [m.seq for m in metas if m.period_key.startswith(prefix)]
    chain = [DayEntry.from_columns(m) for m in chain_slice(metas, lambda m: m.seq, of_year)]
    result = evaluate_year(
        factory_id,
        year,
        entries,
        files,
        baseline_entries=baseline,
        baseline_year=baseline_year,
        through=through,
        overrides=overrides,
        chain=chain,
        measures=TableMeasures(store),
    )
    return result, entries, baseline


def load_year_columns(
    store: SqliteReportStore, factory_id: str, year: int, metas: Sequence[ReportMeta]
) -> list[DayEntry]:
    """The factory's daily reports of `year` (all states), in `load_year`'s order, with
    `has_samples` from the measures table instead of a payload. Accepted reports not yet in
    the table (stored before it existed) are recorded first, once."""
    prefix = f"{year:04d}"
    of_year = [m for m in metas if m.period_kind == "day" and m.period_key.startswith(prefix)]
    accepted = [m.report_id for m in of_year if m.state == ACCEPTED]
    flags = measures_table.has_samples(store.db, accepted)
    if len(flags) < len(accepted):
        with store.transaction():
            measures_table.record_missing(store.db, accepted)
        flags = measures_table.has_samples(store.db, accepted)
    keyed: list[tuple[str, bool, DayEntry]] = [
        (
            m.period_key,
            m.state != ACCEPTED,
            DayEntry.from_columns(m, has_samples=flags.get(m.report_id)),
        )
        for m in of_year
    ]
    for period_key, reason, token in store.db.rows(
        "SELECT period_key, reason, jws FROM rejections WHERE factory_id = :factory_id "
        "AND period_kind = 'day' AND period_key LIKE :prefix ORDER BY id",
        {"factory_id": factory_id, "prefix": prefix + "%"},
    ):
        payload = unverified_payload(token, Kind.REPORT) if token else None
        entry = DayEntry.from_parts(period_key, REJECTED, reason, payload, token)
        keyed.append((period_key, True, entry))
    keyed.sort(key=lambda item: (item[0], item[1]))  # stable, as `reports_for_year` sorts
    return [entry for _, _, entry in keyed]
