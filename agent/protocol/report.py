"""Build a tieragent report (a plain dict) from DataFrames, metadata and segment digests.

`build_report` is pure: same inputs, same dict, bit for bit. It computes the indicators
itself from exactly the base-measure rows it puts in the report (hourly rows for a day,
per-device daily sums for a month or a year), so the bureau can recompute them from the
report alone with `recompute_indicators`. Periods are calendar periods in the factory's
time zone; `start`/`end` are epoch seconds (UTC) of their bounds, [start, end).

Every report validates against agent/protocol/data/report.schema.json (the same file as
config/schemas/report.schema.json) and canonicalises (RFC 8785): NaN/Inf or out-of-range
integers raise `ReportError` at build time.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

import jsonschema
import jsonschema_rs
import numpy as np
import pandas as pd

from agent.protocol.envelope import EnvelopeError, canonical_form
from agent.protocol.errors import ProtocolError
from agent.protocol.merkle import SEGMENTING_RULE, root
from agent.protocol.period import Period
from indicators.columns import (
    BASE_MEASURE_COLUMNS,
    COUNT_COLUMNS,
    ENERGY_COLUMNS,
    INVENTORY_COLUMNS,
    TIME_COLUMNS,
)
from indicators.measures import daily_measures

SCHEMA_ID = "tieragent/report/v1"
SCHEMA_FILE = files("agent.protocol") / "data" / "report.schema.json"
NS_TIERAGENT = uuid.uuid5(uuid.NAMESPACE_URL, "urn:tieragent:report")
_BOOL_INVENTORY = ("key_process", "digital")

# Indicator computation is injected so the report format does not depend on which
# version of the indicators package is installed; the default is indicators.kpi.
IndicatorFn = Callable[[pd.DataFrame, pd.DataFrame, Mapping[str, Any]], dict[str, Any]]


class ReportError(ProtocolError):
    """A report that cannot be built or does not validate; str() names the problem."""


@dataclass(frozen=True, slots=True)
class ReportMeta:
    """Everything in a report that is not measured data."""

    factory_id: str
    enterprise_id: str
    bureau_id: str
    agent_version: str
    kid: str
    config_sha256: str
    policy_sha256: str
    period: Period
    issued_at: str  # UTC ISO 8601, informational (replay protection uses ids and the chain)
    revision: int = 0
    supersedes: str | None = None
    revision_reason: str | None = None  # why a correction (revision > 0) was built


def report_id(factory_id: str, period: Period, revision: int) -> str:
    """Deterministic UUIDv5: a resend or rebuild of the same report has the same id."""
    return str(uuid.uuid5(NS_TIERAGENT, f"{factory_id}/{period.kind}/{period.key}/{revision}"))


def default_indicators(
    base: pd.DataFrame, inventory: pd.DataFrame, params: Mapping[str, Any]
) -> dict[str, Any]:
    from indicators.catalog import Params
    from indicators.kpi import compute

    values = compute(base, inventory, Params(**params))
    return {key: values[key].to_json() for key in sorted(values)}


def default_params(time_zone: str) -> dict[str, Any]:
    from indicators.catalog import Params

    return dataclasses.asdict(Params(time_zone=time_zone))


def _typed_rows(base: pd.DataFrame) -> list[list[Any]]:
    """Rows in (device_id, hour_start) order: id, hour, then the measures as floats, counts
    as ints. Column by column (numpy) rather than cell by cell: the same values (float64 to
    float, truncated to int for counts), the same first error for a non-finite one."""
    missing = [c for c in BASE_MEASURE_COLUMNS if c not in base.columns]
    if missing:
        raise ReportError(f"Base measures lack columns {missing}.")
    frame = base.loc[:, list(BASE_MEASURE_COLUMNS)].sort_values(["device_id", "hour_start"])
    measures = BASE_MEASURE_COLUMNS[2:]
    numbers = [frame[column].to_numpy(np.float64) for column in measures]
    finite = np.logical_and.reduce([np.isfinite(column) for column in numbers]) if numbers else None
    if finite is not None and not bool(finite.all()):
        at = int(np.argmin(finite))
        column = next(c for c, v in zip(measures, numbers, strict=True) if not np.isfinite(v[at]))
        raise ReportError(f"Base measure {column} of {frame.iloc[at, 0]!s} is not finite.")
    columns: list[list[Any]] = [
        [str(device) for device in frame["device_id"].tolist()],
        [int(hour) for hour in frame["hour_start"].tolist()],
    ]
    for column, values in zip(measures, numbers, strict=True):
        columns.append(
            values.astype(np.int64).tolist() if column in COUNT_COLUMNS else values.tolist()
        )
    return [list(row) for row in zip(*columns, strict=True)]


def has_samples(base: pd.DataFrame) -> bool:
    """Whether base measures rest on any received sample. A period without one has no data:
    its report says so, and the bureau does not count it as a coverage day."""
    return not base.empty and float(base["samples_received"].sum()) > 0


def report_has_samples(report: Mapping[str, Any]) -> bool:
    """`has_samples` of a report's own `base_measures` member."""
    member = report.get("base_measures") or {}
    columns = list(member.get("columns") or [])
    if "samples_received" not in columns:
        return False
    at = columns.index("samples_received")
    return any(float(row[at]) > 0 for row in member.get("rows") or [])


