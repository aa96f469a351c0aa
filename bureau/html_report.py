"""The self-contained HTML evidence report of an annual evaluation (Chinese and English labels).

Rendered from the evaluation JSON (`AnnualEvaluation.to_json()`) and its details
(`bureau.evidence_details`: per-device table, issue and receipt dates, declarant), with inline
CSS (screen and A4 print, `bureau.html_style`) and inline SVG charts, so it opens without a
network; `bureau.pdf_report` prints it to PDF. Every number shown is an element carrying its
source, so a machine can check the page against the JSON:

    <td data-ref="/evaluation/conditions/3/measured" data-value="0.7484" data-unit="ratio"
        data-condition="basic.oee_above_province_avg" data-field="measured">74.85%</td>

`data-ref` is an RFC 6901 pointer into evaluation.json (into details.json with
`data-doc="details"`), `data-value` the JSON value, and the
text is `format_value(value, unit)`. `bureau.evidence_verify` checks all three. The conditions
table has id="conditions" and one <tr data-condition=ID data-status=STATUS> per condition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from bureau.annual import KEY_INDICATORS, indicator_unit
from bureau.html_cells import format_value, num, pointer
from bureau.html_details import (
    chain_dates,
    declared_section,
    devices_section,
    timeliness_section,
)
from bureau.html_style import stylesheet
from indicators.catalog import INDICATORS
from indicators.vocabulary import NO_TIER, SOURCES, STATUSES, TIERS

TIER_LABELS: dict[str, str] = {
    tier: f"{label.zh} {label.en.capitalize()}" for tier, label in TIERS.items()
}
STATUS_LABELS: dict[str, str] = {
    status: f"{label.zh} {label.en}" for status, label in STATUSES.items()
}
SOURCE_LABELS: dict[str, str] = {
    source: f"{label.zh} {label.en}" for source, label in SOURCES.items()
}
STATE_LABELS: dict[str, str] = {
    "accepted": "已接受 accepted",
    "pending-link": "待链接 pending link",
    "rejected": "已拒绝 rejected",
    "missing": "缺失 missing",
    "no_data": "无数据 no data",
}
KIND_LABELS: dict[str, str] = {"day": "日 day", "month": "月 month", "year": "年 year"}
CHARTED: tuple[str, ...] = ("oee", "defect_rate", "energy_per_unit", "data_collection_rate")
_num = num
__all__ = ["format_value", "pointer", "render_html"]

def render_html(result: Mapping[str, Any], details: Mapping[str, Any] | None = None) -> str:
    """The whole page as a string (UTF-8, no external resources). `details`: details.json
    (`bureau.evidence_details.build_details`) for the per-device table, the issue and receipt
    dates and the declarant; without it those sections say they are not available."""
    title = "智能工厂梯度评价证据报告 Smart-factory tier evaluation evidence"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN"><head><meta charset="utf-8">',
        f"<title>{escape(title)} — {escape(str(result['factory_id']))} {result['year']}</title>",
        f"<style>{stylesheet()}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        _identity(result),
        _conditions(result),
        declared_section(result, details),
        _indicators(result),
        devices_section(details),
        _monthly(result),
        _quality(result),
        timeliness_section(details),
        _chain(result, details),
        _gaps(result),
        '<p class="small">由 tieragent 生成。离线核验 Verify offline: '
        "<code>tieragent verify &lt;this folder&gt;</code> — every signature, the report chain, "
        "the evaluation recomputed from the reports' base measures, and every number on this "
        "page against evaluation.json.</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _identity(result: Mapping[str, Any]) -> str:
    evaluation = result["evaluation"]
    policy = evaluation["policy"]
    bench = evaluation["benchmarks"]
    reached = evaluation["tier_reached"]
    next_tier = evaluation["next_tier"]
    period = result["period"]
    rows = [
        (
            "工厂 Factory",
            f'<span class="doc-id">{escape(str(result["factory_id"]))} {result["year"]}</span>',
        ),
        ("企业 Enterprise", escape(str(result["enterprise_id"]))),
        (
            "评价期 Period",
            f'<span id="period" data-first-day="{period["first_day"]}" '
            f'data-last-day="{period["last_day"]}">{period["first_day"]} – '
            f"{period['last_day']}</span> ({escape(period['time_zone'])})",
        ),
        (
            "政策 Policy",
            f"{escape(policy['policy_id'])} {escape(policy['version'])} "
            f"({escape(policy['definition'])})",
        ),
        (
            "对标 Benchmarks",
            escape(str(bench["benchmark_id"]))
            if bench["benchmark_id"]
            else "未声明 none declared (benchmark thresholds cannot be met)",
        ),
        (
            "达到等级 Tier reached",
            f'<strong id="tier-reached" data-tier="{reached or ""}">'
            f"{escape(TIER_LABELS.get(reached or '', f'{NO_TIER.zh} {NO_TIER.en}'))}</strong>",
        ),
        (
            "下一等级 Next tier",
            f'<span id="next-tier" data-tier="{next_tier or ""}">'
            f"{escape(TIER_LABELS.get(next_tier or '', '—'))}</span>",
        ),
        (
            "覆盖率 Coverage",
            _num("span", result["coverage"]["share"], "ratio", "/coverage/share")
            + " (≥ "
            + _num("span", result["coverage"]["min_day_share"], "ratio", "/coverage/min_day_share")
            + ")",
        ),
        ("基准年 Baseline", _baseline(result["baseline"])),
    ]
    warning = (
        '<p class="warn">对标值为示例数据，非真实统计。Benchmark values are EXAMPLES, '
        "not real statistics.</p>"
        if bench["example"]
        else ""
    )
    body = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in rows)
    return f'<h2>概况 Overview</h2><dl id="identity">{body}</dl>{warning}'


def _baseline(baseline: Mapping[str, Any]) -> str:
    """The baseline year and its days, or why there is none (never a bare "0 days")."""
    if baseline["year"] is None:
        return '<span id="baseline">无基线 no baseline declared</span>'
    days = _num("span", baseline["days"], "count", "/baseline/days", css="")
    used = (
        "已用于改进指标 used for the improvement indicators"
        if baseline["used"]
        else '<span class="fail">无已接受的有数据日报，未使用 no accepted daily report with data: '
        "not used</span>"
    )
    return f'<span id="baseline">{baseline["year"]}: {days} 天 days — {used}</span>'


def _conditions(result: Mapping[str, Any]) -> str:
    conditions = result["evaluation"]["conditions"]
    gaps = set(result["evaluation"]["gaps"])
    head = (
        "<tr><th>等级 Tier</th><th>条件 Condition</th><th>层级 Level</th><th>实测 Measured</th>"
        "<th>比较 Cmp</th><th>阈值 Threshold</th><th>来源 Source</th><th>结果 Status</th>"
        "<th>说明 Reason</th></tr>"
    )
    rows = []
    for i, c in enumerate(conditions):
        cid = str(c["condition_id"])
        unit = "number" if c["source"] == "declared" else indicator_unit(c["indicator"] or "")
        ref = pointer("evaluation", "conditions", i)
        gap = " (差距 gap)" if cid in gaps else ""
        required = "" if c["required"] else " (参考 info)"
        threshold_ref = f" [{escape(c['threshold_ref'])}]" if c["threshold_ref"] else ""
        rows.append(
            f'<tr data-condition="{escape(cid)}" data-status="{c["status"]}" '
            f'data-source="{c["source"]}">'
            f"<td>{escape(TIER_LABELS.get(c['tier'], c['tier']))}</td>"
            f"<td>{escape(c['label_zh'])}<br>{escape(c['label_en'])}{required}"
            f'<br><span class="small">{escape(cid)}</span></td>'
            f"<td>{escape(c['level'])}</td>"
            + _num("td", c["measured"], unit, ref + "/measured", condition=cid, field="measured")
            + f"<td>{escape(c['comparator'] or '')}</td>"
            + _num("td", c["threshold"], unit, ref + "/threshold", condition=cid, field="threshold")
            + f"<td>{escape(SOURCE_LABELS.get(c['source'], c['source']))}{threshold_ref}</td>"
            f'<td class="{c["status"]}">{escape(STATUS_LABELS.get(c["status"], c["status"]))}'
            f"{gap}</td><td>{escape(c['reason'] or '')}{_declared_documents(c)}</td></tr>"
        )
    return (
        "<h2>评价条件 Conditions</h2>"
        f'<table id="conditions"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _declared_documents(condition: Mapping[str, Any]) -> str:
    """A declared condition's document references (the declared-conditions section has the
    titles and the declarant): a declared "yes" never stands without them."""
    if condition["source"] != "declared":
        return ""
    documents = condition.get("evidence", {}).get("documents") or []
    if not documents:
        return '<br><span class="fail">无证明文件 no documents</span>'
    refs = ", ".join(escape(str(d.get("reference"))) for d in documents)
    return f'<br><span class="small">文件 documents: {refs}</span>'


def _indicators(result: Mapping[str, Any]) -> str:
    rows = []
    for key, item in result["indicators"].items():
        info = INDICATORS.get(key)
        label = f"{info.label_zh}<br>{escape(info.label_en)}" if info else escape(key)
        rows.append(
            f'<tr data-indicator-row="{escape(key)}"><td>{label}<br>'
            f'<span class="small">{escape(key)}</span></td>'
            + _num(
                "td",
                item["value"],
                item["unit"],
                pointer("indicators", key, "value"),
                indicator=key,
            )
            + f"<td>{escape(item['reason'] or '')}</td></tr>"
        )
    return (
        "<h2>年度指标 Indicators of the period</h2>"
        '<p class="small">由全年已接受日报的基础量求和后重新计算（不平均比率）。'
        "Recomputed from the "
        "summed base measures of every accepted daily report (ratios are never averaged).</p>"
        '<table id="indicators"><tr><th>指标 Indicator</th><th>数值 Value</th>'
        f"<th>说明 Reason</th></tr>{''.join(rows)}</table>"
    )


def _monthly(result: Mapping[str, Any]) -> str:
    months = result["monthly"]
    head = "".join(
        f"<th>{escape(INDICATORS[k].label_zh)}<br>{escape(k)}</th>" for k in KEY_INDICATORS
    )
    rows = []
    for i, month in enumerate(months):
        cells = "".join(
            _num(
                "td",
                month["indicators"][k],
                indicator_unit(k),
                pointer("monthly", i, "indicators", k),
                indicator=k,
                month=month["month"],
            )
            for k in KEY_INDICATORS
        )
        rows.append(
            f'<tr data-month="{month["month"]}"><td>{month["month"]}</td>'
            + _num(
                "td",
                month["days_with_data"],
                "count",
                pointer("monthly", i, "days_with_data"),
                month=month["month"],
            )
            + f"{cells}</tr>"
        )
    charts = "".join(_line_chart(months, key) for key in CHARTED)
    return (
        "<h2>月度趋势 Monthly trend</h2>"
        f'<div class="charts">{charts}</div>'
        '<table id="monthly"><thead><tr><th>月 Month</th><th>有数据天数 Days with data</th>'
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _line_chart(months: Sequence[Mapping[str, Any]], key: str) -> str:
    """A small inline SVG line chart of one indicator over the months (gaps stay gaps)."""
    width, height, pad = 300, 140, 28
    values = [m["indicators"].get(key) for m in months]
    known = [v for v in values if v is not None]
    label = f"{INDICATORS[key].label_zh} {key}"
    if not known:
        return (
            f'<div class="chart"><div>{escape(label)}</div>'
            '<p class="small">无数据 no data</p></div>'
        )
    low, high = min(known), max(known)
    if high == low:
        low, high = low - abs(low) * 0.05 - 1e-9, high + abs(high) * 0.05 + 1e-9
    step = (width - 2 * pad) / max(len(values) - 1, 1)

    def y(v: float) -> float:
        return height - pad - (v - low) / (high - low) * (height - 2 * pad)

    segments: list[list[str]] = [[]]
    dots = []
    for i, v in enumerate(values):
        if v is None:
            segments.append([])
            continue
        x = pad + i * step
        segments[-1].append(f"{x:.1f},{y(v):.1f}")
        dots.append(f'<circle cx="{x:.1f}" cy="{y(v):.1f}" r="2.5" fill="#2a5d9f"/>')
    lines = "".join(
        f'<polyline fill="none" stroke="#2a5d9f" stroke-width="2" points="{" ".join(s)}"/>'
        for s in segments
        if len(s) > 1
    )
    unit = indicator_unit(key)
    axis = (
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        'stroke="#888"/>'
        f'<text x="2" y="{pad}" font-size="10">{escape(format_value(high, unit))}</text>'
        f'<text x="2" y="{height - pad}" font-size="10">{escape(format_value(low, unit))}</text>'
        f'<text x="{pad}" y="{height - 8}" font-size="10">{months[0]["month"]}</text>'
        f'<text x="{width - pad - 40}" y="{height - 8}" font-size="10">{months[-1]["month"]}'
        "</text>"
    )
    return (
        f'<div class="chart"><div>{escape(label)}</div>'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(label)}">{axis}{lines}{"".join(dots)}</svg></div>'
    )


def _coverage_chart(months: Sequence[Mapping[str, Any]], bound: float) -> str:
    width, height, pad = 12 * 34 + 40, 150, 24
    bar = (width - 2 * pad) / max(len(months), 1)
    parts = []
    for i, m in enumerate(months):
        x = pad + i * bar
        h = m["share"] * (height - 2 * pad)
        colour = "#16702e" if m["ok"] else "#b3261e"
        parts.append(
            f'<rect x="{x + 2:.1f}" y="{height - pad - h:.1f}" width="{bar - 4:.1f}" '
            f'height="{h:.1f}" fill="{colour}"/>'
            f'<text x="{x + 2:.1f}" y="{height - 8}" font-size="9">{m["month"][5:]}</text>'
        )
    line_y = height - pad - bound * (height - 2 * pad)
    parts.append(
        f'<line x1="{pad}" y1="{line_y:.1f}" x2="{width - pad}" y2="{line_y:.1f}" '
        'stroke="#9a6700" stroke-dasharray="4 3"/>'
    )
    return (
        '<div class="chart coverage-chart">'
        "<div>每月覆盖率 Monthly coverage (虚线 = 下限 dashed = bound)</div>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="monthly coverage">{"".join(parts)}</svg></div>'
    )


def _quality(result: Mapping[str, Any]) -> str:
    coverage = result["coverage"]
    rows = []
    fields = ("days", "accepted", "missing", "no_data", "rejected", "pending_link")
    for i, m in enumerate(coverage["months"]):
        cells = "".join(
            _num(
                "td", m[f], "count", pointer("coverage", "months", i, f), month=m["month"], field=f
            )
            for f in fields
        )
        rows.append(
            f'<tr data-month="{m["month"]}"><td>{m["month"]}</td>{cells}'
            + _num(
                "td",
                m["share"],
                "ratio",
                pointer("coverage", "months", i, "share"),
                month=m["month"],
                field="share",
            )
            + f'<td class="{"pass" if m["ok"] else "fail"}">'
            f"{'达标 ok' if m['ok'] else '低于下限 below bound'}</td></tr>"
        )
    total = "".join(
        _num("td", coverage[f], "count", pointer("coverage", f), field=f) for f in fields
    )
    rows.append(
        f'<tr data-month="total"><th>全年 Total</th>{total}'
        + _num("td", coverage["share"], "ratio", "/coverage/share", field="share")
        + f'<td class="{"pass" if coverage["ok"] else "fail"}">'
        f"{'达标 ok' if coverage['ok'] else '低于下限 below bound'}</td></tr>"
    )
    quality = "".join(
        f"<li>{escape(INDICATORS[k].label_zh)} {k}: "
        + _num(
            "span",
            result["indicators"][k]["value"],
            "ratio",
            pointer("indicators", k, "value"),
            indicator=k,
        )
        + "</li>"
        for k in ("data_collection_rate", "realtime_rate", "data_quality_rate", "networking_rate")
        if k in result["indicators"]
    )
    return (
        "<h2>数据采集质量 Data-collection quality</h2>"
        + _coverage_chart(coverage["months"], coverage["min_day_share"])
        + '<table id="coverage"><tr><th>月 Month</th><th>天数 Days</th><th>已接受 Accepted</th>'
        "<th>缺失 Missing</th><th>无数据 No data</th><th>已拒绝 Rejected</th>"
        "<th>待链接 Pending link</th>"
        f"<th>覆盖率 Share</th><th>状态 State</th></tr>{''.join(rows)}</table>"
        f"<ul>{quality}</ul>"
    )


def _chain(result: Mapping[str, Any], details: Mapping[str, Any] | None) -> str:
    rows = []
    for i, link in enumerate(result["chain"]["reports"]):
        state = str(link["state"])
        kind = str(link.get("kind", "day"))
        revision = f" (修订 revision {int(link['revision'])})" if link.get("revision") else ""
        rows.append(
            f'<tr data-seq="{link["seq"]}" data-kind="{escape(kind)}" '
            f'data-state="{escape(state)}">'
            + _num("td", link["seq"], "count", pointer("chain", "reports", i, "seq"))
            + f"<td>{escape(KIND_LABELS.get(kind, kind))}</td>"
            f"<td>{escape(link['period_key'])}{escape(revision)}</td>"
            f"<td><code>{escape(str(link['report_id']))}</code></td>"
            f"<td><code>{escape(str(link['kid'])[:12])}…</code></td>"
            f'<td class="{escape(state)}">{escape(STATE_LABELS.get(state, state))}</td>'
            f"<td>{'✓' if link['linked_to_previous'] else '—'}</td>"
            f"<td>{'✓' if link['counted'] else '—'}</td>"
            + chain_dates(details, str(link["report_id"]))
            + "</tr>"
        )
    return (
        "<h2>报告链 Chain of reports</h2>"
        '<p class="small">每份报告（日、月、年报告及其修订）都由工厂密钥签名（Ed25519 JWS），'
        "并以 prev_sha256 链接同一条链上的前一份。 "
        "Each report (day, month and year reports and their revisions) is signed with the "
        "factory's key and links its predecessor in the factory's one chain by prev_sha256; the "
        "table lists every stored report between the year's first and last. Verification state: "
        "accepted by the bureau on receipt; re-checked offline by "
        "<code>tieragent verify</code>.</p>"
        '<table id="chain"><thead><tr><th>序号 Seq</th><th>类型 Kind</th><th>期间 Period</th>'
        "<th>报告 Report id</th>"
        "<th>密钥 Key id</th><th>状态 State</th><th>链接 Linked</th><th>计入 Counted</th>"
        "<th>签发 Issued at</th><th>接收 Received at</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _gaps(result: Mapping[str, Any]) -> str:
    coverage = result["coverage"]
    chain = result["chain"]

    def days(key: str) -> str:
        values = coverage[key]
        return ", ".join(escape(d) for d in values) if values else "—"

    gap_items = "".join(
        f'<li data-chain-gap="{g["after_seq"]}">序号 seq '
        + _num("span", g["after_seq"], "count", pointer("chain", "gaps", i, "after_seq"), css="")
        + " → "
        + _num("span", g["next_seq"], "count", pointer("chain", "gaps", i, "next_seq"), css="")
        + "</li>"
        for i, g in enumerate(chain["gaps"])
    )
    rejection_items = "".join(
        f'<li data-rejected="{escape(r["period_key"])}">{escape(r["period_key"])}: '
        f"{escape(str(r['reason']))} ({escape(str(r['report_id']))})</li>"
        for r in chain["rejections"]
    )
    below = ", ".join(coverage["months_below_bound"]) or "—"
    return (
        "<h2>缺口与拒绝 Gaps and rejections</h2>"
        '<dl id="gaps"><dt>缺失日 Missing days</dt>'
        f'<dd id="missing-days">{days("missing_days")}</dd>'
        f'<dt>无数据日 Days without data</dt><dd id="no-data-days">{days("no_data_days")}</dd>'
        f'<dt>仅有被拒报告的日 Days with rejected reports only</dt><dd id="rejected-days">'
        f"{days('rejected_days')}</dd>"
        f'<dt>待链接日 Pending-link days</dt><dd id="pending-link-days">'
        f"{days('pending_link_days')}</dd>"
        f'<dt>低于覆盖下限的月份 Months below the bound</dt><dd id="months-below">{below}</dd></dl>'
        "<h3>链缺口 Chain gaps</h3>"
        '<p class="small">局未收到的序号（链上任何类型的报告都计入，月报和修订不算缺口）。 '
        "Sequence numbers the bureau holds no report for (reports of every kind count, so a "
        "month report or a revision is not a gap).</p>"
        f'<ul id="chain-gaps">{gap_items or "<li>—</li>"}</ul>'
        f'<h3>被拒报告 Rejected reports</h3><ul id="rejections">'
        f"{rejection_items or '<li>—</li>'}</ul>"
    )
