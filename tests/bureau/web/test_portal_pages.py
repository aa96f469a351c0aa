"""The portal's pages and downloads against what the bureau holds: the factory list, the
factory page (the annual evaluation of `tieragent bureau evaluate`, per-device figures,
declarations, rejections, chain), the report page, and the evidence downloads (the zip
verifies offline)."""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from portal_fixtures import BUREAU_KEY, EVALUATOR, FACTORY, Portal, log_in
from simdata import BENCHMARKS, DECLARATIONS, POLICY

from agent.protocol.envelope import public_jwk
from bureau.accounts import Accounts
from bureau.evidence_export import evaluate_from_store
from bureau.evidence_verify import verify_evidence_dir
from bureau.html_report import format_value, render_html
from bureau.store import SqlReportStore
from indicators.policy import PolicyFiles

HTML = {"Accept": "text/html"}
QUERY = "year=2025&through=2025-01-31"


class _Rows(HTMLParser):
    """Rows of the table with the given id: their data-* attributes and cell texts."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id, self.inside, self.rows = table_id, False, []
        self.cells: list[str] | None = None
        self.attrs: dict[str, str] = {}
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "table" and values.get("id") == self.table_id:
            self.inside = True
        elif self.inside and tag == "tr":
            self.cells, self.attrs = [], values
        elif self.inside and tag in ("td", "th") and self.cells is not None:
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.inside:
            self.inside = False
        elif tag in ("td", "th") and self.cell is not None and self.cells is not None:
            self.cells.append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "tr" and self.cells is not None:
            self.rows.append((self.attrs, self.cells))
            self.cells = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def rows(html: str, table_id: str) -> list[tuple[dict[str, str], list[str]]]:
    parser = _Rows(table_id)
    parser.feed(html)
    return [(a, c) for a, c in parser.rows if a]


def _evaluation(portal: Portal, through: date) -> dict:
    """The same evaluation as `tieragent bureau evaluate` with the portal's files."""
    store = SqlReportStore(portal.db)
    try:
        result, _, _ = evaluate_from_store(
            store, FACTORY, 2025, PolicyFiles(POLICY, BENCHMARKS, DECLARATIONS),
            baseline_year=2024, through=through)
    finally:
        store.close()
    return result.to_json()


def test_factory_list_shows_what_the_store_holds(client: TestClient, portal: Portal) -> None:
    """If an evaluator opens the factory list, then the factory's row has its latest daily
    report (Feb 28), its accepted days of 2025, the rejection, the two chain holes (the
    rejected Feb 3 and the undelivered Feb 10), the two pending links, and every report in
    the log; filters and sorting apply."""
    log_in(client, EVALUATOR)
    store = SqlReportStore(portal.db)
    accepted = {r.period_key for r in store.reports(FACTORY)
                if r.period_kind == "day" and r.state == "accepted"
                and r.period_key.startswith("2025")}
    rejected = [r for r in store.rejections() if r.factory_id == FACTORY]
    store.close()
    [row] = client.get("/api/factories").json()
    assert row["factory_id"] == FACTORY and row["last_day"] == "2025-02-28"
    assert row["coverage"]["accepted"] == len(accepted) == 54
    assert row["coverage"]["days"] == 365 and row["coverage"]["year"] == 2025
    assert row["rejections"] == len(rejected) == 1
    assert row["chain_gaps"] == 2 and row["pending_link"] == 2 and row["not_in_log"] == 0
    assert row["tier_reached"] is None  # the scenario's reports state no tier
    assert client.get("/api/factories?q=nothing-like-it").json() == []
    assert len(client.get("/api/factories?problems=true&sort=gaps&order=desc").json()) == 1
    assert client.get("/api/factories?tier=basic").json() == []
    assert client.get("/api/factories?sort=bogus").status_code == 400
    page = client.get("/factories", headers=HTML).text
    [(attrs, cells)] = rows(page, "factories")
    assert attrs["data-factory"] == FACTORY
    assert "54/365" in cells[4] and cells[7] == "1" and cells[8] == "2"


