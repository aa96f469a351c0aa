"""The annual evaluation from the measures table gives the evaluation JSON of the signed
reports byte for byte (issue 18 item 6).

The scenario (annual_scenario.py) is two months of a simulated factory delivered through the
bureau receiver, with a withheld day, a rejected (tampered) day, an undelivered day that leaves
pending-link reports, and ten baseline days of 2024.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import date
from pathlib import Path

import pytest
from annual_scenario import Scenario
from simdata import BENCHMARKS, DECLARATIONS, FACTORY, POLICY

from bureau.evidence_export import evaluate_from_payloads, evaluate_from_store
from bureau.store import SqliteReportStore
from indicators.policy import PolicyFiles

FILES = PolicyFiles(POLICY, BENCHMARKS, DECLARATIONS)


def _json(result: object) -> bytes:
    record = result.to_json()  # type: ignore[attr-defined]
    return json.dumps(record, ensure_ascii=False, sort_keys=True, indent=2).encode("utf-8")


def _both(db: Path, **arguments: object) -> tuple[bytes, bytes]:
    store = SqliteReportStore(db)
    try:
        columns = evaluate_from_store(store, FACTORY, 2025, FILES, **arguments)[0]  # type: ignore[arg-type]
        payloads = evaluate_from_payloads(store, FACTORY, 2025, FILES, **arguments)[0]  # type: ignore[arg-type]
        return _json(columns), _json(payloads)
    finally:
        store.close()


@pytest.mark.parametrize("through", [date(2025, 1, 31), date(2025, 2, 28)])
def test_columns_and_signed_payloads_give_the_same_evaluation_bytes(
    scenario: Scenario, through: date
) -> None:
    """If the same stored reports are evaluated from the measures table and from their signed
    payloads, with and without a baseline year, then the evaluation JSON is identical."""
    for baseline in (None, 2024):
        columns, payloads = _both(scenario.db, baseline_year=baseline, through=through)
        assert columns == payloads
        assert b'"rejected_days": [\n      "2025-02-03"' in columns or through.month == 1


def test_the_evidence_folder_holds_the_same_evaluation(scenario: Scenario, evidence: Path) -> None:
    """If the evidence folder (exported from the signed reports) is compared with the
    evaluation from columns, then its evaluation.json says the same."""
    store = SqliteReportStore(scenario.db)
    try:
        result = evaluate_from_store(store, FACTORY, 2025, FILES, baseline_year=2024,
                                     through=date(2025, 2, 28))[0]
    finally:
        store.close()
    exported = json.loads((evidence / "evaluation.json").read_text(encoding="utf-8"))
    assert exported == json.loads(json.dumps(result.to_json()))


def test_reports_stored_before_the_table_are_recorded_once(
    scenario: Scenario, tmp_path: Path
) -> None:
    """If a database holds reports but no measures rows (stored before the table existed),
    then the first evaluation records them from their JWS and evaluates as the payloads do."""
    db = tmp_path / "old.db"
    shutil.copy(scenario.db, db)
    with sqlite3.connect(db) as raw:
        raw.execute("DELETE FROM report_measures")
        raw.execute("DELETE FROM measured_reports")
    columns, payloads = _both(db, baseline_year=2024, through=date(2025, 2, 28))
    assert columns == payloads
    with sqlite3.connect(db) as raw:
        recorded = raw.execute("SELECT COUNT(*) FROM measured_reports").fetchone()[0]
        accepted = raw.execute(
            "SELECT COUNT(*) FROM reports WHERE state = 'accepted' AND period_kind = 'day'"
        ).fetchone()[0]
    assert recorded == accepted > 0


def test_a_tampered_measures_row_changes_the_column_evaluation_only(
    scenario: Scenario, tmp_path: Path
) -> None:
    """If a measures row is altered in the database, then the column evaluation differs from
    the signed reports' (so the comparison above can fail); the evidence folder's verifier
    recomputes from the signed reports, never from this table."""
    db = tmp_path / "altered.db"
    shutil.copy(scenario.db, db)
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE report_measures SET good = good + 50 WHERE report_id = "
                    "(SELECT report_id FROM measured_reports WHERE period_key = '2025-01-05')")
    columns, payloads = _both(db, through=date(2025, 1, 31))
    assert columns != payloads
