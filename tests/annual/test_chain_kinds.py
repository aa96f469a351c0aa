"""One chain per factory carries every report kind and revision (issue 17, "False chain gaps"):
month and year reports and revisions between the day reports are no gap in the annual
evaluation, its HTML, the `bureau evaluate` printout or the evidence folder; a sequence number
the bureau really does not hold still is one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import OKPKey
from simdata import BENCHMARKS, DECLARATIONS, POLICY
from typer import Typer
from typer.testing import CliRunner

from agent.outbox import Outbox
from agent.protocol.mqtt import report_topic
from bureau.annual import AnnualEvaluation
from bureau.evidence_export import evaluate_from_store, export_evidence, manifest_bytes
from bureau.evidence_verify import verify_evidence_dir
from bureau.html_report import render_html
from bureau.store import ACCEPTED, PENDING_LINK, SqlReportStore
from indicators.policy import PolicyFiles
from tests.support.bureau_receiver import start_bureau
from tests.support.chain_reports import MIXED, commit, commit_mixed
from tests.support.reports import FACTORY
from tieragent.commands.bureau_annual import register

BUREAU_KEY = OKPKey.generate_key("Ed25519")  # receipts and seal: one key, as in a bureau

FILES = PolicyFiles(POLICY, BENCHMARKS, DECLARATIONS)
THROUGH = date(2025, 3, 31)


@dataclass(frozen=True)
class Chain:
    db: Path | str  # a SQLite file or a PostgreSQL URL
    delivered: list[int]  # the seqs the bureau received


def _bureau(root: Path, database: Path | str, missing: bool) -> Chain:
    """The MIXED chain (seq 1-7) at a bureau; with `missing`, then day Mar 3 (seq 8) signed but
    never delivered and Mar 4 (seq 9) delivered: seq 8 is really missing."""
    key = OKPKey.generate_key("Ed25519")
    bureau = start_bureau(database, None, {FACTORY: key}, key=BUREAU_KEY)
    outbox = Outbox(root / "outbox.db")
    items = commit_mixed(outbox, key)
    if missing:
        items.append(commit(outbox, key, "day", "2025-03-03"))
        items.append(commit(outbox, key, "day", "2025-03-04"))
    delivered = []
    for item in items:
        if item.seq == 8 and missing:
            continue
        assert bureau.receiver.handle(report_topic(FACTORY), item.jws.encode("ascii"))
        delivered.append(item.seq)
    bureau.receiver.stop()
    outbox.close()
    store = SqlReportStore(database)
    try:
        states = {r.seq: r.state for r in store.reports(FACTORY)}
    finally:
        store.close()
    assert all(states.get(seq, PENDING_LINK) == ACCEPTED for seq in range(1, 8)), states
    return Chain(database, delivered)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """The chains are stored on SQLite, then on PostgreSQL (tests/conftest.py)."""
    return str(request.param)


def _database(request: pytest.FixtureRequest, backend: str, root: Path) -> Path | str:
    if backend == "sqlite":
        return root / "bureau.db"
    return str(request.getfixturevalue("postgres_server").create_database())


@pytest.fixture(scope="module")
def mixed(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Chain:
    root = tmp_path_factory.mktemp("mixed")
    return _bureau(root, _database(request, backend, root), missing=False)


@pytest.fixture(scope="module")
def with_gap(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Chain:
    root = tmp_path_factory.mktemp("gap")
    return _bureau(root, _database(request, backend, root), missing=True)


def _evaluate(chain: Chain) -> AnnualEvaluation:
    store = SqlReportStore(chain.db)
    try:
        return evaluate_from_store(store, FACTORY, 2025, FILES, through=THROUGH)[0]
    finally:
        store.close()


def _export(chain: Chain, out: Path) -> Path:
    store = SqlReportStore(chain.db)
    try:
        export_evidence(store, FACTORY, 2025, out, FILES, through=THROUGH,
                        bureau_key=BUREAU_KEY)
    finally:
        store.close()
    return out


def _printout(chain: Chain) -> str:
    app = Typer()
    register(app)
    result = CliRunner().invoke(app, [
        "evaluate", *_where(chain), "--factory", FACTORY, "--year", "2025",
        "--through", THROUGH.isoformat(), "--benchmarks", str(BENCHMARKS),
        "--declarations", str(DECLARATIONS), "--baseline-year", "2024",
    ])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_month_year_and_revision_reports_are_no_gap_in_the_evaluation(mixed: Chain) -> None:
    """If a month report, a year report and a revision lie between the year's day reports in
    the factory's one chain, then the evaluation's chain lists all seven reports, each linked
    to the one before, with no gap; only the days' counted reports are counted."""
    chain = _evaluate(mixed).to_json()["chain"]
    assert chain["gaps"] == []
    reports = chain["reports"]
    assert [r["seq"] for r in reports] == list(range(1, 8))
    assert [(r["kind"], r["period_key"], r["revision"]) for r in reports] == list(MIXED)
    assert [r["linked_to_previous"] for r in reports] == [False] + [True] * 6
    # Feb 27 counts with its revision (seq 6), not with the report it corrects (seq 1).
    assert [r["seq"] for r in reports if r["counted"]] == [2, 4, 6, 7]


