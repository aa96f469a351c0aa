"""The evidence report's sections drawn from details.json (`bureau.evidence_details`): the
per-device table, the reporting timeliness (issue and receipt dates), the declared conditions
with their documents and declarant.

Without details (a caller that has only the evaluation JSON) each section says so instead of
showing nothing, so a missing breakdown is never mistaken for an empty one.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from bureau.evidence_details import DEVICE_INDICATORS, not_networked
from bureau.html_cells import num, pointer
from indicators.catalog import INDICATORS

DETAILS = "details"  # data-doc of cells that point into details.json
_NO_DETAILS = (
    '<p class="warn">{what}: 不可用 not available — the page was rendered from the evaluation '
    "alone, without the signed reports (bureau.evidence_details.build_details).</p>"
)
_KINDS = {
    "cnc": "数控 CNC",
    "robot": "机器人 robot",
    "plc_automated": "PLC 自动 PLC automated",
    "dcs": "DCS",
    "manual": "人工 manual",
    "other": "其他 other",
}


def devices_section(details: Mapping[str, Any] | None) -> str:
    title = "<h2>设备明细 Devices</h2>"
    if details is None:
        return title + _NO_DETAILS.format(what="设备明细 Per-device breakdown")
    devices = details["devices"]
    if not devices:
        return title + '<p class="warn">无计入的日报，无设备数据 No counted daily report, so no ' \
            "device data.</p>"
    absent = not_networked(devices)
    summary = (
        f"<p>未联网设备 Devices not networked: <strong>{len(absent)}</strong> / {len(devices)}"
        + (f" — {escape(', '.join(absent))}" if absent else "")
        + "</p>"
    )
    head = (
        "<tr><th>设备 Device</th><th>产线 / 工序 Line / step</th><th>关键工序 Key process</th>"
        "<th>类型 Kind</th><th>数控/自动化 CNC / automated</th><th>连接 Connection</th>"
        "<th>有数据天数 Days with data</th><th>联网天数 Networked days</th>"
        + "".join(
            f"<th>{escape(INDICATORS[k].label_zh)}<br>{escape(INDICATORS[k].label_en)}</th>"
            for k in DEVICE_INDICATORS
        )
        + "</tr>"
    )
    rows = []
    for i, device in enumerate(devices):
        at = ("devices", i)
        device_id = str(device["device_id"])
        cells = [
            f"<td><code>{escape(device_id)}</code></td>",
            f"<td>{escape(device['line'])} / {escape(device['process_step'])}</td>",
            num("td", device["key_process"], "", pointer(*at, "key_process"), css="",
                doc=DETAILS, device=device_id),
            f"<td>{escape(_KINDS.get(device['kind'], device['kind']))}</td>",
            num("td", device["automated"], "", pointer(*at, "automated"), css="",
                doc=DETAILS, device=device_id),
            f'<td class="{"fail" if device["connection"] == "none" else ""}">'
            f"{escape('未连接 none' if device['connection'] == 'none' else device['connection'])}"
            "</td>",
            num("td", device["days_with_data"], "count", pointer(*at, "days_with_data"),
                doc=DETAILS, device=device_id),
            num("td", device["networked_days"], "count", pointer(*at, "networked_days"),
                doc=DETAILS, device=device_id),
        ]
        for key in DEVICE_INDICATORS:
            item = device["indicators"][key]
            reason = (
                f' <span class="small">{escape(str(item["reason"]))}</span>'
                if item["reason"]
                else ""
            )
            cells.append(
                '<td class="num">'
                + num("span", item["value"], "ratio", pointer(*at, "indicators", key, "value"),
                      css="", doc=DETAILS, device=device_id, indicator=key)
                + f"{reason}</td>"
            )
        rows.append(f'<tr data-device="{escape(device_id)}">{"".join(cells)}</tr>')
    return (
        title
        + '<p class="small">每台设备在计入的日报中的基础量求和后计算；'
        "联网天数：该设备采集完整的天数。 "
        "Each device's indicators from its own summed base measures in the counted daily "
        "reports; networked days: the factory's days with data on which the device delivered "
        "enough of its expected samples (networking_rate: their share).</p>"
        + summary
        + f'<table id="devices"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
    )


def timeliness_section(details: Mapping[str, Any] | None) -> str:
    title = '<h2>报告时效 Reporting timeliness</h2>'
    if details is None:
        return title + _NO_DETAILS.format(what="签发与接收日期 Issue and receipt dates")
    t = details["timeliness"]
    late = int(t["late_after_days"])

    def count(key: str) -> str:
        return num("strong", t[key], "count", pointer("timeliness", key), css="", doc=DETAILS)

    backfilled = int(t["received_late"]) > 0 or int(t["issued_late"]) > 0
    verdict = (
        '<p class="warn" id="backfill">部分报告非逐日实时上报（补报或长时间断链）。 Some reports '
        f"were not delivered as live daily reporting: issued or received more than {late} days "
        "after their day ended (a backfill or a long outage).</p>"
        if backfilled
        else f'<p id="backfill">全部日报在期末 {late} 天内签发并接收。 Every daily report was '
        f"issued and received within {late} days of its day's end.</p>"
    )
    return (
        title
        + '<p class="small">签发时间 issued_at 由工厂签名；接收时间 received_at 由局在回执中签名。 '
        "issued_at is signed by the factory in the report; received_at by the bureau in its "
        "receipt. Delays count from the end of the report's period.</p>"
        + '<ul id="timeliness">'
        + f"<li>评价期日报 Daily reports of the period: {count('daily_reports')}</li>"
        + f"<li>签发晚于 {late} 天 Issued more than {late} days after their day: "
        + count("issued_late") + "</li>"
        + f"<li>接收晚于 {late} 天 Received more than {late} days after their day: "
        + count("received_late") + "</li>"
        + f"<li>无回执 Without a stored receipt: {count('without_receipt')}</li>"
        + "<li>首次 / 最后接收 First / last received: "
        + num("span", t["first_received_at"], "", pointer("timeliness", "first_received_at"),
              css="", doc=DETAILS)
        + " / "
        + num("span", t["last_received_at"], "", pointer("timeliness", "last_received_at"),
              css="", doc=DETAILS)
        + "</li></ul>"
        + verdict
    )


def chain_dates(details: Mapping[str, Any] | None, report_id: str) -> str:
    """The issued-at and received-at cells of a chain row."""
    if details is None:
        return "<td>—</td><td>—</td>"
    record = details["timeliness"]["reports"].get(report_id)
    if record is None:
        return "<td>—</td><td>—</td>"
    late = float(details["timeliness"]["late_after_days"])
    at = ("timeliness", "reports", report_id)
    received_late = record["receipt_delay_days"] is not None and (
        record["receipt_delay_days"] > late
    )
    return num(
        "td", record["issued_at"], "", pointer(*at, "issued_at"),
        css="late" if record["issue_delay_days"] > late else "", doc=DETAILS,
    ) + num(
        "td", record["received_at"], "", pointer(*at, "received_at"),
        css="late" if received_late else "", doc=DETAILS,
    )


def declared_section(result: Mapping[str, Any], details: Mapping[str, Any] | None) -> str:
    """Every declared condition with its value, status, documents, note and the declarant."""
    declared = [
        (i, c) for i, c in enumerate(result["evaluation"]["conditions"])
        if c["source"] == "declared"
    ]
    title = "<h2>申报条件 Declared conditions</h2>"
    if details is None:
        who = "申报人不可用 declarant not available (rendered without details)"
    elif details["declarant"] is None:
        who = "无申报文件 no declarations file: nothing was declared"
    else:
        d = details["declarant"]
        who = (
            f'申报人 Declared by <strong id="declared-by">{escape(str(d["declared_by"]))}</strong>'
            f", 申报日期 on {escape(str(d['declared_at']))}"
            f" (工厂 factory {escape(str(d['factory_id']))})"
        )
    if not declared:
        return title + f"<p>{who}</p><p>政策无申报条件 The policy has no declared condition.</p>"
    notes = (details or {}).get("declarant") or {}
    rows = []
    for i, c in declared:
        documents = c.get("evidence", {}).get("documents") or []
        docs = (
            '<ul class="docs">' + "".join(_document(d) for d in documents) + "</ul>"
            if documents
            else '<span class="fail">无证明文件 no documents given</span>'
        )
        note = notes.get("notes", {}).get(str(c["declared"]), "") if notes else ""
        rows.append(
            f'<tr data-declared="{escape(str(c["declared"]))}">'
            f"<td>{escape(c['label_zh'])}<br>{escape(c['label_en'])}"
            f'<br><span class="small">{escape(str(c["declared"]))}</span></td>'
            + num("td", c["measured"], "number",
                  pointer("evaluation", "conditions", i, "measured"),
                  condition=str(c["condition_id"]), field="measured")
            + f'<td class="{c["status"]}">{escape(str(c["status"]))}</td>'
            f"<td>{docs}</td><td>{escape(note)}</td></tr>"
        )
    return (
        title
        + f'<p id="declarant">{who}</p>'
        + '<table id="declared"><thead><tr><th>条件 Condition</th><th>申报值 Value</th>'
        "<th>结果 Status</th><th>证明文件 Documents</th><th>说明 Note</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _document(doc: Mapping[str, Any]) -> str:
    parts = [f"{escape(str(doc.get('title')))} — {escape(str(doc.get('reference')))}"]
    if doc.get("date"):
        parts.append(f"({escape(str(doc['date']))})")
    if doc.get("sha256"):
        digest = escape(str(doc["sha256"]))
        parts.append(f'<span class="small">SHA-256 <code>{digest}</code></span>')
    return f"<li>{' '.join(parts)}</li>"
