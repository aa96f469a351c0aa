"""Fault matrix rows B2 and B3 (docs/reliability.md §c) at the bureau's key registry: hostile
`kid` values signed with a valid key reach the receiver's full path (`Receiver.handle`, as
on_message), and keys that are not Ed25519 are refused at enrolment and at verification.
Runs on SQLite and on PostgreSQL (the `bureau_database` fixture)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import OKPKey

from agent.protocol.chain import genesis_sha256
from agent.protocol.envelope import (
    EnvelopeError,
    Kind,
    canonical_bytes,
    public_jwk,
    sign_compact,
    verify_compact,
)
from agent.protocol.mqtt import report_topic
from bureau.registry import KeyLookupError, RegistryError
from tests.support.bureau_receiver import Bureau
from tests.support.reports import FACTORY, day, make_report

TOPIC = report_topic(FACTORY)
HOSTILE_KIDS = [
    "../../../../etc/passwd",
    "..%2F..%2Fbureau.db",
    "x' OR '1'='1",
    'a"b\\"c',
    "1; DROP TABLE keys; --",
    "kid\x00nul",
    "%s%s%n",
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed_with_kid(key: OKPKey, kid: str, payload: bytes) -> bytes:
    """A compact JWS signed by `key` (valid signature) whose header names `kid`."""
    header = json.dumps({"alg": "EdDSA", "kid": kid, "typ": Kind.REPORT.value}).encode()
    signing_input = f"{_b64(header)}.{_b64(payload)}".encode()
    signature = key.private_key.sign(signing_input)  # type: ignore[union-attr]
    return signing_input + b"." + _b64(signature).encode()


def _registry_rows(bureau: Bureau) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in bureau.receiver.store.db.rows(
        "SELECT kid, factory_id, status FROM keys ORDER BY kid")]


@pytest.mark.parametrize("kid", HOSTILE_KIDS, ids=range(len(HOSTILE_KIDS)))
def test_B3_hostile_kids_reach_the_registry_and_are_rejected_without_side_effects(
        bureau: Bureau, agent_key: OKPKey, kid: str, tmp_path: Path) -> None:
    """If a validly signed report's header names a kid like a path, a quoted string or SQL,
    then the receiver rejects it (reason `header`: a kid must be a thumbprint's 43 base64url
    characters), the registry's own lookup and an admin's revoke of that kid say "unknown
    key" (on PostgreSQL a NUL in it was a driver error before), the key
    table, the stored reports and the test's folder are as before, and the genuine report is
    still accepted afterwards."""
    report = make_report(agent_key, day(1), 1, genesis_sha256(FACTORY), devices=1)
    payload = canonical_bytes({**report, "kid": kid})
    keys_before = _registry_rows(bureau)
    files_before = sorted(p.name for p in tmp_path.iterdir())
    reply = bureau.receiver.handle(TOPIC, _signed_with_kid(agent_key, kid, payload))
    assert reply is not None
    receipt = verify_compact(reply[1], Kind.RECEIPT, bureau.public).payload
    assert receipt["status"] == "rejected"
    assert receipt["reason"] == "header", receipt  # not a thumbprint: refused before any query
    # Behind that check, the registry itself takes such a kid as a bound parameter.
    with pytest.raises(KeyLookupError) as caught:
        bureau.receiver.registry.lookup(FACTORY, kid, time.time())
    assert caught.value.reason == "unknown-key"
    with pytest.raises(RegistryError, match="No enrolled key"):  # an admin typing it
        bureau.receiver.registry.revoke(kid)
    assert _registry_rows(bureau) == keys_before
    assert bureau.receiver.store.reports(FACTORY) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before
    genuine = canonical_bytes(report)
    accepted = bureau.receiver.handle(TOPIC, sign_compact(genuine, agent_key,
                                                          Kind.REPORT).encode())
    assert accepted is not None
    assert verify_compact(accepted[1], Kind.RECEIPT, bureau.public).payload["status"] == (
        "accepted")


@pytest.mark.parametrize("curve", ["X25519", "Ed448"])
def test_B2_keys_that_are_not_ed25519_are_refused_at_enrolment_and_verification(
        bureau: Bureau, curve: str) -> None:
    """If an OKP key of another curve (X25519, Ed448) is offered, then enrolment refuses it
    with a message naming the problem, and a token checked against it fails on the key."""
    other = OKPKey.generate_key(curve)
    jwk = dict(other.as_dict(private=False))
    with pytest.raises(RegistryError, match="Cannot enroll"), \
            bureau.receiver.store.transaction():
        bureau.receiver.registry.enroll("other-factory", jwk)
    header = json.dumps({"alg": "EdDSA", "kid": "a" * 43, "typ": Kind.REPORT.value}).encode()
    token = f"{_b64(header)}.{_b64(b'{}')}.{_b64(b'x' * 64)}"
    with pytest.raises(EnvelopeError) as caught:
        verify_compact(token, Kind.REPORT, jwk)
    assert caught.value.reason in ("key", "header")
    assert public_jwk(OKPKey.generate_key("Ed25519"))["crv"] == "Ed25519"
