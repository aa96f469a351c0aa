"""What the report page shows: one stored report checked again, now, from the bureau's data.

- the signature, verified again with the key the registry holds for the report's `kid`,
  with that key's status and validity window (by time and by sequence number);
- the schema, the link to the previous stored report (or the genesis hash for seq 1), and
  the indicators recomputed from the report's own base measures;
- the payload SHA-256, the raw-data Merkle root the report signs (when it has one);
- its leaf in the transparency log and the inclusion proof in the bureau's latest signed
  head, verified here; and the receipt the bureau sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.protocol.chain import genesis_sha256
from agent.protocol.envelope import EnvelopeError, Kind, unverified_payload, verify_compact
from agent.protocol.merkle import verify_inclusion
from agent.protocol.report import indicator_mismatches, recompute_indicators, schema_errors
from agent.protocol.translog import report_leaf
from bureau.registry import EnrolledKey, KeyRegistry
from bureau.store import SqlReportStore, StoredReport
from bureau.translog import LogError, TransparencyLog


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


@dataclass(frozen=True)
class LogInclusion:
    leaf_index: int | None
    head_size: int | None
    head_root: str | None
    head_jws: str | None
    verified: bool
    detail: str


@dataclass(frozen=True)
class ReportView:
    stored: StoredReport
    payload: dict[str, Any]
    key: EnrolledKey | None
    signature: Check
    schema: Check
    chain_link: Check
    indicators: Check
    raw_data: dict[str, Any] | None
    log: LogInclusion
    receipt: dict[str, Any]


def _signature(stored: StoredReport, key: EnrolledKey | None) -> Check:
    if key is None:
        return Check(False, f"key {stored.kid} is not in the registry")
    if key.factory_id != stored.factory_id:
        return Check(False, f"key {stored.kid} is enrolled for {key.factory_id}")
    try:
        verify_compact(stored.jws, Kind.REPORT, key.jwk)
    except EnvelopeError as error:
        return Check(False, str(error))
    if not key.signs_seq(stored.seq):
        return Check(False, f"seq {stored.seq} lies outside the key's window")
    return Check(True, "Ed25519")


def _chain_link(store: SqlReportStore, stored: StoredReport) -> Check:
    if stored.seq == 1:
        ok = stored.prev_sha256 == genesis_sha256(stored.factory_id)
        return Check(ok, "genesis" if ok else "seq 1 does not name the genesis hash")
    previous = store.by_seq(stored.factory_id, stored.seq - 1)
    if previous is None:
        return Check(False, f"the bureau holds no seq {stored.seq - 1} (a gap)")
    ok = previous.payload_sha256 == stored.prev_sha256
    return Check(ok, f"seq {previous.seq} {previous.report_id}" if ok else
                 f"prev_sha256 differs from seq {previous.seq}'s payload SHA-256")


def _indicators(payload: dict[str, Any]) -> Check:
    try:
        mismatched = indicator_mismatches(payload["indicators"], recompute_indicators(payload))
    except (KeyError, TypeError, ValueError) as error:
        return Check(False, f"cannot recompute: {error}")
    if mismatched:
        return Check(False, "differ: " + ", ".join(mismatched))
    return Check(True, f"{len(payload['indicators'])} indicators")


def _log(store: SqlReportStore, stored: StoredReport) -> LogInclusion:
    translog = TransparencyLog(store.db, "")
    leaf = translog.leaf(stored.report_id, stored.payload_sha256)
    head = translog.latest_head()
    if leaf is None:
        return LogInclusion(None, None, None, None, False, "no_leaf")
    if head is None or head[0] <= leaf.index:
        return LogInclusion(leaf.index, None, None, None, False, "no signed head covers it")
    size, root_hex, sth = head
    try:
        proof = translog.inclusion(leaf.index, size)
    except LogError as error:
        return LogInclusion(leaf.index, size, root_hex, sth, False, str(error))
    ok = verify_inclusion(
        report_leaf(stored.payload_sha256), leaf.index, size, proof, bytes.fromhex(root_hex)
    )
    return LogInclusion(leaf.index, size, root_hex, sth, ok,
                        f"{len(proof)} hashes" if ok else "proof_failed")


def report_view(store: SqlReportStore, report_id: str) -> ReportView | None:
    stored = store.get(report_id)
    if stored is None:
        return None
    payload = stored.payload()
    key = KeyRegistry(store.db).get(stored.kid)
    errors = schema_errors(payload)
    try:
        receipt = unverified_payload(stored.receipt_jws, Kind.RECEIPT)
    except EnvelopeError:
        receipt = {}
    raw = payload.get("raw_data")
    return ReportView(
        stored=stored,
        payload=payload,
        key=key,
        signature=_signature(stored, key),
        schema=Check(not errors, "; ".join(errors[:3]) if errors else "tieragent/report/v1"),
        chain_link=_chain_link(store, stored),
        indicators=_indicators(payload),
        raw_data=raw if isinstance(raw, dict) else None,
        log=_log(store, stored),
        receipt={k: v for k, v in receipt.items() if k != "log"},
    )


def as_json(view: ReportView) -> dict[str, Any]:
    key = view.key
    return {
        "report_id": view.stored.report_id,
        "factory_id": view.stored.factory_id,
        "seq": view.stored.seq,
        "period": view.payload.get("period"),
        "state": view.stored.state,
        "received_at": view.stored.received_at,
        "issued_at": view.payload.get("issued_at"),
        "payload_sha256": view.stored.payload_sha256,
        "prev_sha256": view.stored.prev_sha256,
        "kid": view.stored.kid,
        "key": None if key is None else {
            "status": key.status, "valid_from": key.valid_from, "revoked_at": key.revoked_at,
            "retired_at": key.retired_at, "from_seq": key.from_seq, "until_seq": key.until_seq,
        },
        "checks": {
            name: {"ok": check.ok, "detail": check.detail}
            for name, check in (("signature", view.signature), ("schema", view.schema),
                                ("chain_link", view.chain_link),
                                ("indicators", view.indicators))
        },
        "raw_data": view.raw_data,
        "log": {"leaf_index": view.log.leaf_index, "head_size": view.log.head_size,
                "head_root": view.log.head_root, "verified": view.log.verified},
        "receipt": view.receipt,
    }