def test_factory_page_conditions_are_the_annual_evaluation(
    client: TestClient, portal: Portal
) -> None:
    """If an evaluator opens the factory through Jan 31, then the conditions table has every
    condition of the annual evaluation, in order, with its status and the measured value and
    threshold as the evidence report formats them; the JSON twin carries the evaluation."""
    log_in(client, EVALUATOR)
    expected = _evaluation(portal, date(2025, 1, 31))
    conditions = expected["evaluation"]["conditions"]
    page = client.get(f"/factories/{FACTORY}?{QUERY}", headers=HTML)
    assert page.status_code == 200
    table = rows(page.text, "conditions")
    assert [a["data-condition"] for a, _ in table] == [c["condition_id"] for c in conditions]
    assert [a["data-status"] for a, _ in table] == [c["status"] for c in conditions]
    assert {c["status"] for c in conditions} >= {"pass", "fail", "declared_pass"}
    for (_, cells), condition in zip(table, conditions, strict=True):
        unit = (condition["evidence"] or {}).get("unit", "")
        assert cells[2] == format_value(condition["measured"], unit)
        if condition["comparator"] is not None:
            assert cells[4].startswith(format_value(condition["threshold"], unit))
    api = client.get(f"/api/factories/{FACTORY}?{QUERY}").json()
    assert api["evaluation"]["evaluation"] == expected["evaluation"]
    assert api["evaluation"]["monthly"] == expected["monthly"]
    trends = json.loads(page.text.split('id="trend-data">')[1].split("</script>")[0])
    oee = next(t for t in trends if t["indicator"] == "oee")
    assert oee["months"] == ["2025-01"]
    assert oee["values"] == [expected["monthly"][0]["indicators"]["oee"]]


def test_factory_page_devices_declarations_rejections_chain(
    client: TestClient, portal: Portal
) -> None:
    """If an evaluator opens the factory, then the device table lists every inventory device
    (unconnected ones without figures, saying why), the declared conditions carry their
    documents and the declarant, the rejection carries its reason, and the chain shows issue
    and receipt times with the holes unlinked."""
    log_in(client, EVALUATOR)
    page = client.get(f"/factories/{FACTORY}?{QUERY}", headers=HTML).text
    api = client.get(f"/api/factories/{FACTORY}?{QUERY}").json()
    store = SqlReportStore(portal.db)
    report = next(r for r in store.reports(FACTORY) if r.period_key == "2025-01-31")
    inventory = report.payload()["inventory"]
    store.close()
    devices = rows(page, "devices")
    assert [a["data-device"] for a, _ in devices] == [d["device_id"] for d in inventory]
    by_id = {d["device_id"]: d for d in api["devices"]}
    for device in inventory:
        figures = by_id[device["device_id"]]["figures"]
        if device["connection"] == "none":
            assert figures["oee"]["value"] is None and figures["oee"]["reason"]
        else:
            assert 0 < figures["availability"]["value"] <= 1
    networked = [d for d in inventory if d["connection"] != "none"]
    assert networked and len(networked) < len(inventory)

    declared = rows(page, "declared")
    assert {a["data-status"] for a, _ in declared} >= {"declared_pass", "not_declared"}
    mes = next(cells for a, cells in declared if a["data-condition"].endswith("mes_in_use")
               or "MES" in cells[0])
    assert "IT-2023-014" in mes[3]
    assert "Zhang Wei" in page.split('id="declarant">')[1].split("</span>")[0]

    [(attrs, cells)] = rows(page, "rejections")
    assert attrs["data-reason"] == "indicators" and "2025-02-03" in cells[1]

    chain = {int(a["data-seq"]): cells for a, cells in rows(page, "chain")}
    entries = {c["seq"]: c for c in api["chain"]}
    assert set(chain) == set(entries)
    unlinked = sorted(seq for seq, c in entries.items() if not c["linked_to_previous"])
    assert len(unlinked) == 2  # the reports after the rejected and the undelivered day
    assert all(entries[seq]["state"] == "pending-link" for seq in unlinked)
    first = min(entries)
    assert entries[first]["issued_at"].startswith("2025-01-02")
    assert entries[first]["delay_days"] > 300  # delivered long after: shown as backfill


