"""The bureau's transparency log (docs/reliability.md §b.9) through `Receiver.handle`: receipts
for stored reports carry a signed tree head, an inclusion proof and the link from the
factory's previous head, and the agent's monitor (agent/log_monitor.py) admits them, waits
for a missing link, and raises its alarm when the bureau's log was rewritten."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import OKPKey
from typer.testing import CliRunner

from agent.log_monitor import LogMonitor, Verdict, read_log_status
from agent.protocol.chain import genesis_sha256
from agent.protocol.envelope import (
    Kind,
    canonical_bytes,
    sha256_hex,
    sign_compact,
    thumbprint,
    verify_compact,
)
from agent.protocol.merkle import verify_inclusion
from agent.protocol.mqtt import report_topic
from agent.protocol.translog import check_receipt_log, consistent, report_leaf, verify_head
from bureau.receipts import sign_receipt
from tests.support.bureau_receiver import Bureau, start_bureau
from tests.support.dishonest import remove_report
from tests.support.reports import FACTORY, day, make_report

OTHER = "demo-tj-002"


@pytest.fixture
def keys() -> dict[str, OKPKey]:
    return {FACTORY: OKPKey.generate_key("Ed25519"), OTHER: OKPKey.generate_key("Ed25519")}


@pytest.fixture
def bureau(bureau_database: Path | str, keys: dict[str, OKPKey]) -> Iterator[Bureau]:
    """A receiver on SQLite, then on PostgreSQL (tests/conftest.py)."""
    bureau = start_bureau(bureau_database, None, keys)
    yield bureau
    bureau.receiver.stop()


def _chain(key: OKPKey, factory: str, days: range) -> list[bytes]:
    prev, out = genesis_sha256(factory), []
    for n in days:
        report = make_report(key, day(n), n, prev, factory=factory, devices=1)
        payload = canonical_bytes(report)
        out.append(sign_compact(payload, key, Kind.REPORT).encode())
        prev = sha256_hex(payload)
    return out


def _send(bureau: Bureau, factory: str, message: bytes) -> tuple[str, dict[str, Any]]:
    reply = bureau.receiver.handle(report_topic(factory), message)
    assert reply is not None
    return reply[1], dict(verify_compact(reply[1], Kind.RECEIPT, bureau.public).payload)


def _monitor(tmp_path: Path, bureau: Bureau) -> LogMonitor:
    db = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
    return LogMonitor(db, {thumbprint(bureau.public): bureau.public})


def test_receipts_carry_heads_inclusion_and_links_that_verify(
    bureau: Bureau, keys: dict[str, OKPKey], tmp_path: Path
) -> None:
    """If two factories' reports arrive interleaved, one after a gap (pending-link) and one
    resent, then every accepted, pending-link and duplicate receipt carries a head signed by
    the bureau key, the report's inclusion proof in it, and a link that proves the head
    extends the factory's previous head; a duplicate's log equals the original's; rejected
    and held receipts carry none; and the agent's monitor admits them all."""
    mine = _chain(keys[FACTORY], FACTORY, range(1, 5))
    other = _chain(keys[OTHER], OTHER, range(1, 3))
    order = [(FACTORY, mine[0]), (OTHER, other[0]), (FACTORY, mine[2]), (FACTORY, mine[1]),
             (OTHER, other[1]), (FACTORY, mine[3]), (FACTORY, mine[0])]
    pinned = {thumbprint(bureau.public): bureau.public}
    monitor = _monitor(tmp_path, bureau)
    previous: dict[str, Any] = {}
    receipts = []
    for factory, message in order:
        _, receipt = _send(bureau, factory, message)
        receipts.append(receipt)
        entry = check_receipt_log(receipt["log"], receipt["report_sha256"], pinned)
        assert entry.head.tree_size == entry.leaf_index + 1
        if receipt["status"] != "duplicate":
            last = previous.get(factory)
            assert entry.link_from == (last.tree_size if last else None)
            if last is not None:
                assert consistent(last, entry.head, entry.link)
            previous[factory] = entry.head
        if factory == FACTORY:
            assert monitor.check(receipt) is Verdict.ADMIT
    assert [r["status"] for r in receipts] == [
        "accepted", "accepted", "pending", "accepted", "accepted", "accepted", "duplicate"]
    assert receipts[2]["state"] == "pending-link"
    assert receipts[-1]["log"] == receipts[0]["log"]  # fixed per report
    orphan = make_report(keys[FACTORY], day(20), 6, "ab" * 32, devices=1)  # seq 5 missing
    _, stored = _send(bureau, FACTORY, sign_compact(canonical_bytes(orphan), keys[FACTORY],
                                                    Kind.REPORT).encode())
    assert (stored["status"], stored["state"]) == ("pending", "pending-link")
    assert check_receipt_log(stored["log"], stored["report_sha256"], pinned).link_from == 6
    assert monitor.check(stored) is Verdict.ADMIT
    genuine_7 = _chain(keys[FACTORY], FACTORY, range(1, 8))[6]  # seq 6 is held by the orphan
    _, hold = _send(bureau, FACTORY, genuine_7)
    assert hold["status"] == "pending" and hold["state"] is None and hold["log"] is None
    _, rejected = _send(bureau, FACTORY, mine[1][:-8] + b"AAAAAAAA")
    assert rejected["status"] == "rejected" and rejected["log"] is None
    assert monitor.check(hold) is monitor.check(rejected) is Verdict.ADMIT
    state = read_log_status(monitor.db)
    assert state is not None and state["alarms"] == 0 and state["heads_held"] == 5
    # The stored receipt is the one sent: its head is the head at the report's leaf.
    row = bureau.receiver.store.get(receipts[0]["report_id"])
    assert row is not None
    stored = verify_compact(row.receipt_jws, Kind.RECEIPT, bureau.public).payload
    assert stored["log"] == receipts[0]["log"]