def base_frame(base_json: Mapping[str, Any]) -> pd.DataFrame:
    """Rebuild the base-measure DataFrame from a report's `base_measures` member."""
    frame = pd.DataFrame(base_json["rows"], columns=list(base_json["columns"]))
    frame = frame.astype({"device_id": "str", "hour_start": "int64"})
    for column in TIME_COLUMNS + ENERGY_COLUMNS:
        frame[column] = frame[column].astype("float64")
    for column in COUNT_COLUMNS:
        frame[column] = frame[column].astype("int64")
    return frame


def _inventory_rows(inventory: pd.DataFrame) -> list[dict[str, Any]]:
    frame = inventory.loc[:, list(INVENTORY_COLUMNS)].sort_values("device_id")
    rows: list[dict[str, Any]] = []
    for record in frame.to_dict(orient="records"):
        rows.append(
            {str(k): bool(v) if k in _BOOL_INVENTORY else str(v) for k, v in record.items()}
        )
    return rows


def inventory_from_rows(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(INVENTORY_COLUMNS))


def build_report(
    meta: ReportMeta,
    *,
    seq: int,
    prev_sha256: str,
    inventory: pd.DataFrame,
    base: pd.DataFrame,
    evaluation: Mapping[str, Any],
    segment_digests: Sequence[bytes],
    params: Mapping[str, Any] | None = None,
    indicator_fn: IndicatorFn | None = None,
    indicators: Mapping[str, Any] | None = None,
    data_quality: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report dict (validated, canonicalisable): `build_report_payload(...)[0]`."""
    report, _ = build_report_payload(
        meta, seq=seq, prev_sha256=prev_sha256, inventory=inventory, base=base,
        evaluation=evaluation, segment_digests=segment_digests, params=params,
        indicator_fn=indicator_fn, indicators=indicators, data_quality=data_quality,
    )
    return report


def build_report_payload(
    meta: ReportMeta,
    *,
    seq: int,
    prev_sha256: str,
    inventory: pd.DataFrame,
    base: pd.DataFrame,
    evaluation: Mapping[str, Any],
    segment_digests: Sequence[bytes],
    params: Mapping[str, Any] | None = None,
    indicator_fn: IndicatorFn | None = None,
    indicators: Mapping[str, Any] | None = None,
    merkle_root: bytes | None = None,
    data_quality: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], bytes]:
    """The report dict (validated) and its canonical bytes, the payload to sign. Pure; does
    not mutate its inputs.

    `indicators`: the factory-level indicator values (JSON form) when the caller already
    computed them from the same base measures, inventory and params (the tier evaluation
    does); otherwise they are computed here. Either way the bureau recomputes them.

    `base`: hourly base-measure rows of the period (BASE_MEASURE_COLUMNS), already filtered
    to the factory's devices. `segment_digests`: RFC 6962 leaf hashes of the period's raw
    segments in leaf order (see agent.protocol.merkle). `evaluation`: `Evaluation.to_json()`.
    `merkle_root`: `root(segment_digests)` when the caller computed it with the digests.
    `data_quality`: the optional signal-health section (`{"signal_issues": [...]}`).
    """
    params_json = dict(params) if params is not None else default_params(meta.period.time_zone)
    rows_frame = (
        base
        if meta.period.kind == "day"
        else daily_measures(base, meta.period.time_zone).loc[:, list(BASE_MEASURE_COLUMNS)]
    )
    base_json = {
        "granularity": "hour" if meta.period.kind == "day" else "day",
        "columns": list(BASE_MEASURE_COLUMNS),
        "rows": _typed_rows(rows_frame),
    }
    inventory_rows = _inventory_rows(inventory)
    if indicators is None:
        compute = indicator_fn or default_indicators
        indicators = compute(
            base_frame(base_json), inventory_from_rows(inventory_rows), params_json
        )
    report: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "report_id": report_id(meta.factory_id, meta.period, meta.revision),
        "revision": meta.revision,
        "supersedes": meta.supersedes,
        "seq": seq,
        "prev_sha256": prev_sha256,
        "aud": meta.bureau_id,
        "issued_at": meta.issued_at,
        "enterprise_id": meta.enterprise_id,
        "factory_id": meta.factory_id,
        "agent_version": meta.agent_version,
        "kid": meta.kid,
        "config_sha256": meta.config_sha256,
        "policy_sha256": meta.policy_sha256,
        "period": meta.period.to_json(),
        "params": params_json,
        "inventory": inventory_rows,
        "base_measures": base_json,
        "indicators": dict(indicators),
        "evaluation": dict(evaluation),
        "raw_data": {
            "merkle_root": (
                merkle_root if merkle_root is not None else root(list(segment_digests))
            ).hex(),
            "segment_count": len(segment_digests),
            "segmenting_rule": SEGMENTING_RULE,
        },
    }
    if meta.revision_reason is not None:  # optional: reports without it stay as they were
        report["revision_reason"] = meta.revision_reason
    if data_quality is not None:
        report["data_quality"] = dict(data_quality)
    # Round-trip through canonical JSON so that what we validate and return is exactly
    # what gets signed (numpy scalars, tuples and NaN cannot slip through).
    try:
        payload, canonical = canonical_form(report)
    except EnvelopeError as error:
        raise ReportError(f"Report is not canonicalisable: {error}") from None
    validate_report(canonical)
    return canonical, payload


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


@cache
def _fast_validator() -> Any:
    """jsonschema-rs (Rust) compiled once: about 30 µs for a daily report where the Python
    jsonschema takes about 0.7 ms even without the rows. It only says valid or not; the
    Python validator stays the authority for what is wrong and how it is said."""
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return jsonschema_rs.validator_for(schema)


def schema_errors(report: Any) -> list[str]:
    """Every schema violation as 'path: message' (empty when valid)."""
    if _fast_validator().is_valid(report):
        return []
    return _python_schema_errors(report)


def _python_schema_errors(report: Any) -> list[str]:
    checks = _row_checks()
    rows = _base_rows(report)
    if checks is not None and rows is not None:
        # jsonschema spends ~0.4 s on the ~6,000 cells of a day report's base-measure rows;
        # the rows are checked against the same column schemas in plain Python instead.
        body = {**report, "base_measures": {**report["base_measures"], "rows": []}}
        if _rows_plainly_valid(rows, len(checks)):
            return _errors(body)
        return _errors(body) + _row_errors(rows, checks)
    return _errors(report)


def _errors(report: Any) -> list[str]:
    errors = sorted(_validator().iter_errors(report), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors]


def _base_rows(report: Any) -> list[Any] | None:
    member = report.get("base_measures") if isinstance(report, dict) else None
    rows = member.get("rows") if isinstance(member, dict) else None
    return rows if isinstance(rows, list) else None


CellCheck = Callable[[Any], bool]


@cache
def _row_checks() -> tuple[CellCheck, ...] | None:
    """One predicate per column, compiled from the schema's `base_measures.rows.prefixItems`
    (types, pattern, minimum, maximum). None when the row schema uses anything else; then
    jsonschema checks the rows itself."""
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    try:
        items = schema["properties"]["base_measures"]["properties"]["rows"]["items"]
        if items.get("items") is not False or items.get("minItems") != len(items["prefixItems"]):
            return None
        checks = []
        for cell in items["prefixItems"]:
            if "$ref" in cell:
                cell = schema["$defs"][cell["$ref"].removeprefix("#/$defs/")]
            checks.append(_cell_check(cell))
    except (KeyError, TypeError, AttributeError, ValueError):
        return None
    return tuple(checks)


def _cell_check(cell: Mapping[str, Any]) -> CellCheck:
    if not set(cell) <= {"type", "pattern", "minimum", "maximum"}:
        raise ValueError("unsupported keyword")
    kind = cell["type"]
    pattern = re.compile(cell["pattern"]) if "pattern" in cell else None
    low, high = cell.get("minimum"), cell.get("maximum")

    def check(value: Any) -> bool:
        if kind == "string":
            return isinstance(value, str) and (pattern is None or bool(pattern.search(value)))
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if kind == "integer" and not (isinstance(value, int) or float(value).is_integer()):
            return False
        if kind not in ("integer", "number"):
            return False
        return (low is None or value >= low) and (high is None or value <= high)

    return check


ColumnCheck = Callable[[Sequence[Any]], bool]


@cache
def _column_checks() -> tuple[ColumnCheck, ...] | None:
    """Per column, a check of a whole column that passes only cells `_row_checks` passes
    (exact JSON types, bounds by min and max): about ten times faster than cell by cell on a
    day's ~10,000 cells. A column it does not pass gets the cell-by-cell check and its errors."""
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    if _row_checks() is None:
        return None
    items = schema["properties"]["base_measures"]["properties"]["rows"]["items"]
    cells = [
        schema["$defs"][c["$ref"].removeprefix("#/$defs/")] if "$ref" in c else c
        for c in items["prefixItems"]
    ]
    return tuple(_column_check(cell) for cell in cells)


def _column_check(cell: Mapping[str, Any]) -> ColumnCheck:
    kind = cell["type"]
    pattern = re.compile(cell["pattern"]) if "pattern" in cell else None
    low, high = cell.get("minimum"), cell.get("maximum")
    kinds: dict[str, set[type]] = {"string": {str}, "integer": {int}, "number": {int, float}}
    allowed = kinds.get(kind, set())

    def check(values: Sequence[Any]) -> bool:
        if not values or not set(map(type, values)) <= allowed:
            return False
        if kind == "string":
            return pattern is None or all(pattern.search(v) for v in set(values))
        if float in allowed and any(v != v for v in values):  # NaN: no bound holds
            return False
        return (low is None or min(values) >= low) and (high is None or max(values) <= high)

    return check


def _rows_plainly_valid(rows: list[Any], width: int) -> bool:
    """Whether every row is a list of `width` cells and every column passes its column check."""
    checks = _column_checks()
    if checks is None or len(checks) != width or not rows:
        return False
    if not all(type(row) is list and len(row) == width for row in rows):
        return False
    return all(check(column) for check, column in zip(checks, zip(*rows, strict=True), strict=True))


def _row_errors(rows: list[Any], checks: tuple[CellCheck, ...]) -> list[str]:
    problems: list[str] = []
    for i, row in enumerate(rows):
        where = f"base_measures/rows/{i}"
        if not isinstance(row, list) or len(row) != len(checks):
            problems.append(f"{where}: is not an array of {len(checks)} cells")
            continue
        problems += [
            f"{where}/{j}: {value!r} does not match column {BASE_MEASURE_COLUMNS[j]!r}"
            for j, (check, value) in enumerate(zip(checks, row, strict=True))
            if not check(value)
        ]
    return problems


def validate_report(report: Any) -> None:
    problems = schema_errors(report)
    if problems:
        raise ReportError("Report does not match its schema: " + "; ".join(problems[:5]))


def recompute_indicators(
    report: Mapping[str, Any], indicator_fn: IndicatorFn | None = None
) -> dict[str, Any]:
    """Indicators recomputed from the report's own base measures, inventory and params."""
    compute = indicator_fn or default_indicators
    return compute(
        base_frame(report["base_measures"]),
        inventory_from_rows(report["inventory"]),
        report["params"],
    )


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def indicator_mismatches(reported: Mapping[str, Any], recomputed: Mapping[str, Any]) -> list[str]:
    """Ids of indicators whose reported value differs from the recomputation (rel 1e-9)."""
    ids = sorted(set(reported) | set(recomputed))
    return [i for i in ids if not _close(reported.get(i), recomputed.get(i))]
