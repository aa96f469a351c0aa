"""Key life cycle at the bureau (issue 17 item 1): a rotation names the first sequence number
the new key signs; the rotated-out key signs nothing at or after it and no further rotation;
revocation and re-enrolment. Driven through `Receiver.handle`, the path of on_message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import OKPKey

from agent.protocol.chain import genesis_sha256
from agent.protocol.envelope import (
    Kind,
    canonical_bytes,
    public_jwk,
    sha256_hex,
    sign_compact,
    verify_compact,
)
from agent.protocol.keys import rotation_statement
from agent.protocol.mqtt import report_topic, rotation_topic
from bureau.evidence_export import export_evidence
from bureau.evidence_verify import verify_evidence_dir
from indicators.policy import DEFAULT_POLICY, EXAMPLE_BENCHMARKS, EXAMPLE_DECLARATIONS, PolicyFiles
from tests.support.bureau_receiver import Bureau, start_bureau
from tests.support.reports import FACTORY, day, make_report

TOPIC = report_topic(FACTORY)


class Chain:
    """A factory's chain as the agent signs it: each report links to the previous one."""

    def __init__(self) -> None:
        self.prev = genesis_sha256(FACTORY)
        self.seq = 0

    def next(self, key: OKPKey) -> bytes:
        self.seq += 1
        report = make_report(key, day(self.seq), self.seq, self.prev, devices=1)
        self.prev = sha256_hex(canonical_bytes(report))
        return sign_compact(canonical_bytes(report), key, Kind.REPORT).encode()


def _send(bureau: Bureau, message: bytes) -> dict[str, Any]:
    reply = bureau.receiver.handle(TOPIC, message)
    assert reply is not None
    return dict(verify_compact(reply[1], Kind.RECEIPT, bureau.public).payload)


def _rotate(bureau: Bureau, old: OKPKey, new: OKPKey, first_seq: int | None) -> None:
    statement = rotation_statement(
        old, new, factory_id=FACTORY, effective_from_seq=first_seq,
        issued_at="2025-03-10T00:00:00Z",
    )
    bureau.receiver.handle(rotation_topic(FACTORY), json.dumps(statement).encode())


@pytest.fixture
def k1() -> OKPKey:
    return OKPKey.generate_key("Ed25519")


@pytest.fixture
def bureau(bureau_database: Path | str, k1: OKPKey) -> Iterator[Bureau]:
    """A receiver on SQLite, then on PostgreSQL (tests/conftest.py)."""
    bureau = start_bureau(bureau_database, None, {FACTORY: k1})
    yield bureau
    bureau.receiver.stop()


def test_retired_key_signs_nothing_at_or_after_the_rotation_seq(bureau: Bureau, k1: OKPKey) -> None:
    """If K1 rotates to K2 from seq 3, then K1's in-flight seq 2 is still accepted, K2's seq 3
    is accepted, and a new report by K1 at seq 4 is rejected as `retired` (it was accepted
    before: effective_from_seq was not enforced)."""
    k2 = OKPKey.generate_key("Ed25519")
    chain = Chain()
    r1, r2 = chain.next(k1), chain.next(k1)
    assert _send(bureau, r1)["status"] == "accepted"
    _rotate(bureau, k1, k2, first_seq=3)
    assert bureau.receiver.registry.get(k1.thumbprint()).status == "retired"  # type: ignore[union-attr]
    assert _send(bureau, r2)["status"] == "accepted"  # signed before the rotation
    assert _send(bureau, chain.next(k2))["status"] == "accepted"
    late = _send(bureau, chain.next(k1))
    assert (late["status"], late["reason"], late["seq"]) == ("rejected", "retired", 4)
    # The rotated-in key does not reach back before its window either.
    backdated = make_report(k2, day(20), 2, "0" * 64, devices=1)
    early = _send(bureau, sign_compact(canonical_bytes(backdated), k2, Kind.REPORT).encode())
    assert (early["status"], early["reason"]) == ("rejected", "key-window")
    assert [r.seq for r in bureau.receiver.store.reports(FACTORY)] == [1, 2, 3]


