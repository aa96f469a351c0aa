"""The printable evidence report: report.pdf in the evidence folder, checked with poppler's own
tools (pdftotext, pdffonts, pdfinfo, pdftoppm), and the HTML sections evaluators asked for
(per-device table, issue and receipt dates, declared conditions with documents and declarant,
no bare "None" or "0 天 days")."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from annual_scenario import Scenario
from simdata import DECLARATIONS, FACTORY, POLICY, issued_after

from bureau.evidence_details import DETAILS_NAME, LATE_AFTER_DAYS, build_details, not_networked
from bureau.evidence_export import evaluate_from_store, load_chain
from bureau.evidence_verify import verify_evidence_dir
from bureau.html_cells import format_value
from bureau.html_report import render_html
from bureau.store import SqliteReportStore
from indicators.catalog import Params
from indicators.kpi import compute
from indicators.policy import PolicyFiles, load_declarations

A4_PT = (595.276, 841.89)
CJK_LABELS = ("概况", "评价条件", "申报条件", "设备明细", "月度趋势", "报告时效", "报告链",
              "生产设备联网率", "设备综合效率")


def _tool(name: str, *args: str) -> str:
    if shutil.which(name) is None:
        pytest.fail(f"{name} is missing: apt-get install -y poppler-utils (.ci/setup)")
    return subprocess.run([name, *args], capture_output=True, text=True, check=True,
                          timeout=120).stdout


def _squeezed(text: str) -> str:
    """Text without whitespace: table cells wrap a figure over lines in the PDF."""
    return re.sub(r"\s+", "", text)


def _evaluation(evidence: Path) -> dict[str, Any]:
    return json.loads((evidence / "evaluation.json").read_text(encoding="utf-8"))


def _details(evidence: Path) -> dict[str, Any]:
    return json.loads((evidence / DETAILS_NAME).read_text(encoding="utf-8"))


def test_the_pdf_is_in_the_folder_and_sealed_by_the_manifest(evidence: Path) -> None:
    manifest = json.loads((evidence / "manifest.json").read_text(encoding="utf-8"))
    assert (evidence / "report.pdf").read_bytes().startswith(b"%PDF-")
    assert {"report.pdf", DETAILS_NAME} <= set(manifest["files"])
    assert verify_evidence_dir(evidence).problems == []


def test_pdftotext_gives_the_chinese_labels_and_the_evaluations_figures(evidence: Path) -> None:
    """If the PDF is read back as text, then the Chinese labels are there (not boxes: the text
    layer holds the characters) and so is every figure of the evaluation as the page shows it."""
    text = _squeezed(_tool("pdftotext", str(evidence / "report.pdf"), "-"))
    for label in CJK_LABELS:
        assert label in text, label
    result = _evaluation(evidence)
    figures = [format_value(result["coverage"]["share"], "ratio")]
    figures += [format_value(c["measured"], "ratio") for c in result["evaluation"]["conditions"]
                if c["source"] == "measured" and isinstance(c["measured"], float)]
    figures += [format_value(v["value"], "ratio") for v in result["indicators"].values()
                if v["unit"] == "ratio" and v["value"] is not None]
    figures += [format_value(m["indicators"]["oee"], "ratio") for m in result["monthly"]]
    missing = [f for f in figures if _squeezed(f) not in text]
    assert len(figures) > 20 and missing == []
    tier = result["evaluation"]["next_tier"]
    assert tier and {"basic": "基础级"}.get(tier, "") in text


def test_pdffonts_shows_the_cjk_font_embedded(evidence: Path) -> None:
    rows = _tool("pdffonts", str(evidence / "report.pdf")).splitlines()[2:]
    cjk = [row for row in rows if "WenQuanYi" in row or "NotoSansCJK" in row.replace(" ", "")]
    assert cjk, rows
    for row in cjk:
        emb, _sub, uni = row.split()[-5:-2]
        assert (emb, uni) == ("yes", "yes"), row


def test_every_page_is_a4_and_renders(evidence: Path, tmp_path: Path) -> None:
    pdf = str(evidence / "report.pdf")
    pages = int(re.search(r"Pages:\s+(\d+)", _tool("pdfinfo", pdf)).group(1))  # type: ignore[union-attr]
    sizes = re.findall(r"Page\s+\d+ size:\s+([\d.]+) x ([\d.]+) pts",
                       _tool("pdfinfo", "-f", "1", "-l", str(pages), pdf))
    assert len(sizes) == pages > 1
    assert all(abs(float(w) - A4_PT[0]) < 1 and abs(float(h) - A4_PT[1]) < 1 for w, h in sizes)
    _tool("pdftoppm", "-r", "24", "-png", pdf, str(tmp_path / "page"))
    images = sorted(tmp_path.glob("page*.png"))
    assert len(images) == pages
    for image in images:
        width, height = struct.unpack(">II", image.read_bytes()[16:24])  # the PNG IHDR
        # pdftoppm rounds a page's pixel size up: 595.3 pt at 24 dpi is 198.4, drawn as 199.
        assert abs(width - A4_PT[0] / 72 * 24) < 1 and abs(height - A4_PT[1] / 72 * 24) < 1


def test_the_print_stylesheet_numbers_pages_and_fits_tables(evidence: Path) -> None:
    html = (evidence / "report.html").read_text(encoding="utf-8")
    assert "size:A4" in html and "counter(page)" in html and "counter(pages)" in html
    assert "table-layout:fixed" in html
    text = _tool("pdftotext", "-layout", str(evidence / "report.pdf"), "-")
    assert re.search(r"page 1 of \d+", text)
    assert '"WenQuanYi Micro Hei"' in html  # the font .ci/setup installs (fonts-wqy-microhei)


def test_the_device_table_matches_each_devices_own_base_measures(
    scenario: Scenario, evidence: Path
) -> None:
    """If a device's OEE is recomputed from the simulator's own hourly rows of the counted
    days (not from the reports), then it is the value of the device table."""
    result, details = _evaluation(evidence), _details(evidence)
    inventory = scenario.sim.inventory
    assert [d["device_id"] for d in details["devices"]] == sorted(inventory["device_id"])
    counted = {link["period_key"] for link in result["chain"]["reports"] if link["counted"]}
    params = Params(**result["params"])
    base = scenario.sim.base
    local = pd.to_datetime(base["hour_start"], unit="s", utc=True).dt.tz_convert(
        params.time_zone).dt.strftime("%Y-%m-%d")
    base = base[local.isin(counted)]
    html = (evidence / "report.html").read_text(encoding="utf-8")
    for device in details["devices"]:
        own = base[base["device_id"] == device["device_id"]]
        expected = compute(own, inventory[inventory["device_id"] == device["device_id"]], params)
        assert device["indicators"]["oee"]["value"] == pytest.approx(expected["oee"].value)
        assert f'<tr data-device="{device["device_id"]}">' in html
    offline = set(inventory.loc[inventory["connection"] == "none", "device_id"])
    assert offline and offline <= set(not_networked(details["devices"]))
    assert f"Devices not networked: <strong>{len(not_networked(details['devices']))}</strong>" \
        in html


def test_issue_and_receipt_dates_show_a_backfill(evidence: Path) -> None:
    """The scenario's reports were issued the morning after their day but delivered all at
    once now: every one counts as received late, none as issued late, and the chain table
    shows both dates."""
    result, details = _evaluation(evidence), _details(evidence)
    t = details["timeliness"]
    days = result["coverage"]["accepted"] + result["coverage"]["no_data"] + \
        result["coverage"]["pending_link"]
    assert t["daily_reports"] == days and t["issued_late"] == 0
    assert t["received_late"] == days and t["without_receipt"] == 0
    html = (evidence / "report.html").read_text(encoding="utf-8")
    assert f"Received more than {LATE_AFTER_DAYS} days after their day: " in html
    assert 'id="backfill"' in html and "backfill" in html
    first = next(link for link in result["chain"]["reports"] if link["kind"] == "day")
    record = t["reports"][first["report_id"]]
    assert record["issued_at"] == issued_after(date.fromisoformat(first["period_key"]))
    assert f'>{record["issued_at"]}</td>' in html and f'>{record["received_at"]}</td>' in html


def test_declared_conditions_show_documents_and_declarant(evidence: Path) -> None:
    html = (evidence / "report.html").read_text(encoding="utf-8")
    declarations = load_declarations(DECLARATIONS)
    assert declarations.declared_by in html and declarations.declared_at in html
    for item in declarations.items.values():
        for doc in item.documents:
            assert doc.reference in html
    conditions = html[html.index('<table id="conditions">'):html.index("</table>")]
    rows = [row for row in conditions.split("<tr")[1:] if 'data-source="declared"' in row]
    assert rows and all("documents" in row for row in rows)


def test_no_none_and_no_empty_baseline_without_baseline_or_benchmarks(
    scenario: Scenario,
) -> None:
    """If the year is evaluated with no baseline year and no benchmarks file, then the page
    says so: no line reads "None" and no baseline row reads "0 天 days"."""
    store = SqliteReportStore(scenario.db)
    try:
        result, entries, _ = evaluate_from_store(
            store, FACTORY, 2025, PolicyFiles(POLICY, None, DECLARATIONS),
            through=date(2025, 2, 28),
        )
        chain = load_chain(store, FACTORY, 2025)
        receipts = {r.report_id: r.receipt_jws for r in store.reports(FACTORY)}
    finally:
        store.close()
    result_json = result.to_json()
    assert result_json["baseline"]["year"] is None
    assert result_json["evaluation"]["benchmarks"]["benchmark_id"] is None
    details = build_details(result_json, [*entries, *chain], receipts, None)
    for page in (render_html(result_json, details), render_html(result_json)):
        lines = page.splitlines()
        assert [line for line in lines if "None" in line] == []
        assert [line for line in lines if "0 天 days" in line] == []
        assert "无基线 no baseline declared" in page
        assert "对标 Benchmarks</dt><dd>未声明 none declared" in page
    assert "无申报文件 no declarations file" in render_html(result_json, details)
    assert "不可用 not available" in render_html(result_json)


def test_verify_names_an_edited_device_figure(evidence: Path, tmp_path: Path) -> None:
    """details.json is sealed and recomputed: an edited device OEE is named even when the
    manifest's hash is fixed up, and so is an edited figure of the device table."""
    copy = tmp_path / "copy"
    shutil.copytree(evidence, copy)
    details = _details(copy)
    details["devices"][0]["indicators"]["oee"]["value"] = 0.99
    (copy / DETAILS_NAME).write_text(json.dumps(details), encoding="utf-8")
    problems = verify_evidence_dir(copy).problems
    assert any(p.startswith(f"{DETAILS_NAME}: its devices differ") for p in problems)
    html = (evidence / "report.html").read_text(encoding="utf-8")
    device = _details(evidence)["devices"][0]
    shown = format_value(device["indicators"]["oee"]["value"], "ratio")
    edited = html.replace(f'data-device="{device["device_id"]}" data-indicator="oee">{shown}<',
                          f'data-device="{device["device_id"]}" data-indicator="oee">99.00%<', 1)
    assert edited != html
    shutil.copy(evidence / DETAILS_NAME, copy / DETAILS_NAME)
    (copy / "report.html").write_text(edited, encoding="utf-8")
    problems = verify_evidence_dir(copy).problems
    assert any("report.html" in p and f"device {device['device_id']}" in p and "99.00%" in p
               for p in problems)
