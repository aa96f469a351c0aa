"""Show a tier evaluation: a rich table for people, stable JSON for machines."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table
from rich.text import Text

from indicators.catalog import INDICATORS
from indicators.evaluate import ConditionResult, Evaluation
from indicators.vocabulary import NO_TIER, SOURCES, TIERS

TIER_NAMES: dict[str, str] = {tier: f"{label.zh} {label.en}" for tier, label in TIERS.items()}
_STATUS_STYLE: dict[str, tuple[str, str]] = {
    "pass": ("PASS", "bold green"),
    "declared_pass": ("PASS (declared)", "green"),
    "fail": ("FAIL", "bold red"),
    "declared_fail": ("FAIL (declared)", "red"),
    "insufficient_data": ("NO DATA", "bold yellow"),
    "not_declared": ("NOT DECLARED", "bold red"),
}
_SOURCE_LABEL = {source: f"{label.en} {label.zh}" for source, label in SOURCES.items()}


def render_evaluation(evaluation: Evaluation, console: Console) -> None:
    """Print one table per tier (condition, measured, threshold, source, status) and a summary."""
    reached = TIER_NAMES.get(evaluation.tier_reached or "", f"{NO_TIER.en} {NO_TIER.zh}")
    console.print(
        f"[bold]Tier reached 达到等级:[/] {reached}   "
        f"policy {evaluation.policy_id} {evaluation.policy_version}   "
        f"coverage {_number(evaluation.coverage, 'ratio')} "
        f"(min {evaluation.coverage_bound:.0%} of days)"
    )
    if evaluation.benchmark_example:
        console.print(
            f"[yellow]Benchmarks {evaluation.benchmark_id} are EXAMPLE values, "
            "not real statistics.[/]"
        )
    for tier in TIER_NAMES:
        rows = [c for c in evaluation.conditions if c.tier == tier]
        if not rows:
            continue
        table = Table(title=TIER_NAMES[tier], title_justify="left", expand=False)
        # Every column wraps (fold) rather than being cut or dropped at 80 columns; the
        # condition keeps room for its Chinese and English names.
        table.add_column("Condition 条件", overflow="fold", max_width=48)
        table.add_column("Level", overflow="fold")
        table.add_column("Measured 实测", justify="right", overflow="fold")
        table.add_column("Threshold 阈值", justify="right", overflow="fold")
        table.add_column("Source 来源", overflow="fold")
        table.add_column("Status 状态", overflow="fold")
        for row in rows:
            table.add_row(
                Text(f"{row.label_zh}\n{row.label_en}" + ("" if row.required else " (info)")),
                row.level,
                Text(_measured(row)),
                # Text, not markup: "[province.avg]" would otherwise vanish as a style tag.
                Text(_threshold(row)),
                _SOURCE_LABEL.get(row.source, row.source),
                _status(row),
            )
        console.print(table)
    if evaluation.next_tier is not None:
        console.print(f"[bold]Gaps to {TIER_NAMES[evaluation.next_tier]} 差距:[/]")
        for gap in evaluation.gaps:
            console.print(
                f"  - {gap.condition_id}: {gap.label_zh} / {gap.label_en}", highlight=False
            )


def evaluation_json(evaluation: Evaluation) -> str:
    """The evaluation as JSON text: sorted keys, UTF-8 characters kept, NaN refused."""
    return json.dumps(
        evaluation.to_json(), ensure_ascii=False, sort_keys=True, indent=2, allow_nan=False
    )


def _status(row: ConditionResult) -> Text:
    label, style = _STATUS_STYLE.get(row.status, (row.status, ""))
    if row.reason and row.status in ("insufficient_data", "fail", "not_declared"):
        label = f"{label} ({row.reason})"
    return Text(label, style=style)


def _unit(row: ConditionResult) -> str:
    return INDICATORS[row.indicator].unit if row.indicator in INDICATORS else ""


def _measured(row: ConditionResult) -> str:
    if row.measured is None:
        return "—"
    if isinstance(row.measured, bool):
        return "yes" if row.measured else "no"
    if isinstance(row.measured, str):
        return row.measured
    if row.source == "declared":
        return f"{row.measured:g}"
    return _number(float(row.measured), _unit(row))


def _threshold(row: ConditionResult) -> str:
    if row.comparator is None:
        return "declared = yes"
    if row.threshold is None:
        value = "—"
    elif row.source == "declared":
        value = f"{row.threshold:g}"
    else:
        value = _number(row.threshold, _unit(row))
    ref = f" [{row.threshold_ref.removeprefix('benchmark:')}]" if row.threshold_ref else ""
    return f"{row.comparator} {value}{ref}"


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "ratio":
        return f"{value:.1%}"
    if unit == "s":
        return f"{value:,.0f} s"
    return f"{value:.4g} {unit}".strip()
