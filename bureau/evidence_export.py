"""The evidence folder an evaluator pulls for a factory's year.

Layout (every path relative to the folder):
    manifest.json              format, factory, year, evaluation arguments, every report entry
                               (file, role, day, state, reason) and the SHA-256 of every file
    evaluation.json            `AnnualEvaluation.to_json()`
    details.json               per-device breakdown, issue and receipt dates, declarant
                               (bureau.evidence_details; verify recomputes it)
    report.html                the self-contained evidence report (bureau.html_report)
    report.pdf                 the same report printed to A4 (bureau.pdf_report)
    reports/<day>_<seq>_<id>.jws    the year's stored daily reports, bytes as received
    chain/<seq>_<kind>_<key>_<id>.jws   the other stored reports of the factory's chain between
                               the first and the last seq of the year (month and year reports,
                               other years' days), so the folder holds a contiguous chain slice
    baseline/<day>_<seq>_<id>.jws   the accepted daily reports of the baseline year
    rejected/<n>_<day>.jws     rejected reports whose signature verified (others: manifest only)
    keys/<kid>.jwk.json        the factory's public keys; keys.json: their validity periods
                               (the manifest's `keys` holds the same view, sealed)
    bureau.jwk.json            the bureau's public key that sealed the folder
    manifest.jws               the bureau's seal: a JWS over the SHA-256 of manifest.json
                               (bureau.evidence_seal)
    log/head.jws, log/proofs.json   the transparency log's signed head and, per report file,
                               its inclusion proof, stored receipt and the proof that the
                               head extends the receipt's (bureau.evidence_log)
    inputs/policy.yaml, inputs/benchmarks.yaml, inputs/declarations.yaml   the files evaluated

`bureau.evidence_verify.verify_evidence_dir` checks such a folder with nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from joserfc.jwk import OKPKey

from agent.protocol.chain import chain_slice
from bureau.annual import (
    AnnualError,
    AnnualEvaluation,
    DayEntry,
    evaluate_year,
)
from bureau.evidence_details import DETAILS_NAME, build_details
from bureau.evidence_log import write_log
from bureau.evidence_seal import BUREAU_KEY_NAME, SEAL_NAME, bureau_jwk_text, key_view, seal
from bureau.html_report import render_html
from bureau.pdf_report import render_pdf
from bureau.registry import KeyRegistry
from bureau.store import ACCEPTED, REJECTED, SqliteReportStore, StoredReport
from indicators.policy import Declarations, PolicyFiles

EVIDENCE_FORMAT = "tieragent-annual-evidence/v1"
INPUT_NAMES = {
    "policy": "policy.yaml",
    "benchmarks": "benchmarks.yaml",
    "declarations": "declarations.yaml",
}


@dataclass(frozen=True)
class ExportSummary:
    out: Path
    files: int
    reports: int
    evaluation: AnnualEvaluation


def load_year(store: SqliteReportStore, factory_id: str, year: int) -> list[DayEntry]:
    """The factory's daily reports of `year` (all states) as evaluation entries."""
    return [DayEntry.from_year_entry(e) for e in store.reports_for_year(factory_id, year)]


def load_chain(store: SqliteReportStore, factory_id: str, year: int) -> list[DayEntry]:
    """The factory's stored reports (any kind, any revision, any state) whose seq lies between
    the first and the last seq of its reports of `year` (day, month and year periods): the
    contiguous slice of its one chain that the year's reports belong to."""
    stored = store.reports(factory_id)
    prefix = f"{year:04d}"
    of_year = [r.seq for r in stored if r.period_key.startswith(prefix)]
    return [_chain_entry(r) for r in chain_slice(stored, lambda r: r.seq, of_year)]


def _chain_entry(report: StoredReport) -> DayEntry:
    """A stored report of any kind as the chain sees it (its payload is not decoded)."""
    return DayEntry.from_columns(report, jws=report.jws)


def check_factory(store: SqliteReportStore, factory_id: str) -> None:
    """Raise AnnualError when the bureau knows nothing of `factory_id`."""
    if not KeyRegistry(store.db).known_factory(factory_id) and not store.reports(factory_id):
        raise AnnualError(f"Factory {factory_id!r} is not enrolled at this bureau.")


