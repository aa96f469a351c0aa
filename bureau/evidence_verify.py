"""Offline verification of an annual evidence folder (see bureau.evidence_export), using only
what is in the folder.

Checks, each problem one sentence naming the file and what inside it is wrong:
1. manifest.json is in its one serialisation; every file is listed with its SHA-256, and no
   file is missing or extra.
2. Every report's signature verifies with the folder's key of its `kid`, the key's file name is
   its RFC 7638 thumbprint, and the payload is the report the manifest says (id, day, factory).
3. The chain: consecutive sequence numbers link by prev_sha256, over the year's reports and
   the other reports of the chain between them (chain/: month and year reports, other years'
   days); which sequence numbers are missing is part of the evaluation that check 4 recomputes.
4. The evaluation recomputes: the annual evaluation is run again from the reports' base measures
   and the folder's policy files, and compared with evaluation.json value by value.
5. report.html shows the evaluation's numbers: every element with `data-ref` holds, in
   `data-value` and in its text, the value evaluation.json (details.json with
   `data-doc="details"`) has at that pointer; every condition of the evaluation has its row in
   the conditions table. details.json (per-device breakdown, issue and receipt dates,
   declarant) is recomputed from the reports, the receipts in log/proofs.json and the
   declarations file (bureau.evidence_details).

6. The transparency log (bureau.evidence_log): every report file is in the log's signed head,
   and that head extends the head in every report's stored receipt (signed by the bureau key).

0. The bureau's seal (bureau.evidence_seal): manifest.jws signs the manifest's SHA-256; the
   manifest's sealed key view decides which key may have signed which seq, and keys/ and
   keys.json must match it. With a pinned bureau key (`--bureau-key`) this proves who sealed
   the folder; without one, only that nothing changed after sealing (said in the notes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from agent.protocol.chain import ChainEntry, walk_chain
from agent.protocol.envelope import EnvelopeError, Kind, peek_compact, thumbprint, verify_compact
from bureau.annual import AnnualError, DayEntry, evaluate_year
from bureau.evidence_details import verify_details
from bureau.evidence_export import EVIDENCE_FORMAT, INPUT_NAMES, manifest_bytes
from bureau.evidence_log import check_log, folder_keys
from bureau.evidence_seal import BUREAU_KEY_NAME, SEAL_NAME, check_report_key, check_seal
from bureau.html_report import format_value
from bureau.store import REJECTED
from indicators.policy import PolicyFiles, file_sha256

MAX_LISTED = 25  # differences named one by one before summarising the rest
_LIST_KEYS = ("condition_id", "month", "seq", "period_key", "id")
# Differences are named in this order, so the most telling ones come first.
_PRIORITY = (
    "format",
    "factory_id",
    "year",
    "period",
    "inputs",
    "params",
    "baseline",
    "coverage",
    "evaluation",
    "indicators",
    "monthly",
    "chain",
)


@dataclass
class EvidenceResult:
    reports: int = 0
    numbers: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # the seal and the key ids relied on

    @property
    def ok(self) -> bool:
        return not self.problems


def is_evidence_dir(path: Path) -> bool:
    """True when `path` holds an annual evidence folder (its manifest names the format)."""
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == EVIDENCE_FORMAT


def verify_evidence_dir(
    path: Path, bureau_keys: Sequence[Mapping[str, Any]] | None = None
) -> EvidenceResult:
    """Verify the folder offline; `result.problems` is empty when everything holds.
    `bureau_keys`: the pinned bureau public JWK(s) the seal must verify with."""
    result = EvidenceResult()
    try:
        raw = (path / "manifest.json").read_bytes()
        manifest = json.loads(raw)
    except (OSError, ValueError) as error:
        result.problems.append(f"manifest.json: missing or not JSON ({error}).")
        return result
    if not isinstance(manifest, dict) or manifest.get("format") != EVIDENCE_FORMAT:
        result.problems.append(f"manifest.json: format is not {EVIDENCE_FORMAT}.")
        return result
    if manifest_bytes(manifest) != raw:
        result.problems.append("manifest.json: bytes differ from its canonical form (edited).")
    _check_files(path, manifest, result)
    view = check_seal(path, manifest, raw, bureau_keys, result.problems, result.notes)
    keys = _load_keys(path, result)
    if view:  # sealed: only the bureau's key list counts, whatever keys/ holds
        keys = {kid: dict(key.get("jwk") or {}) for kid, key in view.items()}
    entries, baseline, chain = _load_entries(path, manifest, keys, result, view)
    _check_chain([*entries, *chain], result)
    check_log(path, [*entries, *baseline, *chain],  # §b.9: bureau.evidence_log
              folder_keys(path, bureau_keys, BUREAU_KEY_NAME), result.problems, result.notes)
    evaluation = _load_json(path / "evaluation.json", result)
    if evaluation is not None:
        _check_recompute(path, manifest, entries, baseline, chain, evaluation, result)
        declarations = (manifest.get("inputs") or {}).get("declarations")
        details = verify_details(  # per-device table, issue and receipt dates, declarant
            path, evaluation, [*entries, *chain],
            path / f"inputs/{INPUT_NAMES['declarations']}" if declarations else None,
            result.problems,
        )
        _check_html(path, {"evaluation": evaluation, "details": details}, result)
    return result


# --- files and keys ------------------------------------------------------------------------------


def _check_files(path: Path, manifest: dict[str, Any], result: EvidenceResult) -> None:
    listed: dict[str, str] = dict(manifest.get("files") or {})
    present = {
        p.relative_to(path).as_posix()
        for p in path.rglob("*")
        if p.is_file() and p.relative_to(path).as_posix() not in ("manifest.json", SEAL_NAME)
    }
    for name in sorted(set(listed) - present):
        result.problems.append(f"{name}: listed in the manifest but missing.")
    for name in sorted(present - set(listed)):
        result.problems.append(f"{name}: present but not listed in the manifest.")
    for name in sorted(set(listed) & present):
        digest = file_sha256(path / name)
        if digest != listed[name]:
            result.problems.append(f"{name}: SHA-256 differs from the manifest (file changed).")


def _load_keys(path: Path, result: EvidenceResult) -> dict[str, dict[str, Any]]:
    keys: dict[str, dict[str, Any]] = {}
    for file in sorted((path / "keys").glob("*.jwk.json")):
        name = f"keys/{file.name}"
        try:
            jwk = json.loads(file.read_text(encoding="utf-8"))
            kid = thumbprint(jwk)
        except (OSError, ValueError, KeyError, EnvelopeError) as error:
            result.problems.append(f"{name}: not a usable public key ({error}).")
            continue
        if file.name != f"{kid}.jwk.json":
            result.problems.append(f"{name}: key thumbprint is {kid}, not the file's name.")
        keys[kid] = jwk
    return keys


def _load_json(file: Path, result: EvidenceResult) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        result.problems.append(f"{file.name}: missing or not JSON ({error}).")
        return None


# --- reports and chain ---------------------------------------------------------------------------


def _load_entries(
    path: Path,
    manifest: dict[str, Any],
    keys: dict[str, dict[str, Any]],
    result: EvidenceResult,
    view: Mapping[str, Mapping[str, Any]],
) -> tuple[list[DayEntry], list[DayEntry], list[DayEntry]]:
    """The year's, the baseline year's and the other chain entries, rebuilt from the verified
    report files; a report that fails counts as unreadable."""
    year: list[DayEntry] = []
    baseline: list[DayEntry] = []
    chain: list[DayEntry] = []
    roles = {"baseline": baseline, "chain": chain}
    for item in manifest.get("entries") or []:
        day, state, reason = str(item.get("period_key")), str(item.get("state")), item.get("reason")
        report_id = item.get("report_id")
        payload: dict[str, Any] | None = None
        token: str | None = None
        if item.get("file"):
            label = f"{item['file']} (report {report_id}, {day})"
            token, payload = _verified(path / item["file"], keys, label, result, view)
            if payload is not None and (
                payload.get("report_id") != report_id
                or payload.get("period", {}).get("key") != day
                or payload.get("period", {}).get("kind") != item.get("kind", "day")
                or payload.get("factory_id") != manifest.get("factory_id")
            ):
                result.problems.append(
                    f"{label}: the signed report is not the one the manifest lists."
                )
                payload = None
            if payload is None:
                token = None
                state = REJECTED if state == REJECTED else "unverified"
            else:
                result.reports += 1
        kind = str(item.get("kind") or "day")
        entry = DayEntry.from_parts(day, state, reason, payload, token, report_id, kind)
        roles.get(str(item.get("role")), year).append(entry)
    return year, baseline, chain


def _verified(
    file: Path,
    keys: dict[str, dict[str, Any]],
    label: str,
    result: EvidenceResult,
    view: Mapping[str, Mapping[str, Any]],
) -> tuple[str | None, dict[str, Any] | None]:
    try:
        token = file.read_text(encoding="ascii").strip()
        header, _ = peek_compact(token, Kind.REPORT)
        jwk = keys.get(header["kid"])
        if jwk is None and view:
            check_report_key(view, header["kid"], 0, label, result.problems)
            return None, None
        if jwk is None:
            result.problems.append(f"{label}: signed by key {header['kid']}, not in keys/.")
            return None, None
        payload = verify_compact(token, Kind.REPORT, jwk).payload
        if view:
            check_report_key(view, header["kid"], int(payload["seq"]), label, result.problems)
    except (OSError, UnicodeDecodeError) as error:
        result.problems.append(f"{label}: unreadable ({error}).")
        return None, None
    except EnvelopeError as error:
        result.problems.append(f"{label}: signature or format check failed ({error}).")
        return None, None
    return token, dict(payload)


def _check_chain(entries: list[DayEntry], result: EvidenceResult) -> None:
    stored = sorted(
        (e for e in entries if e.state != REJECTED and e.payload is not None),
        key=lambda e: int(e.seq or 0),
    )
    for link in walk_chain(
        [ChainEntry(int(e.seq or 0), e.payload_sha256, e.prev_sha256) for e in stored]
    ):
        if link.follows and not link.linked:
            entry = stored[link.index]
            result.problems.append(
                f"report {entry.report_id} ({entry.period_key}, seq {entry.seq}): prev_sha256 "
                f"does not match report seq {link.previous_seq} (chain broken)."
            )


# --- the evaluation ------------------------------------------------------------------------------


def _check_recompute(
    path: Path,
    manifest: dict[str, Any],
    entries: list[DayEntry],
    baseline: list[DayEntry],
    chain: list[DayEntry],
    stored: Any,
    result: EvidenceResult,
) -> None:
    inputs = manifest.get("inputs") or {}

    def input_path(name: str) -> Path | None:
        return path / f"inputs/{INPUT_NAMES[name]}" if inputs.get(name) else None

    try:
        policy = input_path("policy")
        if policy is None:
            raise AnnualError("the folder has no policy file")
        through = manifest.get("through")
        recomputed = evaluate_year(
            str(manifest.get("factory_id")),
            int(manifest.get("year", 0)),
            entries,
            PolicyFiles(policy, input_path("benchmarks"), input_path("declarations")),
            baseline_entries=baseline,
            baseline_year=manifest.get("baseline_year"),
            through=date.fromisoformat(through) if through else None,
            overrides=manifest.get("overrides") or {},
            chain=chain,
        ).to_json()
    except (AnnualError, ValueError, KeyError, TypeError) as error:
        result.problems.append(f"evaluation.json: cannot be recomputed from the reports ({error}).")
        return
    differences: list[str] = []
    _diff(recomputed, stored, "", differences)
    for where in differences[:MAX_LISTED]:
        result.problems.append(
            f"evaluation.json: {where} differs from the evaluation recomputed from the reports."
        )
    if len(differences) > MAX_LISTED:
        result.problems.append(
            f"evaluation.json: {len(differences) - MAX_LISTED} more values differ from the "
            "recomputation."
        )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def _diff(a: Any, b: Any, path: str, out: list[str]) -> None:
    """Readable paths where `b` differs from `a`: lists of records are indexed by their id."""
    if isinstance(a, dict) and isinstance(b, dict):
        rank = {name: i for i, name in enumerate(_PRIORITY)} if not path else {}
        for key in sorted(set(a) | set(b), key=lambda k: (rank.get(k, len(rank)), str(k))):
            if key not in a or key not in b:
                out.append(f"{path}.{key}" if path else str(key))
            else:
                _diff(a[key], b[key], f"{path}.{key}" if path else str(key), out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path} (length {len(b)}, expected {len(a)})")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{path}[{_label(x, i)}]", out)
    elif not _same(a, b):
        out.append(
            f"{path} = {json.dumps(b, ensure_ascii=False)} "
            f"(recomputed {json.dumps(a, ensure_ascii=False)})"
        )


def _label(item: Any, index: int) -> str:
    if isinstance(item, dict):
        for key in _LIST_KEYS:
            if key in item:
                return f"{key}={item[key]}"
    return str(index)


# --- the HTML ------------------------------------------------------------------------------------


class _RefCollector(HTMLParser):
    """Elements with data-ref: their attributes and text; and the conditions table's rows."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.numbers: list[tuple[dict[str, str], str, int]] = []
        self.condition_rows: list[str] = []
        self._open: list[tuple[str, dict[str, str], list[str], int]] = []
        self._table: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table.append(values.get("id"))
        in_conditions = bool(self._table) and self._table[-1] == "conditions"
        if tag == "tr" and in_conditions and "data-condition" in values:
            self.condition_rows.append(values["data-condition"])
        if "data-ref" in values:
            self._open.append((tag, values, [], self.getpos()[0]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._table:
            self._table.pop()
        if self._open and self._open[-1][0] == tag:
            _, values, text, line = self._open.pop()
            self.numbers.append((values, "".join(text), line))

    def handle_data(self, data: str) -> None:
        for _, _, text, _ in self._open:
            text.append(data)


def resolve(document: Any, ref: str) -> Any:
    """RFC 6901 pointer lookup; raises KeyError/IndexError/ValueError when absent."""
    node = document
    for raw in ref.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _where(attrs: dict[str, str], line: int) -> str:
    context = [
        f"{name.removeprefix('data-')} {attrs[name]}"
        for name in ("data-condition", "data-indicator", "data-month", "data-field", "data-device")
        if name in attrs
    ]
    return (
        f"line {line}" + (f", {', '.join(context)}" if context else "") + f" ({attrs['data-ref']})"
    )


def _check_html(path: Path, documents: Mapping[str, Any], result: EvidenceResult) -> None:
    """`documents`: evaluation.json and details.json by the name a cell's data-doc gives
    (evaluation when it gives none)."""
    evaluation = documents["evaluation"]
    try:
        text = (path / "report.html").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        result.problems.append(f"report.html: unreadable ({error}).")
        return
    parser = _RefCollector()
    parser.feed(text)
    parser.close()
    for attrs, shown, line in parser.numbers:
        where = _where(attrs, line)
        result.numbers += 1
        doc = attrs.get("data-doc", "evaluation")
        try:
            expected = resolve(documents.get(doc), attrs["data-ref"])
        except (KeyError, IndexError, ValueError, TypeError):
            result.problems.append(f"report.html: {where}: no such value in {doc}.json.")
            continue
        try:
            value = json.loads(attrs.get("data-value", ""))
        except ValueError:
            result.problems.append(f"report.html: {where}: data-value is not a JSON value.")
            continue
        if not _same(expected, value):
            result.problems.append(
                f"report.html: {where}: data-value {attrs.get('data-value')} but {doc}.json "
                f"has {json.dumps(expected, ensure_ascii=False)}."
            )
        elif shown.strip() != format_value(expected, attrs.get("data-unit", "")):
            result.problems.append(
                f"report.html: {where}: shows {shown.strip()!r} but {doc}.json has "
                f"{json.dumps(expected, ensure_ascii=False)} "
                f"({format_value(expected, attrs.get('data-unit', ''))!r})."
            )
    conditions = evaluation.get("evaluation", {}).get("conditions", [])
    expected_rows = [str(c.get("condition_id")) for c in conditions]
    if parser.condition_rows != expected_rows:
        missing = sorted(set(expected_rows) - set(parser.condition_rows))
        result.problems.append(
            "report.html: the conditions table does not list the evaluation's conditions"
            + (f" (missing {', '.join(missing)})." if missing else " in order.")
        )
