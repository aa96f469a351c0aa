"""Signed bureau receipts (compact JWS, typ tieragent-receipt+jws).

Every report message gets one. The payload always names `factory_id`, `report_id` and
`report_sha256` (SHA-256 of the report's payload bytes, or of the whole message when it
could not be split), so an agent acks exactly the row it sent. A `duplicate` receipt is
deterministic: no time, no state, only the SHA-256 of the original `accepted` receipt;
Ed25519 signatures are deterministic too, so every duplicate receipt for one report is
byte-identical. Receipts for a stored report (accepted, pending-link, duplicate) carry the
transparency log's `log` member (agent/protocol/translog.py: the signed tree head after the
report's leaf, its inclusion proof, the link from the factory's previous head); it is fixed
per report too, so a duplicate's `log` equals the original receipt's. Others carry null.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from joserfc.jwk import OKPKey

from agent.protocol.envelope import Kind, canonical_bytes, sign_compact
from agent.protocol.keys import load_private_key, public_record, read_passphrase, save_private_key

RECEIPT_TYPE = "tieragent-receipt/v1"


def iso_utc(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def receipt_payload(
    *,
    bureau_id: str,
    factory_id: str | None,
    report_id: str | None,
    report_sha256: str,
    seq: int | None,
    status: str,
    state: str | None = None,
    reason: str | None = None,
    received_at: float | None = None,
    original_receipt_sha256: str | None = None,
    log: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "type": RECEIPT_TYPE,
        "bureau_id": bureau_id,
        "factory_id": factory_id,
        "report_id": report_id,
        "report_sha256": report_sha256,
        "seq": seq,
        "status": status,
        "state": state,
        "reason": reason,
        "received_at": iso_utc(received_at) if received_at is not None else None,
        "original_receipt_sha256": original_receipt_sha256,
        "log": log,
    }


def sign_receipt(payload: dict[str, Any], key: OKPKey) -> str:
    return sign_compact(canonical_bytes(payload), key, Kind.RECEIPT)


def load_or_create_bureau_key(path: Path, passphrase_file: Path | None = None) -> OKPKey:
    """The bureau's receipt-signing key (0600 PKCS#8 file), created on first use (the demo
    and tests; an operator creates it once with `create_bureau_key`)."""
    passphrase = read_passphrase(passphrase_file)
    if not path.exists():
        from agent.protocol.keys import generate_key

        save_private_key(path, generate_key(), passphrase)
    return load_private_key(path, passphrase)


class BureauKeyMissing(Exception):
    """The receipt key file does not exist (it is never created implicitly)."""


def load_bureau_key(path: Path, passphrase_file: Path | None = None) -> OKPKey:
    """The existing receipt-signing key; BureauKeyMissing when there is no such file: a key
    made up on the spot would sign receipts no agent has pinned, and every one of them would
    be counted as forged."""
    if not path.exists():
        raise BureauKeyMissing(
            f"{path} does not exist. Create the bureau's receipt key once with `tieragent "
            f"bureau init-key --key {path}` and give agents the output of `tieragent bureau "
            f"show-key --key {path}`; or give --key the key you already use."
        )
    return load_private_key(path, read_passphrase(passphrase_file))


def create_bureau_key(path: Path, passphrase_file: Path | None = None) -> OKPKey:
    """A new receipt-signing key at `path`; refuses to replace an existing file."""
    from agent.protocol.keys import generate_key

    if path.exists():
        raise FileExistsError(
            f"{path} already exists; a new bureau key would orphan every agent that pinned "
            "this one. Remove it first only if that is what you mean."
        )
    save_private_key(path, generate_key(), read_passphrase(passphrase_file))
    return load_private_key(path, read_passphrase(passphrase_file))


def bureau_public(key: OKPKey) -> dict[str, str]:
    """Public JWK + kid of the receipt key, for agents to pin."""
    return public_record(key)
