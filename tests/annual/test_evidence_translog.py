"""The transparency log in the evidence folder (docs/reliability.md §b.9): every report's
inclusion in the bureau's signed head, and that head extending the head in every receipt."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path

from annual_scenario import BUREAU_KEY, Scenario
from simdata import BENCHMARKS, DECLARATIONS, FACTORY, POLICY

from agent.protocol.envelope import public_jwk
from bureau.evidence_export import export_evidence
from bureau.evidence_verify import verify_evidence_dir
from bureau.store import SqliteReportStore
from indicators.policy import PolicyFiles
from tests.support.dishonest import remove_report


def test_the_folder_carries_the_log_and_verify_checks_it(evidence: Path) -> None:
    """If the scenario's evidence is exported, then it holds the log's signed head and a proof
    for every report file, and `verify` checks them all (its notes say so)."""
    proofs = json.loads((evidence / "log" / "proofs.json").read_text())["entries"]
    manifest = json.loads((evidence / "manifest.json").read_text())
    files = [e for e in manifest["entries"] if e["file"] and e["state"] != "rejected"]
    assert {e["report_id"] for e in proofs} == {e["report_id"] for e in files}
    assert all(e["receipt"] and e["inclusion"] is not None for e in proofs)
    result = verify_evidence_dir(evidence, [public_jwk(BUREAU_KEY)])
    assert result.problems == []
    assert any(f"Transparency log: {len(files)} report(s)" in n for n in result.notes)


def test_verify_fails_after_the_bureau_removed_a_report(
    scenario: Scenario, tmp_path: Path
) -> None:
    """If the bureau deletes an accepted report of mid-January and its log leaf (leaves
    numbered again) and then exports the evidence, sealed and self-consistent, then `verify`
    fails, and only on the log: the folder's head no longer extends the heads in the receipts
    of the reports stored after it (the chain and the recomputed evaluation alone pass, as
    the day is then simply missing)."""
    db = tmp_path / "bureau.db"
    with sqlite3.connect(scenario.db) as source, sqlite3.connect(db) as copy:
        source.backup(copy)
    store = SqliteReportStore(db)
    [victim] = [r for r in store.reports(FACTORY) if r.period_key == "2025-01-15"]
    remove_report(store.db, victim.report_id)
    out = tmp_path / "evidence"
    export_evidence(store, FACTORY, 2025, out, PolicyFiles(POLICY, BENCHMARKS, DECLARATIONS),
                    baseline_year=2024, through=date(2025, 2, 28), bureau_key=BUREAU_KEY)
    later = [r.report_id for r in store.reports(FACTORY) if r.received_at > victim.received_at]
    store.close()
    result = verify_evidence_dir(out, [public_jwk(BUREAU_KEY)])
    assert result.problems, "a removed report went unnoticed"
    assert all(p.startswith("log/proofs.json: report ") for p in result.problems), result.problems
    named = {p.split()[2].rstrip(":") for p in result.problems}
    assert named and named <= set(later)
    assert all("does not extend the head in its receipt" in p for p in result.problems)
