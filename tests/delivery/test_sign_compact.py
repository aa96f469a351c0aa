"""`sign_compact` signs without joserfc; its tokens must be the very bytes joserfc gives
(Ed25519 is deterministic), for every kind, payload and key, and it must refuse what joserfc's
path refuses."""

from __future__ import annotations

import gc

import pytest
from joserfc.jwk import OKPKey

from agent.protocol.envelope import (
    EnvelopeError,
    Kind,
    canonical_bytes,
    public_jwk,
    sign_compact,
    sign_compact_joserfc,
    verify_compact,
)

PAYLOADS = [
    b"{}",
    canonical_bytes({"a": 1, "b": [1.5, "x", None], "c": "\u00e9\u4e2d"}),
    bytes(range(256)),  # not JSON: the signer signs whatever bytes it is given
    b"x" * 20_000,
]


@pytest.mark.parametrize("kind", list(Kind))
def test_same_token_as_joserfc(kind: Kind) -> None:
    for _ in range(3):
        key = OKPKey.generate_key("Ed25519")
        for payload in PAYLOADS:
            token = sign_compact(payload, key, kind)
            assert token == sign_compact_joserfc(payload, key, kind)
            assert token == sign_compact(payload, key, kind)  # from the cached header


def test_token_verifies() -> None:
    key = OKPKey.generate_key("Ed25519")
    token = sign_compact(PAYLOADS[1], key, Kind.RECEIPT)
    assert verify_compact(token, Kind.RECEIPT, public_jwk(key)).payload_bytes == PAYLOADS[1]


def test_a_new_key_at_a_reused_address_gets_its_own_kid() -> None:
    # The cache is keyed by object identity; a key freed and another allocated in its place
    # must not sign with the first one's header or private key.
    kids = set()
    for _ in range(50):
        key = OKPKey.generate_key("Ed25519")
        token = sign_compact(b"{}", key, Kind.REPORT)
        assert verify_compact(token, Kind.REPORT, public_jwk(key)).payload_bytes == b"{}"
        kids.add(token.split(".")[0])
        del key
        gc.collect()
    assert len(kids) == 50


def test_refuses_a_public_key() -> None:
    public = OKPKey.import_key(public_jwk(OKPKey.generate_key("Ed25519")))
    with pytest.raises(EnvelopeError) as error:
        sign_compact(b"{}", public, Kind.REPORT)
    assert error.value.reason == "key"
