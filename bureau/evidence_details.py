"""What the evidence report shows beside the annual evaluation: the per-device breakdown, when
each report was issued and received, and who declared the declared conditions.

The annual evaluation (`bureau.annual`) sums the whole factory; an evaluator also asks which
devices are not networked, which are automated on a key process, and how each performed. The
signed daily reports carry per-device hourly base measures and the device inventory, so the
breakdown is recomputed here from them with the same indicator functions, device by device.

A year of history delivered in one go (a backfill) must look different from live daily
reporting: every report carries its `issued_at` (signed by the factory) and its receipt the
bureau's `received_at` (signed by the bureau), and the delays after the period's end are
counted against `LATE_AFTER_DAYS`.

`build_details` is pure; the evidence folder stores its result as details.json and
`verify` recomputes it from the folder's reports, receipts and declarations file
(`check_details`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from agent.protocol.envelope import EnvelopeError, Kind, unverified_payload
from agent.protocol.report import base_frame, report_has_samples
from bureau.annual import DayEntry
from bureau.store import ACCEPTED, REJECTED
from indicators.catalog import IndicatorValue, Params
from indicators.columns import BASE_MEASURE_COLUMNS
from indicators.data_rates import data_rates
from indicators.efficiency import efficiency
from indicators.evaluate import json_safe
from indicators.inventory_rates import AUTOMATED_KINDS, inventory_rates
from indicators.measures import daily_measures, totals
from indicators.policy import Declarations, PolicyFileError, load_declarations

DETAILS_FORMAT = "tieragent-evidence-details/v1"
DETAILS_NAME = "details.json"
# A daily report issued or received more than this many days after its day ended was not
# delivered as live daily reporting (a backfill, or a long outage of the link).
LATE_AFTER_DAYS = 2
DEVICE_INDICATORS: tuple[str, ...] = (
    "networking_rate",
    "oee",
    "availability",
    "data_collection_rate",
)
_DAY_S = 86400.0


def build_details(
    result: Mapping[str, Any],
    entries: Sequence[DayEntry],
    receipts: Mapping[str, str | None],
    declarations: Declarations | None,
) -> dict[str, Any]:
    """The details of `result` (`AnnualEvaluation.to_json()`): `entries` are the reports the
    evaluation and its chain section used (any kind, any state), `receipts` the stored receipt
    JWS of each report id (None when the bureau holds none)."""
    return json_safe(
        {
            "format": DETAILS_FORMAT,
            "devices": device_breakdown(result, entries),
            "timeliness": timeliness(result, entries, receipts),
            "declarant": declarant(declarations),
        }
    )


# --- devices -------------------------------------------------------------------------------------


def _counted(result: Mapping[str, Any], entries: Sequence[DayEntry]) -> list[DayEntry]:
    """The daily reports the evaluation counted (the chain section marks them), with payload."""
    counted = {str(link["report_id"]) for link in result["chain"]["reports"] if link["counted"]}
    chosen: dict[str, DayEntry] = {}
    for entry in entries:
        if entry.report_id in counted and entry.payload is not None and entry.state == ACCEPTED:
            chosen.setdefault(str(entry.report_id), entry)
    return [e for e in chosen.values() if report_has_samples(e.payload or {})]


def device_breakdown(
    result: Mapping[str, Any], entries: Sequence[DayEntry]
) -> list[dict[str, Any]]:
    """One record per inventory device of the latest counted report: its inventory facts and
    its indicators over the counted days (networking_rate: the share of the factory's days
    with data on which this device was networked)."""
    counted = sorted(_counted(result, entries), key=lambda e: e.period_key)
    if not counted:
        return []
    latest = counted[-1].payload
    assert latest is not None
    params = Params(**dict(result["params"]))
    rows: list[list[Any]] = []
    for entry in counted:
        assert entry.payload is not None
        rows.extend(entry.payload["base_measures"]["rows"])
    base = daily_measures(
        base_frame({"columns": BASE_MEASURE_COLUMNS, "rows": rows}), params.time_zone
    )
    inventory = pd.DataFrame(latest["inventory"])
    out: list[dict[str, Any]] = []
    for record in sorted(latest["inventory"], key=lambda r: str(r["device_id"])):
        device = str(record["device_id"])
        own = base[base["device_id"] == device]
        values: dict[str, IndicatorValue] = {}
        if len(own):
            sums = totals(own)
            values.update({v.id: v for v in efficiency(sums, params)})
            values.update({v.id: v for v in data_rates(sums)})
        one = inventory[inventory["device_id"].astype(str) == device]
        values.update(
            {v.id: v for v in inventory_rates(base, one, params) if v.id == "networking_rate"}
        )
        out.append(
            {
                "device_id": device,
                "line": str(record.get("line") or ""),
                "process_step": str(record.get("process_step") or ""),
                "key_process": bool(record.get("key_process")),
                "kind": str(record.get("kind") or ""),
                "automated": str(record.get("kind")) in AUTOMATED_KINDS,
                "digital": bool(record.get("digital")),
                "connection": str(record.get("connection") or "none"),
                "days_with_data": int(own["hour_start"].nunique()),
                "networked_days": int(
                    values["networking_rate"].inputs.get("numerator_device_days", 0)
                ),
                "indicators": {
                    key: {
                        "value": values[key].value if key in values else None,
                        "reason": values[key].reason if key in values else "no_data",
                    }
                    for key in DEVICE_INDICATORS
                },
            }
        )
    return out


def not_networked(devices: Sequence[Mapping[str, Any]]) -> list[str]:
    """Devices without a connection or never networked on a day with data."""
    return [
        str(d["device_id"])
        for d in devices
        if d["connection"] == "none" or int(d["networked_days"]) == 0
    ]


# --- issue and receipt dates ----------------------------------------------------------------------


def _payload(entry: DayEntry) -> dict[str, Any] | None:
    if entry.payload is not None:
        return entry.payload
    if entry.jws is None:
        return None
    try:
        return unverified_payload(entry.jws, Kind.REPORT)
    except EnvelopeError:
        return None


def received_at(receipt: str | None) -> str | None:
    """The bureau's `received_at` in a stored receipt JWS (None without a readable one)."""
    if not receipt:
        return None
    try:
        value = unverified_payload(receipt, Kind.RECEIPT).get("received_at")
    except EnvelopeError:
        return None
    return str(value) if value else None


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def timeliness(
    result: Mapping[str, Any],
    entries: Sequence[DayEntry],
    receipts: Mapping[str, str | None],
) -> dict[str, Any]:
    """Per report of the chain section: issued_at, received_at and their delays in days after
    the period ended; and the counts of the year's daily reports issued or received late."""
    wanted = {str(link["report_id"]) for link in result["chain"]["reports"]}
    reports: dict[str, dict[str, Any]] = {}
    for entry in entries:
        report_id = str(entry.report_id)
        if entry.state == REJECTED or report_id not in wanted or report_id in reports:
            continue
        payload = _payload(entry)
        if payload is None:
            continue
        end = float(payload["period"]["end"])
        issued = str(payload["issued_at"])
        receipt_at = received_at(receipts.get(report_id))
        reports[report_id] = {
            "kind": str(payload["period"]["kind"]),
            "period_key": str(payload["period"]["key"]),
            "issued_at": issued,
            "received_at": receipt_at,
            "issue_delay_days": round((_epoch(issued) - end) / _DAY_S, 3),
            "receipt_delay_days": (
                round((_epoch(receipt_at) - end) / _DAY_S, 3) if receipt_at else None
            ),
        }
    first, last = result["period"]["first_day"], result["period"]["last_day"]
    days = [
        r for r in reports.values() if r["kind"] == "day" and first <= r["period_key"] <= last
    ]
    received = [r for r in days if r["received_at"] is not None]
    return {
        "late_after_days": LATE_AFTER_DAYS,
        "daily_reports": len(days),
        "issued_late": sum(1 for r in days if r["issue_delay_days"] > LATE_AFTER_DAYS),
        "received_late": sum(1 for r in received if r["receipt_delay_days"] > LATE_AFTER_DAYS),
        "without_receipt": len(days) - len(received),
        "first_received_at": min((r["received_at"] for r in received), default=None),
        "last_received_at": max((r["received_at"] for r in received), default=None),
        "reports": dict(sorted(reports.items())),
    }