def evaluate_from_store(
    store: SqliteReportStore,
    factory_id: str,
    year: int,
    files: PolicyFiles,
    *,
    baseline_year: int | None = None,
    through: date | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[AnnualEvaluation, list[DayEntry], list[DayEntry]]:
    """The annual evaluation plus the year's and the baseline year's entries it used (from
    the store's columns, bureau.annual_columns: the same evaluation as `export_evidence`'s,
    without re-reading a year of report JSON; the entries carry no payload or JWS)."""
    from bureau.annual_columns import evaluate_from_columns

    check_factory(store, factory_id)
    return evaluate_from_columns(
        store, factory_id, year, files, baseline_year=baseline_year, through=through,
        overrides=overrides,
    )


def evaluate_from_payloads(
    store: SqliteReportStore,
    factory_id: str,
    year: int,
    files: PolicyFiles,
    *,
    baseline_year: int | None = None,
    through: date | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[AnnualEvaluation, list[DayEntry], list[DayEntry]]:
    """`evaluate_from_store` from every report's signed payload (what the evidence folder
    and its verifier use), entries with payloads and JWS."""
    result, entries, baseline, _ = _evaluate(
        store,
        factory_id,
        year,
        files,
        baseline_year=baseline_year,
        through=through,
        overrides=overrides,
    )
    return result, entries, baseline


def _evaluate(
    store: SqliteReportStore,
    factory_id: str,
    year: int,
    files: PolicyFiles,
    *,
    baseline_year: int | None,
    through: date | None,
    overrides: Mapping[str, Any] | None,
) -> tuple[AnnualEvaluation, list[DayEntry], list[DayEntry], list[DayEntry]]:
    """`evaluate_from_store` plus the chain slice (`load_chain`) it walked."""
    check_factory(store, factory_id)
    entries = load_year(store, factory_id, year)
    if not entries:
        raise AnnualError(f"Factory {factory_id!r} has no daily reports for {year}.")
    baseline = load_year(store, factory_id, baseline_year) if baseline_year else []
    chain = load_chain(store, factory_id, year)
    result = evaluate_year(
        factory_id,
        year,
        entries,
        files,
        baseline_entries=baseline,
        baseline_year=baseline_year,
        through=through,
        overrides=overrides,
        chain=chain,
    )
    return result, entries, baseline, chain


def export_evidence(
    store: SqliteReportStore,
    factory_id: str,
    year: int,
    out: Path,
    files: PolicyFiles,
    *,
    baseline_year: int | None = None,
    through: date | None = None,
    overrides: Mapping[str, Any] | None = None,
    bureau_key: OKPKey,
    pdf: bool = True,
) -> ExportSummary:
    """Write the evidence folder into `out` (absent or empty), sealed with `bureau_key`;
    `pdf` False leaves out report.pdf (its render takes the longest).
    Raises AnnualError on user mistakes (unknown factory, no reports, bad files, non-empty
    folder)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AnnualError(f"{out}: the evidence folder must be new or empty.")
    result, entries, baseline, chain = _evaluate(
        store,
        factory_id,
        year,
        files,
        baseline_year=baseline_year,
        through=through,
        overrides=overrides,
    )
    writer = _Writer(out)
    manifest_entries: list[dict[str, Any]] = []
    rejected_n = 0
    for entry in entries:
        record = _entry_record(entry, "year")
        if entry.state == REJECTED:
            rejected_n += 1
            if entry.jws is not None:
                record["file"] = writer.text(
                    f"rejected/{rejected_n:03d}_{entry.period_key}.jws", entry.jws
                )
        else:
            assert entry.jws is not None
            record["file"] = writer.text(_report_name("reports", entry), entry.jws)
        manifest_entries.append(record)
    year_ids = {entry.report_id for entry in entries}
    for entry in chain:
        if entry.report_id not in year_ids and entry.jws is not None:
            record = _entry_record(entry, "chain")
            record["file"] = writer.text(_chain_name(entry), entry.jws)
            manifest_entries.append(record)
    for entry in baseline:
        if entry.state == ACCEPTED and entry.jws is not None:
            record = _entry_record(entry, "baseline")
            record["file"] = writer.text(_report_name("baseline", entry), entry.jws)
            manifest_entries.append(record)
    filed = {str(record["report_id"]) for record in manifest_entries if record["file"]}
    write_log(store, bureau_key, {  # the transparency log's proofs (bureau.evidence_log)
        str(e.report_id): str(e.payload_sha256) for e in [*entries, *chain, *baseline]
        if e.state != REJECTED and e.report_id in filed and e.payload_sha256}.items(), writer)

    keys = KeyRegistry(store.db).enrolled(factory_id)
    for key in keys:
        writer.text(
            f"keys/{key.kid}.jwk.json", json.dumps(key.jwk, indent=2, sort_keys=True) + "\n"
        )
    sealed_keys = key_view(keys)
    writer.text(
        "keys.json", _dumps([{k: v for k, v in key.items() if k != "jwk"} for key in sealed_keys])
    )
    writer.text(BUREAU_KEY_NAME, bureau_jwk_text(bureau_key))
    inputs: dict[str, str | None] = {}
    for name, path in (
        ("policy", files.policy),
        ("benchmarks", files.benchmarks),
        ("declarations", files.declarations),
    ):
        inputs[name] = None
        if path is not None:
            inputs[name] = writer.raw(f"inputs/{INPUT_NAMES[name]}", path.read_bytes())
    result_json = result.to_json()
    writer.text("evaluation.json", _dumps(result_json))
    details, html = evidence_report(
        store, factory_id, result_json, [*entries, *chain], files.load().declarations
    )
    writer.text(DETAILS_NAME, _dumps(details))
    writer.text("report.html", html)
    if pdf:
        writer.raw("report.pdf", render_pdf(html))
    manifest = {
        "format": EVIDENCE_FORMAT,
        "factory_id": factory_id,
        "year": year,
        "through": result.last_day.isoformat(),
        "baseline_year": baseline_year,
        "overrides": dict(overrides or {}),
        "inputs": inputs,
        "entries": manifest_entries,
        "keys": sealed_keys,
        "files": dict(sorted(writer.digests.items())),
    }
    raw_manifest = manifest_bytes(manifest)
    (out / "manifest.json").write_bytes(raw_manifest)
    sealed = seal(raw_manifest, factory_id, year, sealed_keys, bureau_key)
    (out / SEAL_NAME).write_text(sealed + "\n", encoding="ascii")
    return ExportSummary(out, len(writer.digests) + 2, len(manifest_entries), result)


def evidence_report(
    store: SqliteReportStore,
    factory_id: str,
    result_json: Mapping[str, Any],
    reports: Sequence[DayEntry],
    declarations: Declarations | None,
) -> tuple[dict[str, Any], str]:
    """(details.json, report.html) of an evaluation: the one way the folder and the portal's
    downloads build them. `reports` are the year's entries and the chain slice walked."""
    receipts = {r.report_id: r.receipt_jws for r in store.reports(factory_id)}
    details = build_details(result_json, list(reports), receipts, declarations)
    return details, render_html(result_json, details)


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The one accepted serialisation of a manifest (verification re-derives it)."""
    return _dumps(manifest).encode("utf-8")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, indent=2, allow_nan=False) + "\n"


def _entry_record(entry: DayEntry, role: str) -> dict[str, Any]:
    return {
        "role": role,
        "kind": entry.kind,
        "period_key": entry.period_key,
        "state": entry.state,
        "reason": entry.reason,
        "report_id": entry.report_id,
        "file": None,
    }


def _report_name(folder: str, entry: DayEntry) -> str:
    return f"{folder}/{entry.period_key}_{int(entry.seq or 0):06d}_{entry.report_id}.jws"


def _chain_name(entry: DayEntry) -> str:
    return f"chain/{int(entry.seq or 0):06d}_{entry.kind}_{entry.period_key}_{entry.report_id}.jws"


class _Writer:
    """Writes files under `out` and remembers the SHA-256 of each."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.digests: dict[str, str] = {}

    def text(self, name: str, text: str) -> str:
        return self.raw(name, text.encode("utf-8"))

    def raw(self, name: str, data: bytes) -> str:
        path = self.out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self.digests[name] = hashlib.sha256(data).hexdigest()
        return name
