"""The bureau's transparency log (RFC 9162 style): its leaves, signed tree heads, and the
proofs every receipt for a stored report carries (docs/reliability.md §b.9).

- **Leaf.** One per report the bureau stores (state accepted or pending-link), in the order
  it stored them. Leaf hash = SHA-256(0x00 || the report's payload SHA-256 as 32 raw bytes):
  the hash the chain, the receipts and the agent's outbox already use, so a verifier needs
  no JWS to place a report, and the leaf binds the signed payload (factory, seq, report id
  and content), not the signature bytes.
- **Tree head (STH).** A compact JWS (typ `tieragent-log-head+jws`, the bureau's receipt key)
  over the canonical JSON `{"type", "bureau_id", "tree_size", "root_hash" (hex),
  "timestamp"}`; the timestamp is when the head's last leaf was appended, so the head of a
  size is one fixed message however often it is signed again.
- **Receipt member `log`** (accepted, pending-link and duplicate receipts; null otherwise):
  `{"head": STH right after the report's leaf was appended, "leaf_index", "inclusion":
  [hex], "link": {"from_size", "proof": [hex]} | null}`. `link` is the consistency proof
  from the head of the factory's previous leaf to `head`, so a factory's heads form a
  chain its agent checks link by link (agent/log_monitor.py). Everything in it is fixed
  per report: every receipt for one report stays byte-identical.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import OKPKey

from agent.protocol.envelope import (
    EnvelopeError,
    Kind,
    canonical_bytes,
    peek_compact,
    sign_compact,
    verify_compact,
)
from agent.protocol.errors import ProtocolError
from agent.protocol.merkle import leaf_hash, verify_consistency, verify_inclusion

LOG_HEAD_TYPE = "tieragent-log-head/v1"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAX_PROOF = 64  # hashes: a tree of 2^64 leaves needs fewer


class LogProofError(ProtocolError):
    """A log head or proof that does not verify; str() says which and why."""


@dataclass(frozen=True, slots=True)
class LogHead:
    """A verified signed tree head."""

    bureau_id: str
    tree_size: int
    root_hash: bytes
    timestamp: str
    jws: str

    def describe(self) -> str:
        return f"size {self.tree_size}, root {self.root_hash.hex()[:16]}…"


@dataclass(frozen=True, slots=True)
class ReceiptLog:
    """The `log` member of a receipt, its head verified and its inclusion proof checked."""

    head: LogHead
    leaf_index: int
    link_from: int | None  # size of the factory's previous head; None for its first leaf
    link: tuple[bytes, ...]


def report_leaf(payload_sha256: str) -> bytes:
    """The leaf hash of a stored report, from its payload SHA-256 (hex)."""
    return leaf_hash(bytes.fromhex(payload_sha256))


def iso_utc(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def sign_head(
    bureau_id: str, tree_size: int, root_hash: bytes, timestamp: float, key: OKPKey
) -> str:
    payload = {
        "type": LOG_HEAD_TYPE,
        "bureau_id": bureau_id,
        "tree_size": tree_size,
        "root_hash": root_hash.hex(),
        "timestamp": iso_utc(timestamp),
    }
    return sign_compact(canonical_bytes(payload), key, Kind.LOG_HEAD)


def verify_head(token: Any, keys: Mapping[str, dict[str, Any]]) -> LogHead:
    """Verify an STH with one of `keys` (kid -> public JWK); LogProofError otherwise."""
    if not isinstance(token, str):
        raise LogProofError("The log head is not a compact JWS.")
    try:
        header, _ = peek_compact(token, Kind.LOG_HEAD)
        jwk = keys.get(header["kid"])
        if jwk is None:
            raise LogProofError("The log head is signed by a key that is not the bureau's.")
        value = verify_compact(token, Kind.LOG_HEAD, jwk).payload
    except EnvelopeError as error:
        raise LogProofError(f"The log head does not verify ({error.reason}).") from None
    if (
        not isinstance(value, dict)
        or value.get("type") != LOG_HEAD_TYPE
        or not isinstance(value.get("bureau_id"), str)
        or not _count(value.get("tree_size"))
        or not isinstance(value.get("root_hash"), str)
        or not _HEX64.match(value["root_hash"])
        or not isinstance(value.get("timestamp"), str)
    ):
        raise LogProofError("The log head's payload is not a tieragent-log-head/v1.")
    return LogHead(value["bureau_id"], value["tree_size"], bytes.fromhex(value["root_hash"]),
                   value["timestamp"], token)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def hashes(value: Any, what: str) -> tuple[bytes, ...]:
    """A JSON list of hex SHA-256 values (at most MAX_PROOF of them)."""
    if not isinstance(value, list) or len(value) > MAX_PROOF:
        raise LogProofError(f"The {what} is not a list of at most {MAX_PROOF} hashes.")
    if not all(isinstance(item, str) and _HEX64.match(item) for item in value):
        raise LogProofError(f"The {what} holds something that is not a hex SHA-256.")
    return tuple(bytes.fromhex(item) for item in value)


def hex_list(values: Sequence[bytes]) -> list[str]:
    return [value.hex() for value in values]


def check_receipt_log(
    member: Any, payload_sha256: str, keys: Mapping[str, dict[str, Any]]
) -> ReceiptLog:
    """Verify a receipt's `log` member for the report with `payload_sha256`: the head's
    signature and the report's inclusion in it. The link is parsed, not checked (that needs
    the head the checker holds). LogProofError on any failure."""
    if not isinstance(member, dict) or set(member) != {"head", "leaf_index", "inclusion", "link"}:
        raise LogProofError("The receipt's log member is malformed.")
    head = verify_head(member["head"], keys)
    index = member["leaf_index"]
    if not _count(index) or not isinstance(payload_sha256, str) or not _HEX64.match(
        payload_sha256
    ):
        raise LogProofError("The receipt's log member names no leaf.")
    inclusion = hashes(member["inclusion"], "inclusion proof")
    if not verify_inclusion(report_leaf(payload_sha256), index, head.tree_size, inclusion,
                            head.root_hash):
        raise LogProofError(
            f"The report is not in the log head it came with (leaf {index}, {head.describe()})."
        )
    link = member["link"]
    if link is None:
        return ReceiptLog(head, index, None, ())
    if not isinstance(link, dict) or set(link) != {"from_size", "proof"} or not _count(
        link["from_size"]
    ):
        raise LogProofError("The receipt's log link is malformed.")
    return ReceiptLog(head, index, link["from_size"], hashes(link["proof"], "link proof"))


def consistent(first: LogHead, second: LogHead, proof: Sequence[bytes]) -> bool:
    """`second` extends `first` (RFC 9162 §2.1.4.2)."""
    return verify_consistency(
        first.tree_size, second.tree_size, first.root_hash, second.root_hash, proof
    )