def test_report_page_checks_the_report_again(client: TestClient, portal: Portal) -> None:
    """If an evaluator opens a stored report, then its signature, schema, chain link and
    indicators verify again, the key's window and the raw-data root are shown, and its
    leaf's inclusion proof in the latest signed log head verifies."""
    log_in(client, EVALUATOR)
    store = SqlReportStore(portal.db)
    stored = next(r for r in store.reports(FACTORY) if r.period_key == "2025-01-15")
    store.close()
    api = client.get(f"/api/reports/{stored.report_id}").json()
    assert all(check["ok"] for check in api["checks"].values()), api["checks"]
    assert api["payload_sha256"] == stored.payload_sha256 and api["kid"] == stored.kid
    assert api["key"]["status"] == "active"
    assert api["raw_data"]["merkle_root"] == stored.payload()["raw_data"]["merkle_root"]
    assert api["log"]["verified"] is True and api["log"]["leaf_index"] is not None
    page = client.get(f"/reports/{stored.report_id}", headers=HTML).text
    assert [a["data-ok"] for a, _ in rows(page, "verification") if "data-ok" in a] == [
        "true"] * 5
    assert stored.payload()["raw_data"]["merkle_root"] in page
    assert client.get("/reports/no-such-report", headers=HTML).status_code == 404


def test_downloads_are_the_evidence_and_are_audited(client: TestClient, portal: Portal,
                                                    tmp_path: Path) -> None:
    """If an evaluator downloads the evidence, then the zip is a sealed evidence folder that
    verifies offline with the bureau's key pinned, the HTML is that folder's report.html (with
    its details: devices, issue and receipt dates, declarant), the PDF is its report.pdf, and
    the audit has one row per download."""
    log_in(client, EVALUATOR)
    name = f"evidence-{FACTORY}-2025"
    archive = client.get(f"/factories/{FACTORY}/evidence.zip?{QUERY}")
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as folder:
        folder.extractall(tmp_path)
    result = verify_evidence_dir(tmp_path / name, [public_jwk(BUREAU_KEY)])
    assert result.problems == [] and result.reports > 0

    html = client.get(f"/factories/{FACTORY}/evidence.html?{QUERY}")
    assert html.status_code == 200
    assert html.headers["content-disposition"] == f'attachment; filename="{name}.html"'
    assert html.text == (tmp_path / name / "report.html").read_text(encoding="utf-8")
    bare = render_html(_evaluation(portal, date(2025, 1, 31)))
    assert html.text != bare and "Zhang Wei" in html.text and "Zhang Wei" not in bare

    pdf = client.get(f"/factories/{FACTORY}/evidence.pdf?{QUERY}")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["content-disposition"] == f'attachment; filename="{name}.pdf"'
    assert pdf.content.startswith(b"%PDF-")
    assert _pdf_text(pdf.content, tmp_path / "download.pdf") == _pdf_text(
        (tmp_path / name / "report.pdf").read_bytes(), tmp_path / "folder.pdf")

    store = SqlReportStore(portal.db)
    audit = [(r.username, r.action, r.target) for r in Accounts(store.db).audit_rows()]
    store.close()
    for action in ("download.evidence.html", "download.evidence.zip", "download.evidence.pdf"):
        assert audit.count((EVALUATOR, action, name)) == 1, audit


def _pdf_text(pdf: bytes, path: Path) -> str:
    """The PDF's text as poppler's pdftotext reads it (layout kept)."""
    path.write_bytes(pdf)
    done = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True,
                          check=True)
    text = done.stdout.decode("utf-8")
    assert "Zhang Wei" in text  # the details (declarant) are printed
    return text


@pytest.mark.parametrize("query", ["year=2025&through=2024-12-31", "year=2025&through=soon"])
def test_bad_queries_are_refused_plainly(client: TestClient, query: str) -> None:
    log_in(client, EVALUATOR)
    answer = client.get(f"/factories/{FACTORY}?{query}", headers=HTML)
    assert answer.status_code == 400 and "through" in answer.text
    assert client.get("/factories/unknown-factory", headers=HTML).status_code == 404