# --- declarations --------------------------------------------------------------------------------


def declarant(declarations: Declarations | None) -> dict[str, Any] | None:
    """Who declared the declared conditions and when (None: no declarations file)."""
    if declarations is None:
        return None
    baseline = declarations.baseline
    return {
        "factory_id": declarations.factory_id,
        "declared_by": declarations.declared_by,
        "declared_at": declarations.declared_at,
        "baseline": None
        if baseline is None
        else {
            "period": baseline.period,
            "documents": [d.model_dump() for d in baseline.documents],
        },
        "notes": {key: item.note for key, item in sorted(declarations.items.items()) if item.note},
    }


# --- offline check -------------------------------------------------------------------------------


def folder_receipts(path: Path) -> dict[str, str | None]:
    """The stored receipt of each report id in the folder's log/proofs.json ({} if none)."""
    try:
        proofs = json.loads((path / "log" / "proofs.json").read_text(encoding="utf-8"))
        return {str(e["report_id"]): e.get("receipt") for e in proofs["entries"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def load_details(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        details = json.loads((path / DETAILS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        problems.append(f"{DETAILS_NAME}: missing or not JSON ({error}).")
        return None
    if not isinstance(details, dict) or details.get("format") != DETAILS_FORMAT:
        problems.append(f"{DETAILS_NAME}: format is not {DETAILS_FORMAT}.")
        return None
    return details


def verify_details(
    path: Path,
    evaluation: Mapping[str, Any],
    entries: Sequence[DayEntry],
    declarations: Path | None,
    problems: list[str],
) -> dict[str, Any] | None:
    """Check the folder's details.json against the details recomputed from its verified
    reports (`entries`), the receipts in log/proofs.json and its declarations file; return
    details.json (None when unreadable) for the check of report.html."""
    details = load_details(path, problems)
    if details is None:
        return None
    try:
        loaded = load_declarations(declarations) if declarations is not None else None
        recomputed = build_details(evaluation, entries, folder_receipts(path), loaded)
    except (PolicyFileError, ValueError, KeyError, TypeError) as error:
        problems.append(f"{DETAILS_NAME}: cannot be recomputed from the folder ({error}).")
        return details
    check_details(details, json.loads(json.dumps(recomputed)), problems)
    return details


def check_details(
    details: Mapping[str, Any],
    recomputed: Mapping[str, Any],
    problems: list[str],
) -> None:
    """details.json must be what the folder's reports, receipts and declarations give."""
    for section in ("devices", "timeliness", "declarant"):
        if details.get(section) != recomputed.get(section):
            problems.append(
                f"{DETAILS_NAME}: its {section} differ from those recomputed from the folder's "
                "reports, receipts and declarations."
            )
