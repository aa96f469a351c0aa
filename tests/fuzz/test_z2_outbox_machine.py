"""Z2: the outbox and receipt protocol as a Hypothesis state machine (docs/reliability.md §c).

The agent side is the product's own: an `Outbox` on a SQLite file (reopened from disk on
every crash-restart) drained by a real `Publisher`, whose receipt check and transparency-log
monitor decide every acknowledgement. The bureau is a real `Receiver` (verifier, store on a
SQLite file, signed receipts, transparency log), restarted from its file on a bureau crash.
Only the network between them is an in-process substitute (tests/fuzz/loopback.py): the
machine decides when each report, PUBACK and receipt arrives, is dropped, or is delivered
twice, and it injects forged receipts. Reports are real signed reports (cached builds of the
same chain, as they are deterministic).

Invariants after every step: I1 (an acknowledged report is stored at the bureau, bytes
equal), I2 (no duplicate row at the bureau), I3 (no fork and no broken link among the stored
reports), I5 (every acked row's receipt verifies with the bureau key and names the row's
hash). At the end of each example the network is healed and the outbox drained within a
bound (I4), then the full I1-I5 and I7 of tests/delivery (counts equal, chain from genesis).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from joserfc.jwk import OKPKey

from agent.outbox import ACKED, Outbox
from agent.protocol.envelope import Kind, canonical_bytes, sign_compact, verify_compact
from agent.publisher import Publisher, PublisherSettings
from bureau.receipts import receipt_payload
from bureau.receiver import Receiver
from tests.delivery.test_delivery_mqtt import check_invariants
from tests.fuzz.loopback import LoopbackBroker
from tests.fuzz.profiles import MACHINE
from tests.support.bureau_receiver import Bureau, start_bureau
from tests.support.reports import BUREAU, FACTORY, day, make_report

# Files on tmpfs when there is one: a crash-restart here is a process restart (the files
# are closed and reopened), not a power loss, so fsync buys nothing and costs most of the time.
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None
MAX_REPORTS = 12  # three windows of 4
DRAIN_ROUNDS = 40  # network rounds allowed to drain at the end (I4's bound, in rounds)

AGENT_KEY = OKPKey.generate_key("Ed25519")
ATTACKER_KEY = OKPKey.generate_key("Ed25519")
STATS: Counter[str] = Counter()  # publisher metrics summed over examples (for the report)
_BUILDS: dict[tuple[int, str], dict[str, Any]] = {}


def _build(seq: int, prev: str) -> dict[str, Any]:
    """The report of day `seq`: built once per (seq, prev), as building is deterministic."""
    if (seq, prev) not in _BUILDS:
        _BUILDS[(seq, prev)] = make_report(AGENT_KEY, day(seq), seq, prev, devices=1)
    return _BUILDS[(seq, prev)]


def _sign(payload: bytes) -> str:
    return sign_compact(payload, AGENT_KEY, Kind.REPORT)


class _Template:
    """One migrated bureau database with the agent enrolled, copied for each example (the
    migrations take 0.3 s, the copy a millisecond)."""

    folder: Path | None = None
    key: OKPKey | None = None

    @classmethod
    def copy_to(cls, target: Path) -> OKPKey:
        if cls.folder is None:
            cls.folder = Path(tempfile.mkdtemp(prefix="tieragent-z2-template-", dir=SCRATCH))
            atexit.register(shutil.rmtree, cls.folder, True)
            made = start_bureau(cls.folder / "bureau.db", None, {FACTORY: AGENT_KEY})
            made.receiver.stop()
            cls.key = made.key
        assert cls.key is not None
        assert not (cls.folder / "bureau.db-wal").exists()  # closed: all in the main file
        shutil.copyfile(cls.folder / "bureau.db", target)
        return cls.key


class OutboxReceiptMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="tieragent-z2-", dir=SCRATCH))
        self.broker = LoopbackBroker(FACTORY)
        self.patch = mock.patch("agent.publisher.make_client", self.broker.make_client)
        self.patch.start()
        key = _Template.copy_to(self.folder / "bureau.db")
        self.bureau = Bureau(self._open_receiver(key), key)
        self.outbox = Outbox(self.folder / "outbox.db")
        self.publisher = self._open_publisher()
        self.created = 0

    # ---- wiring ------------------------------------------------------------------------

    def _open_receiver(self, key: OKPKey) -> Receiver:
        made = start_bureau(self.folder / "bureau.db", None, {}, key=key)
        return made.receiver

    def _open_publisher(self) -> Publisher:
        settings = PublisherSettings(
            broker_url="mqtt://127.0.0.1:1",  # never dialled: the loopback stands in
            factory_id=FACTORY,
            bureau_keys=(self.bureau.public,),
            reconnect_min_s=0.01,
            reconnect_max_s=0.02,
            # Resend whenever a row has no PUBACK pending: the machine, not a timer, decides
            # what the network loses, so every loss is followed by a resend chance.
            receipt_timeout_s=0.0,
            resend_cap_s=0.0,
            window=4,
        )
        publisher = Publisher(settings, self.outbox)
        publisher.start()
        return publisher

    def _connected(self) -> bool:
        return self.broker.client is not None and self.broker.client.connected

    def _states(self) -> list[tuple[str, str]]:
        return [(item.report_id, item.state) for item in self.outbox.items(FACTORY)]

    def _bureau_handles(self, topic: str, message: bytes) -> bytes | None:
        reply = self.bureau.receiver.handle(topic, message)
        return None if reply is None else reply[1].encode("ascii")

    # ---- rules -------------------------------------------------------------------------

    def _tally(self, what: str) -> None:
        STATS[f"rule_{what}"] += 1

    @initialize()
    def connect(self) -> None:
        self.broker.link_up()

    @precondition(lambda self: self.created < MAX_REPORTS)
    @rule()
    def create(self) -> None:
        """The agent commits the next report."""
        self._tally("create")
        period = day(self.created + 1)
        self.outbox.commit_report(FACTORY, period.slot(0), _build, _sign)
        self.created += 1
        self.publisher.step(0)

    @rule()
    def send(self) -> None:
        """The publisher's driver runs once: handles what arrived, sends what is due. (It runs
        after every other rule too, as its thread steps whenever something happens.)"""
        self._tally("send")
        self.publisher.step(0)

    @precondition(lambda self: bool(self.broker.to_bureau))
    @rule(index=st.integers(0, 63), answered_at_once=st.booleans())
    def deliver_report(self, index: int, answered_at_once: bool) -> None:
        """The broker delivers one queued report (any order) to the bureau, which stores it and
        publishes its receipt; answered_at_once: the receipt reaches the agent right away,
        else it waits in the broker (`deliver_receipt`)."""
        self._tally("deliver_report")
        message = self.broker.take_report(index)
        if message is not None:
            receipt = self._bureau_handles(*message)
            if receipt is not None:
                self.broker.queue_receipt(receipt)
                if answered_at_once and self._connected():
                    self.broker.deliver_receipt(self.broker.to_agent.pop())
        self.publisher.step(0)

    @precondition(lambda self: bool(self.broker.to_bureau))
    @rule(index=st.integers(0, 63))
    def drop_report(self, index: int) -> None:
        """The broker drops a queued report after acknowledging it (full queue, T8)."""
        self._tally("drop_report")
        self.broker.take_report(index)
        self.publisher.step(0)

    @precondition(lambda self: bool(self.broker.pubacks))
    @rule(index=st.integers(0, 63))
    def deliver_puback(self, index: int) -> None:
        """A PUBACK arrives. It acknowledges no row (a PUBACK is not a receipt)."""
        self._tally("puback")
        self._puback(index, 0)

    @precondition(lambda self: bool(self.broker.pubacks))
    @rule(index=st.integers(0, 63))
    def refused_puback(self, index: int) -> None:
        """A PUBACK with reason 0x87 (a broker ACL, T11): the row is postponed, never acked."""
        self._tally("refused_puback")
        self._puback(index, 0x87)

    def _puback(self, index: int, reason: int) -> None:
        self.publisher.step(0)  # what arrived before the PUBACK is handled first
        before = self._states()
        self.broker.puback(index, reason)
        self.publisher.step(0)
        assert self._states() == before, "a PUBACK changed an outbox row"

    @precondition(lambda self: bool(self.broker.to_agent) and self._connected())
    @rule(index=st.integers(0, 63))
    def deliver_receipt(self, index: int) -> None:
        """A receipt the bureau published reaches the agent."""
        self._tally("receipt")
        self.broker.deliver_receipt(self.broker.to_agent.pop(index % len(self.broker.to_agent)))
        self.publisher.step(0)

    @precondition(lambda self: bool(self.broker.receipts_seen) and self._connected())
    @rule(index=st.integers(0, 63))
    def duplicate_receipt(self, index: int) -> None:
        """A receipt that already arrived arrives again (at-least-once delivery)."""
        self._tally("duplicate_receipt")
        seen = self.broker.receipts_seen
        self.broker.deliver_receipt(seen[index % len(seen)])
        self.publisher.step(0)

    @precondition(lambda self: self.created > 0 and self._connected())
    @rule(index=st.integers(0, 63), tamper=st.booleans(), position=st.integers(0, 10_000))
    def forged_receipt(self, index: int, tamper: bool, position: int) -> None:
        """A receipt the bureau never signed: signed by another key, or a real one with one bit
        flipped. It must acknowledge nothing and be counted as forged."""
        self._tally("forged_receipt")
        items = self.outbox.items(FACTORY)
        item = items[index % len(items)]
        forged_payload = receipt_payload(
            bureau_id=BUREAU, factory_id=FACTORY, report_id=item.report_id,
            report_sha256=item.payload_sha256, seq=item.seq, status="accepted",
            state="accepted", received_at=time.time(),
        )
        token = sign_compact(canonical_bytes(forged_payload), ATTACKER_KEY, Kind.RECEIPT).encode()
        if tamper and self.broker.receipts_seen:
            real = bytearray(self.broker.receipts_seen[index % len(self.broker.receipts_seen)])
            real[position % len(real)] ^= 1 << (position % 7)
            token = bytes(real)
        self.publisher.step(0)  # events before the forgery are not counted with it
        before, forged = self._states(), self.publisher.metrics["receipts_forged_total"]
        self.broker.deliver_receipt(token)
        self.publisher.step(0)
        assert self._states() == before
        assert self.publisher.metrics["receipts_forged_total"] == forged + 1

    @precondition(lambda self: self._connected())
    @rule(session_kept=st.booleans())
    def link_down(self, session_kept: bool) -> None:
        """The connection breaks; session_kept: the broker keeps the receipts queued for the
        agent and delivers them after the reconnect (else they are lost)."""
        self._tally("link_down")
        kept = list(self.broker.to_agent) if session_kept else []
        self.broker.link_down()
        self.broker.to_agent.extend(kept)
        self.publisher.step(0)

    @precondition(lambda self: not self._connected())
    @rule()
    def link_up(self) -> None:
        self._tally("link_up")
        self.broker.link_up()
        self.publisher.step(0)

    @rule(session_kept=st.booleans())
    def restart_agent_after_crash(self, session_kept: bool) -> None:
        """The agent dies (nothing in its memory survives) and starts again: the outbox is
        reopened from its file and a new publisher connects. session_kept: the broker kept
        the agent's session, so receipts queued for it still arrive (MQTT 5 session expiry);
        otherwise they are lost (no reliance on it, T2)."""
        self._tally("agent_crash_restart")
        kept = list(self.broker.to_agent) if session_kept else []
        self.broker.forget_client()
        self.outbox.close()
        self.outbox = Outbox(self.folder / "outbox.db")
        self.publisher = self._open_publisher()
        self.broker.link_up()
        self.broker.to_agent.extend(kept)
        self.publisher.step(0)

    @rule(after_commit=st.booleans())
    def restart_bureau_after_crash(self, after_commit: bool) -> None:
        """The bureau receiver dies and restarts from its database; after_commit: it had just
        stored the next queued report, and its receipt was never published (T7)."""
        self._tally("bureau_crash")
        if after_commit:
            message = self.broker.take_report(0)
            if message is not None:
                self._bureau_handles(*message)
        self.bureau.receiver.stop()
        self.bureau = Bureau(self._open_receiver(self.bureau.key), self.bureau.key)
        self.publisher.step(0)

    # ---- invariants --------------------------------------------------------------------

    @invariant()
    def acked_reports_are_stored(self) -> None:  # I1 while messages are still in transit
        STATS["invariant_checks"] += 1
        for item in self.outbox.items(FACTORY):
            if item.state == ACKED:
                stored = self.bureau.receiver.store.get(item.report_id)
                assert stored is not None, f"seq {item.seq} acked but not at the bureau"
                assert stored.jws == item.jws

    @invariant()
    def no_duplicates_no_fork(self) -> None:  # I2, I3 among what is stored so far
        stored = self.bureau.receiver.store.reports(FACTORY)
        assert len({r.report_id for r in stored}) == len(stored)
        assert len({r.seq for r in stored}) == len(stored)
        by_seq = {r.seq: r for r in stored}
        for row in stored:
            previous = by_seq.get(row.seq - 1)
            if previous is not None:
                assert row.prev_sha256 == previous.payload_sha256, f"seq {row.seq} forks"
            if row.state == "accepted" and row.seq > 1:
                assert previous is not None, f"seq {row.seq} accepted without seq {row.seq - 1}"

    @invariant()
    def acked_rows_hold_their_receipt(self) -> None:  # I5
        for item in self.outbox.items(FACTORY):
            if item.state == ACKED:
                assert item.receipt_jws is not None
                receipt = verify_compact(item.receipt_jws, Kind.RECEIPT, self.bureau.public)
                assert receipt.payload["report_id"] == item.report_id
                assert receipt.payload["report_sha256"] == item.payload_sha256
                assert receipt.payload["status"] in ("accepted", "duplicate")

    # ---- end of an example -------------------------------------------------------------

    def _drain(self) -> None:
        """Heal the network and let every message through, round by round, up to a bound."""
        for _ in range(DRAIN_ROUNDS):
            self.broker.link_up()
            self.publisher.step(0)
            while self.broker.to_bureau:
                self.deliver_report(0, answered_at_once=False)
            while self.broker.pubacks:
                self.broker.puback(0)
            while self.broker.to_agent:
                self.broker.deliver_receipt(self.broker.to_agent.pop(0))
            self.publisher.step(0)
            if self.outbox.unacked() == 0 and not self.broker.to_bureau:
                return

    def teardown(self) -> None:
        try:
            STATS.update(self.publisher.metrics)
            STATS.update(f"bureau_{name}" for name, n in self.bureau.receiver.metrics.items()
                         for _ in range(n))
            STATS["examples"] += 1
            STATS["reports_created"] += self.created
            STATS["acked_before_drain"] += self.outbox.counts()[ACKED]
            self._drain()
            assert self.outbox.unacked() == 0, f"not drained in {DRAIN_ROUNDS} rounds"  # I4
            check_invariants(self.outbox, self.bureau)  # I1-I5, I7 on the healed system
        finally:
            self.patch.stop()
            self.outbox.close()
            self.bureau.receiver.stop()
            shutil.rmtree(self.folder, ignore_errors=True)


OutboxReceiptMachine.TestCase.settings = MACHINE
test_Z2_outbox_receipt_state_machine = OutboxReceiptMachine.TestCase


