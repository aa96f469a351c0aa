"""Verification of one report message, in the order of docs/reliability.md §b.5 and §b.7.

size -> topic -> header -> key (factory of the topic, enrolled, not revoked) -> signature
-> strict parse + canonical form -> schema -> topic/aud/kid/time binding -> ids and chain
(duplicate, conflict, fork, chain break, gap = pending) -> indicators recomputed (a daily
report's with numpy from its per-device day sums, bureau.indicator_check: the same indicator
functions, about 0.2 ms instead of 10-27 ms with pandas).

`Verifier.check` reads the store but never writes; the receiver applies the `Decision`
in the same transaction. Every failure is a `Decision` with a reason code, never an
exception: hostile input must not crash the receiver.

Reason codes: size, topic, header, unknown-factory, unknown-key, revoked, signature,
format (strict JSON, canonical form, schema), aud, future, retired (a rotated-out key at or
after the rotation's sequence number), key-window (a rotated-in key before it), conflict,
fork, chain, indicators.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.protocol.canonical_parse import parse_unverified
from agent.protocol.chain import genesis_sha256
from agent.protocol.envelope import (
    EnvelopeError,
    Kind,
    Verified,
    peek_compact,
    sha256_hex,
    strict_loads,
    verify_compact,
)
from agent.protocol.mqtt import report_topic_factory
from agent.protocol.report import (
    IndicatorFn,
    indicator_mismatches,
    recompute_indicators,
    schema_errors,
)
from bureau.indicator_check import DaySums, day_sums, recompute_fast
from bureau.registry import KeyLookupError, KeyRegistry
from bureau.store import ACCEPTED, PENDING_LINK, ReportStore, StoredReport

DEFAULT_MAX_BYTES = 2 * 1024 * 1024
FUTURE_SKEW_S = 300.0


@dataclass(frozen=True)
class Decision:
    """What to do with a message: accept (state accepted, or pending-link when its predecessor
    is not stored: receipt `pending`), answer pending without storing (it cannot be placed
    yet), answer as a duplicate, or reject."""

    status: str  # accepted | pending | duplicate | rejected
    reason: str | None
    detail: str
    factory_id: str | None
    report_sha256: str
    report_id: str | None = None
    seq: int | None = None
    state: str | None = None
    verified: Verified | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    original: StoredReport | None = None
    relink: str | None = None  # report_id of a pending-link successor this report links
    evict: tuple[str, ...] = ()  # pending-link reports this one proves to be orphans
    # An accepted daily report's base measures summed per device (bureau.indicator_check),
    # kept in columns for the annual evaluation (bureau.measures_table); None otherwise.
    day_sums: DaySums | None = None


class Verifier:
    def __init__(
        self,
        registry: KeyRegistry,
        store: ReportStore,
        bureau_id: str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        indicator_fn: IndicatorFn | None = None,
        check_indicators: bool = True,
    ) -> None:
        self.registry = registry
        self.store = store
        self.bureau_id = bureau_id
        self.max_bytes = max_bytes
        self.indicator_fn = indicator_fn
        self.check_indicators = check_indicators

    def check(self, topic: str, message: bytes, now: float | None = None) -> Decision:
        now = time.time() if now is None else now
        factory_id = report_topic_factory(topic)

        def reject(reason: str, detail: str, sha: str | None = None, **extra: Any) -> Decision:
            # The whole message's SHA-256 when its payload's is not known: only rejections
            # need it (a hash of 16 KB per report otherwise).
            sha = sha256_hex(message) if sha is None else sha
            return Decision("rejected", reason, detail, factory_id, sha, **extra)

        if len(message) > self.max_bytes:
            return reject("size", f"Message of {len(message)} bytes exceeds {self.max_bytes}.")
        if factory_id is None:
            return reject("topic", "Topic is not tieragent/v1/<factory_id>/report.")
        try:
            header, unverified = peek_compact(message, Kind.REPORT)
        except EnvelopeError as error:
            return reject(error.reason, str(error))
        payload_sha = sha256_hex(unverified)
        # The chain look-ups for the ids the payload claims go to the database with the key's
        # (one round trip, batched on PostgreSQL); they are used only once the signature has
        # verified that very parse (`parsed`), and decide nothing before.
        claimed = parse_unverified(unverified)
        chain = self._prefetch_chain(factory_id, claimed)
        # Before the signature is checked, the ids the payload claims are named in the
        # receipt only so that the sender can find its own row: the agent matches a receipt
        # on report id *and* payload SHA-256, so naming an id proves nothing and forges
        # nothing, and without it a revoked or unknown key's reports are resent forever.
        # (Parsed only on these two rejections: a second parse of every good report cost
        # about a quarter of the verification.)
        try:
            key = self.registry.lookup(factory_id, header["kid"], now)
        except KeyLookupError as error:
            return reject(error.reason, str(error), payload_sha, **_claimed_ids(unverified))
        try:
            verified = verify_compact(
                message, Kind.REPORT, key.jwk, peeked=(header, unverified), parsed=claimed
            )
        except EnvelopeError as error:
            return reject(error.reason, str(error), payload_sha, **_claimed_ids(unverified))
        report = verified.payload
        problems = schema_errors(report)
        if problems:
            return reject("format", "Schema: " + "; ".join(problems[:3]), payload_sha)
        ids: dict[str, Any] = {
            "report_id": report["report_id"],
            "seq": report["seq"],
            "verified": verified,
            "payload": report,
        }
        if report["factory_id"] != factory_id:
            return reject(
                "topic", "Report names another factory than its topic.", payload_sha, **ids
            )
        if report["kid"] != header["kid"]:
            return reject(
                "header", "kid in the payload differs from the header.", payload_sha, **ids
            )
        if report["aud"] != self.bureau_id:
            return reject("aud", "Report is addressed to another bureau.", payload_sha, **ids)
        if _epoch(report["issued_at"]) > now + FUTURE_SKEW_S:
            return reject("future", "issued_at lies in the future.", payload_sha, **ids)
        seq = int(report["seq"])
        if key.until_seq is not None and seq >= key.until_seq:
            return reject(
                "retired",
                f"Key {key.kid} was rotated out from seq {key.until_seq}; seq {seq} must be "
                "signed by its successor.",
                payload_sha,
                **ids,
            )
        if key.from_seq is not None and seq < key.from_seq:
            return reject(
                "key-window",
                f"Key {key.kid} signs from seq {key.from_seq}; seq {seq} predates it.",
                payload_sha,
                **ids,
            )
        if chain is not None and chain[0] == (report["report_id"], seq):
            neighbours = chain[1]()
        else:
            neighbours = self.store.chain_rows(report["report_id"], factory_id, seq)
        return self._business(factory_id, verified, payload_sha, ids, neighbours)

    def _prefetch_chain(
        self, factory_id: str, claimed: Any
    ) -> tuple[tuple[str, int], Callable[[], list[StoredReport]]] | None:
        """The chain rows of the ids a payload claims, prefetched; None when it claims none
        that a report could have (the verified report's are then looked up)."""
        if not isinstance(claimed, dict):
            return None
        report_id, seq = claimed.get("report_id"), claimed.get("seq")
        # Shaped as a report's, or the look-up could fail where the checks would reject
        # cleanly (a NUL in a text parameter, a seq beyond the column's range).
        if type(report_id) is not str or not _REPORT_ID.fullmatch(report_id):
            return None
        if type(seq) is not int or not 1 <= seq <= _MAX_SEQ:
            return None
        return (report_id, seq), self.store.prefetch_chain_rows(report_id, factory_id, seq)

    def _business(
        self, factory_id: str, verified: Verified, sha: str, ids: dict[str, Any],
        neighbours: list[StoredReport],
    ) -> Decision:
        report = verified.payload
        seq = int(report["seq"])

        def reject(reason: str, detail: str) -> Decision:
            return Decision("rejected", reason, detail, factory_id, sha, **ids)

        known = next((r for r in neighbours if r.report_id == report["report_id"]), None)
        by_seq = {r.seq: r for r in neighbours if r.factory_id == factory_id}
        if known is not None:
            if known.payload_sha256 == sha:
                return Decision(
                    "duplicate",
                    None,
                    "Report already stored.",
                    factory_id,
                    sha,
                    original=known,
                    **ids,
                )
            return reject("conflict", "Same report_id, different content (equivocation).")
        def held(detail: str) -> Decision:
            # Not stored: the sender resends it once the chain before it is in.
            return Decision("pending", None, detail, factory_id, sha, **ids)

        # A stored pending-link report (its predecessor was missing when it came) holds its seq
        # only until the real chain contradicts it: a report that links to the stored chain
        # evicts it, so an orphan never blocks the genuine report at its seq or after it.
        evict: list[str] = []
        taken = by_seq.get(seq)
        if taken is not None and taken.state != PENDING_LINK:
            return reject("fork", f"seq {seq} is taken by another report.")
        linked = False
        if seq == 1:
            if report["prev_sha256"] != genesis_sha256(factory_id):
                return reject("chain", "seq 1 does not start from the genesis hash.")
            linked = True
        else:
            previous = by_seq.get(seq - 1)
            if previous is not None and previous.payload_sha256 == report["prev_sha256"]:
                linked = True
            elif previous is not None and previous.state == PENDING_LINK:
                return held(f"Stored seq {seq - 1} is itself unlinked and does not chain to this.")
            elif previous is not None:
                return reject("chain", f"prev_sha256 does not match stored seq {seq - 1}.")
        if taken is not None:
            if not linked:
                return held(f"seq {seq} is held by an unlinked report; resend after seq {seq - 1}.")
            evict.append(taken.report_id)
        successor = by_seq.get(seq + 1)
        relink = None
        if successor is not None:
            if successor.prev_sha256 == sha:
                relink = successor.report_id if successor.state == PENDING_LINK else None
            elif successor.state != PENDING_LINK:
                return reject("chain", f"Stored seq {seq + 1} does not chain to this report.")
            elif not linked:
                return held(f"seq {seq - 1} is not stored; resend after it.")
            else:
                evict.append(successor.report_id)
        state = ACCEPTED if linked else PENDING_LINK
        try:
            sums = day_sums(report) if self.indicator_fn is None else None
        except Exception:  # malformed rows: the recomputation below names the problem
            sums = None
        if self.check_indicators:
            try:
                recomputed = (
                    recompute_fast(report, sums)
                    if sums is not None
                    else recompute_indicators(report, self.indicator_fn)
                )
            except Exception as error:  # any recomputation failure is the report's problem
                return reject("indicators", f"Indicators cannot be recomputed: {error}")
            signed = report["indicators"]
            mismatched = [] if signed == recomputed else indicator_mismatches(signed, recomputed)
            if mismatched:
                return reject(
                    "indicators", f"Indicators differ from base measures: {mismatched[:5]}"
                )
        return Decision(
            "accepted", None, "Report accepted.", factory_id, sha, state=state, relink=relink,
            evict=tuple(evict), day_sums=sums, **ids,
        )


def _claimed_ids(unverified: bytes) -> dict[str, Any]:
    """report_id and seq as an unverified payload states them, when well formed."""
    try:
        payload = strict_loads(unverified)
    except EnvelopeError:
        return {}
    if not isinstance(payload, dict):
        return {}
    report_id, seq = payload.get("report_id"), payload.get("seq")
    if not (isinstance(report_id, str) and _REPORT_ID.fullmatch(report_id)):
        return {}
    ids: dict[str, Any] = {"report_id": report_id}
    # Within the schema's range: a receipt naming a larger seq cannot be signed (canonical
    # JSON has no exact integers past 2^53 - 1), which failed the whole message.
    if isinstance(seq, int) and not isinstance(seq, bool) and 1 <= seq <= _MAX_SEQ:
        ids["seq"] = seq
    return ids


_MAX_SEQ = 2**53 - 1  # the schema's maximum; seq + 1 still fits the BIGINT column
_REPORT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