def test_a_retired_or_revoked_key_cannot_sign_a_rotation(bureau: Bureau, k1: OKPKey) -> None:
    """If K1, retired by a rotation to K2, signs a rotation to a key of its choosing (K3),
    then the bureau refuses it and K3 is not enrolled (it was accepted and active before);
    the same for a revoked key; a statement without effective_from_seq is refused; the
    genuine statement received twice is applied once."""
    registry = bureau.receiver.registry
    k2, k3, k4 = (OKPKey.generate_key("Ed25519") for _ in range(3))
    _rotate(bureau, k1, k2, first_seq=1)
    _rotate(bureau, k1, k2, first_seq=1)  # MQTT may deliver it twice
    assert registry.get(k2.thumbprint()).from_seq == 1  # type: ignore[union-attr]
    _rotate(bureau, k1, k3, first_seq=5)
    assert registry.get(k3.thumbprint()) is None
    _rotate(bureau, k2, k4, first_seq=None)
    assert registry.get(k4.thumbprint()) is None
    with bureau.receiver.store.transaction():
        registry.revoke(k2.thumbprint())
    _rotate(bureau, k2, k4, first_seq=7)
    assert registry.get(k4.thumbprint()) is None
    assert bureau.receiver.metrics["rotations_rejected_total"] == 3
    assert bureau.receiver.metrics["keys_rotated_total"] == 2


def test_rotation_cannot_disown_reports_already_stored(bureau: Bureau, k1: OKPKey) -> None:
    """If a rotation names a first seq at or before a report already stored under the old
    key, then it is refused (it would make accepted evidence unverifiable by its window)."""
    chain = Chain()
    for _ in range(3):
        assert _send(bureau, chain.next(k1))["status"] == "accepted"
    k2 = OKPKey.generate_key("Ed25519")
    _rotate(bureau, k1, k2, first_seq=3)
    assert bureau.receiver.registry.get(k2.thumbprint()) is None
    _rotate(bureau, k1, k2, first_seq=4)
    assert bureau.receiver.registry.get(k2.thumbprint()) is not None


def test_revocation_then_re_enrolment_continues_the_chain(bureau: Bureau, k1: OKPKey) -> None:
    """If K1 is revoked (compromised) and the bureau enrols a new key K2 out of band, then
    K1's reports received after the revocation are rejected as `revoked` naming their report
    id, K2's next report links to the last stored one and is accepted, and the reports stored
    before the revocation stay accepted."""
    registry = bureau.receiver.registry
    chain = Chain()
    assert _send(bureau, chain.next(k1))["status"] == "accepted"
    with bureau.receiver.store.transaction():
        registry.revoke(k1.thumbprint(), at=bureau.receiver.clock() - 1)
    held = chain.seq, chain.prev
    stale = _send(bureau, chain.next(k1))
    assert (stale["status"], stale["reason"], stale["seq"]) == ("rejected", "revoked", 2)
    assert stale["report_id"] is not None
    chain.seq, chain.prev = held  # the agent re-signs seq 2 with its new key
    k2 = OKPKey.generate_key("Ed25519")
    with bureau.receiver.store.transaction():
        registry.enroll(FACTORY, public_jwk(k2))
    assert _send(bureau, chain.next(k2))["status"] == "accepted"
    assert [(r.seq, r.state) for r in bureau.receiver.store.reports(FACTORY)] == [
        (1, "accepted"), (2, "accepted")
    ]


def test_B8_reports_signed_before_a_revocation_still_verify_in_the_evidence_export(
        bureau: Bureau, k1: OKPKey, tmp_path: Path) -> None:
    """If K1 signs seq 1 and 2, is then revoked, its next report is rejected, and K2 continues
    the chain, then the evidence folder exported afterwards holds all three accepted reports,
    names K1 as revoked with its window, and verifies offline with the bureau key."""
    registry = bureau.receiver.registry
    chain = Chain()
    for _ in range(2):
        assert _send(bureau, chain.next(k1))["status"] == "accepted"
    with bureau.receiver.store.transaction():
        registry.revoke(k1.thumbprint(), at=bureau.receiver.clock() - 1)
    held = chain.seq, chain.prev
    assert _send(bureau, chain.next(k1))["reason"] == "revoked"
    chain.seq, chain.prev = held
    k2 = OKPKey.generate_key("Ed25519")
    with bureau.receiver.store.transaction():
        registry.enroll(FACTORY, public_jwk(k2))
    assert _send(bureau, chain.next(k2))["status"] == "accepted"
    out = tmp_path / "evidence"
    export_evidence(bureau.receiver.store, FACTORY, 2025, out,
                    PolicyFiles(DEFAULT_POLICY, EXAMPLE_BENCHMARKS, EXAMPLE_DECLARATIONS),
                    through=date(2025, 3, 31),
                    bureau_key=bureau.key, pdf=False)
    result = verify_evidence_dir(out, [bureau.public])
    assert result.problems == [], result.problems
    keys = json.loads((out / "keys.json").read_text())
    listed = json.dumps(keys)
    assert k1.thumbprint() in listed and k2.thumbprint() in listed and "revoked" in listed
    assert len(list((out / "reports").rglob("*.jws"))) == 3
