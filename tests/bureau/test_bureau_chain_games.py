"""Fault matrix rows B5 (equivocation) and B7 (gap alert after the reorder timeout), through
`Receiver.handle` and `Receiver.tick` as the serving loop calls them, on SQLite and on
PostgreSQL. The receiver's clock is the test's, so the reorder timeout (5 s, the test
profile of docs/reliability.md §c) is crossed without waiting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import OKPKey

from agent.protocol.chain import genesis_sha256
from agent.protocol.envelope import Kind, canonical_bytes, sha256_hex, verify_compact
from agent.protocol.mqtt import report_topic
from tests.bureau.test_bureau_hostile import _signed
from tests.support.bureau_receiver import Bureau, start_bureau
from tests.support.reports import FACTORY, day, make_report

TOPIC = report_topic(FACTORY)
REORDER_TIMEOUT_S = 5.0
T = 1_800_000_000.0


@pytest.fixture
def bureau(bureau_database: Path | str, agent_key: OKPKey) -> Iterator[Bureau]:
    bureau = start_bureau(bureau_database, None, {FACTORY: agent_key},
                          reorder_timeout_s=REORDER_TIMEOUT_S)
    yield bureau
    bureau.receiver.stop()


def _chain(key: OKPKey, count: int) -> list[dict[str, Any]]:
    prev, reports = genesis_sha256(FACTORY), []
    for n in range(1, count + 1):
        report = make_report(key, day(n), n, prev, devices=1)
        reports.append(report)
        prev = sha256_hex(canonical_bytes(report))
    return reports


def _status(bureau: Bureau, reply: tuple[str, str] | None) -> dict[str, Any]:
    assert reply is not None
    return dict(verify_compact(reply[1], Kind.RECEIPT, bureau.public).payload)


def _stored(bureau: Bureau) -> list[tuple[Any, ...]]:
    return [(r.report_id, r.seq, r.payload_sha256, r.jws, r.state, r.receipt_jws)
            for r in bureau.receiver.store.reports(FACTORY)]


def test_B5_equivocation_is_rejected_alerted_and_the_first_version_untouched(
        bureau: Bureau, agent_key: OKPKey) -> None:
    """If a validly signed report reuses an accepted report's id with other content (every
    sort of field: the version, the issue time, a digest), then each is rejected
    as `conflict` with an alert, and the stored first version (bytes, hash, state and its
    receipt) and the log are exactly as before; its resend still gets `duplicate`."""
    first = _chain(agent_key, 1)[0]
    original = _signed(agent_key, first)
    assert _status(bureau, bureau.receiver.handle(TOPIC, original, now=T))["status"] == "accepted"
    before = _stored(bureau)
    leaves_before = bureau.receiver.store.db.rows("SELECT * FROM log_leaves")
    variants = [{**first, "agent_version": "9.9"},
                {**first, "issued_at": "2025-03-02T00:00:01Z"},
                {**first, "config_sha256": "0" * 64}]
    for n, variant in enumerate(variants):
        reply = _status(bureau, bureau.receiver.handle(TOPIC, _signed(agent_key, variant),
                                                       now=T + n + 1))
        assert (reply["status"], reply["reason"]) == ("rejected", "conflict"), reply
    assert _stored(bureau) == before
    assert bureau.receiver.store.db.rows("SELECT * FROM log_leaves") == leaves_before
    assert [kind for _, kind, _ in bureau.receiver.store.alerts()].count("conflict") == 3
    resent = _status(bureau, bureau.receiver.handle(TOPIC, original, now=T + 10))
    assert resent["status"] == "duplicate"


def test_B7_a_gap_is_alerted_once_after_the_reorder_timeout(
        bureau: Bureau, agent_key: OKPKey) -> None:
    """If seq 2 is missing after seq 1 and 3 arrived, then seq 3 waits as pending-link, no
    alert is raised before the reorder timeout, one alert within a second after it (ticks
    each second, as `bureau serve` does), none again on later ticks, and when seq 2 arrives
    both are accepted in order."""
    r1, r2, r3 = (_signed(agent_key, report) for report in _chain(agent_key, 3))
    receiver = bureau.receiver
    assert _status(bureau, receiver.handle(TOPIC, r1, now=T))["status"] == "accepted"
    held = _status(bureau, receiver.handle(TOPIC, r3, now=T))
    assert (held["status"], held["state"]) == ("pending", "pending-link")
    alerted_at = None
    for tenth in range(1, 200):  # 19.9 s of ticks, every 0.1 s of the receiver's clock
        now = T + tenth / 10
        receiver.clock = lambda now=now: now  # type: ignore[misc]
        receiver.tick()
        gaps = [a for a in receiver.store.alerts() if a[1] == "gap"]
        if gaps and alerted_at is None:
            alerted_at = now
    assert alerted_at is not None, "no gap alert"
    assert REORDER_TIMEOUT_S <= alerted_at - T <= REORDER_TIMEOUT_S + 1.0, alerted_at - T
    gaps = [a for a in receiver.store.alerts() if a[1] == "gap"]
    assert len(gaps) == 1, gaps
    assert gaps[0][0] == FACTORY and "seq 2" in gaps[0][2]
    assert _status(bureau, receiver.handle(TOPIC, r2, now=T + 30))["status"] == "accepted"
    assert [(r.seq, r.state) for r in receiver.store.reports(FACTORY)] == [
        (1, "accepted"), (2, "accepted"), (3, "accepted")]