def test_the_html_and_the_printout_show_no_gap(mixed: Chain) -> None:
    """If the chain holds month, year and revision reports, then the HTML lists no chain gap
    and shows each report's kind, and `bureau evaluate` prints no chain gap."""
    html = render_html(_evaluate(mixed).to_json())
    assert "data-chain-gap" not in html
    assert '<ul id="chain-gaps"><li>—</li></ul>' in html
    assert 'data-seq="3" data-kind="month"' in html and 'data-seq="5" data-kind="year"' in html
    assert "Chain gaps" not in _printout(mixed)


def test_the_evidence_folder_holds_a_contiguous_slice_and_verifies(
    mixed: Chain, tmp_path: Path
) -> None:
    """If the evidence folder is exported, then it holds the month and year reports between
    the year's day reports (chain/), its evaluation has no gap, and it verifies offline."""
    folder = _export(mixed, tmp_path / "ev")
    manifest = json.loads((folder / "manifest.json").read_text())
    chain_files = sorted(f for f in manifest["files"] if f.startswith("chain/"))
    assert [f.split("_")[:2] for f in chain_files] == [
        ["chain/000003", "month"], ["chain/000005", "year"]
    ]
    evaluation = json.loads((folder / "evaluation.json").read_text())
    assert evaluation["chain"]["gaps"] == []
    result = verify_evidence_dir(folder)
    assert result.problems == []
    assert result.reports == 7


def test_a_report_taken_out_of_the_folder_is_named(mixed: Chain, tmp_path: Path) -> None:
    """If the month report is removed from the folder (file, manifest entry and digest), then
    verification fails: the chain recomputed from the folder has a gap evaluation.json lacks."""
    folder = _export(mixed, tmp_path / "ev")
    manifest = json.loads((folder / "manifest.json").read_text())
    (entry,) = [e for e in manifest["entries"] if e["kind"] == "month"]
    manifest["entries"].remove(entry)
    del manifest["files"][entry["file"]]
    (folder / entry["file"]).unlink()
    (folder / "manifest.json").write_bytes(manifest_bytes(manifest))
    problems = verify_evidence_dir(folder).problems
    assert any(p.startswith("evaluation.json: chain.gaps") for p in problems), problems


def test_a_really_missing_seq_is_still_a_gap(with_gap: Chain, tmp_path: Path) -> None:
    """If seq 8 never reached the bureau, then the evaluation, the HTML and the printout name
    the gap 7 -> 9 (and only it), and the evidence folder, which records it, verifies."""
    assert 8 not in with_gap.delivered
    result = _evaluate(with_gap)
    assert result.chain["gaps"] == [{"after_seq": 7, "next_seq": 9}]
    html = render_html(result.to_json())
    assert html.count("data-chain-gap=") == 1 and 'data-chain-gap="7"' in html
    assert "Chain gaps 链缺口: 7→9" in _printout(with_gap)
    folder = _export(with_gap, tmp_path / "ev")
    evaluation: dict[str, Any] = json.loads((folder / "evaluation.json").read_text())
    assert evaluation["chain"]["gaps"] == [{"after_seq": 7, "next_seq": 9}]
    assert verify_evidence_dir(folder).problems == []


def _where(chain: Chain) -> list[str]:
    """The CLI options that name the chain's database."""
    if isinstance(chain.db, str):
        return ["--database-url", chain.db]
    return ["--db", str(chain.db)]