def test_the_monitor_waits_for_a_missing_link(
    bureau: Bureau, keys: dict[str, OKPKey], tmp_path: Path
) -> None:
    """If the receipt of a factory's second report is lost and the third's arrives first, then
    the third acknowledges nothing (unlinked, no alarm) until the second's comes again; then
    both are admitted."""
    r1, r2, r3 = (_send(bureau, FACTORY, m)[1] for m in _chain(keys[FACTORY], FACTORY,
                                                               range(1, 4)))
    monitor = _monitor(tmp_path, bureau)
    assert monitor.check(r1) is Verdict.ADMIT
    assert monitor.check(r3) is Verdict.UNLINKED
    assert monitor.check(r2) is Verdict.ADMIT
    assert monitor.check(r3) is Verdict.ADMIT
    assert monitor.check(r1) is Verdict.ADMIT  # an old head it holds
    state = read_log_status(monitor.db)
    assert state is not None and state["alarms"] == 0 and state["head"]["tree_size"] == 3


@pytest.mark.parametrize("keep_head", [False, True])
def test_B14_a_removed_report_raises_the_alarm_and_acks_nothing(
    bureau: Bureau, keys: dict[str, OKPKey], tmp_path: Path, keep_head: bool
) -> None:
    """If the bureau deletes an accepted report and its leaf (numbering the leaves again, so
    its log looks whole) and answers the next report, then the monitor that saw the earlier
    heads raises its alarm (recorded, shown by read_log_status) instead of admitting the
    receipt; a bureau that kept its last head also alerts itself (keep_head)."""
    messages = _chain(keys[FACTORY], FACTORY, range(1, 5))
    monitor = _monitor(tmp_path, bureau)
    first = [_send(bureau, FACTORY, m)[1] for m in messages[:3]]
    assert [monitor.check(r) for r in first] == [Verdict.ADMIT] * 3
    remove_report(bureau.receiver.store.db, first[1]["report_id"], keep_head=keep_head)
    _, fourth = _send(bureau, FACTORY, messages[3])
    assert fourth["status"] == "accepted"  # its predecessor, seq 3, is still stored
    assert monitor.check(fourth) is Verdict.ALARM
    state = read_log_status(monitor.db)
    assert state is not None and state["alarms"] == 1
    assert "size 3" in state["last_alarm"]["detail"]
    assert state["last_alarm"]["report_id"] == fourth["report_id"]
    kinds = {kind for _, kind, _ in bureau.receiver.store.alerts()}
    assert ("log" in kinds) is keep_head


def test_a_proof_that_does_not_verify_raises_the_alarm(
    bureau: Bureau, keys: dict[str, OKPKey], tmp_path: Path
) -> None:
    """If a receipt signed by the bureau carries a wrong inclusion proof, a link that skips
    the last head, or no log at all after heads were seen, then each raises the alarm."""
    r1, r2 = (_send(bureau, FACTORY, m)[1] for m in _chain(keys[FACTORY], FACTORY, range(1, 3)))
    monitor = _monitor(tmp_path, bureau)
    assert monitor.check(r1) is Verdict.ADMIT

    def resigned(receipt: dict[str, Any]) -> dict[str, Any]:
        token = sign_receipt(receipt, bureau.key)
        return dict(verify_compact(token, Kind.RECEIPT, bureau.public).payload)

    log = r2["log"]
    bad_inclusion = {**log, "inclusion": ["00" * 32 for _ in log["inclusion"]]}
    skipping = {**log, "link": None}
    for member in (bad_inclusion, skipping, None):
        assert monitor.check(resigned({**r2, "log": member})) is Verdict.ALARM
    assert monitor.check(r2) is Verdict.ADMIT  # the genuine receipt still links
    state = read_log_status(monitor.db)
    assert state is not None and state["alarms"] == 3


def test_bureau_log_command_prints_the_head_and_a_proof(
    bureau: Bureau, keys: dict[str, OKPKey]
) -> None:
    """If `tieragent bureau log --json` is asked for a factory and a report, then it prints the
    head the receiver signed last (verifying with the bureau key, matching the leaves), the
    factory's leaves, and the report's inclusion proof, which verifies against that head."""
    from tieragent.cli import _register_subcommands, app

    for factory in (FACTORY, OTHER):
        for message in _chain(keys[factory], factory, range(1, 3)):
            _send(bureau, factory, message)
    report_id = bureau.receiver.store.reports(FACTORY)[1].report_id
    _register_subcommands()
    target = bureau.receiver.settings.db
    where = ["--database-url", target] if isinstance(target, str) else ["--db", str(target)]
    args = ["bureau", "log", *where, "--factory", FACTORY, "--report", report_id]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    state = json.loads(result.output)
    head = verify_head(state["head"]["sth"], {thumbprint(bureau.public): bureau.public})
    assert head.tree_size == state["leaves"] == 4 and state["head"]["matches_leaves"]
    assert state["factory"]["leaves"] == 2
    item = state["report"]
    assert verify_inclusion(report_leaf(item["payload_sha256"]), item["leaf_index"],
                            head.tree_size, [bytes.fromhex(h) for h in item["inclusion"]],
                            head.root_hash)
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0 and "Signed tree head: size 4" in text.output
    unknown = CliRunner().invoke(app, [*args[:-1], "0" * 8])
    assert unknown.exit_code == 2 and "has no leaf" in unknown.output
