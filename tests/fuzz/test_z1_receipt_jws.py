"""Z1: fuzzing the agent's receipt intake (docs/reliability.md §c): the real `Publisher`
handling receipt messages for a real outbox, through the in-process network substitute of
tests/fuzz/loopback.py (no broker: the message goes to the publisher's paho callback as a
broker's would). Declared errors: none may escape `Publisher.step` (a bad receipt is counted
as forged, or raises a transparency-log alarm, and acknowledges nothing).

Inputs start from the receipt corpus (tests/fuzz/corpus/receipt/: accepted, pending,
duplicate and rejected receipts of a real bureau with their transparency-log members),
re-addressed to this outbox's rows and signed again with the pinned bureau key after
structured mutation (so the log monitor parses hostile `log` members), real tokens with
broken bytes, and random bytes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st
from joserfc.jwk import OKPKey

from agent.outbox import ACKED, Outbox, OutboxItem
from agent.protocol.envelope import Kind, peek_compact, public_jwk, sign_compact, verify_compact
from agent.protocol.mqtt import report_topic
from agent.publisher import Publisher, PublisherSettings
from tests.fuzz.limits import traced, within_memory
from tests.fuzz.loopback import LoopbackBroker
from tests.fuzz.mutations import (
    CORPUS,
    corpus_bytes,
    duplicate_member,
    mutated_bytes,
    mutated_member,
    mutated_value,
)
from tests.fuzz.profiles import PROFILE
from tests.fuzz.test_z2_outbox_machine import SCRATCH
from tests.support.bureau_receiver import start_bureau
from tests.support.chain_reports import commit_mixed
from tests.support.reports import FACTORY

BUREAU_KEY = OKPKey.generate_key("Ed25519")  # pinned by the publisher
TOKENS = corpus_bytes("receipt", ".jws")
PARSED = [json.loads(p) for p in corpus_bytes("receipt", ".json")]


def _json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8", errors="surrogatepass")


def _signed(payload: bytes) -> bytes:
    return sign_compact(payload, BUREAU_KEY, Kind.RECEIPT).encode()


class Agent:
    """An outbox holding a mixed chain (kept as a template: every example starts from a copy,
    since one alarm of the log monitor ends all acknowledgements of that outbox) and the
    receipts a real bureau holding BUREAU_KEY gave for its reports."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        template = Outbox(folder / "template" / "outbox.db")
        # The corpus receipts name the same report ids (they are derived from the factory
        # and period); their hashes are this outbox's after `_addressed`.
        agent_key = OKPKey.generate_key("Ed25519")
        items = commit_mixed(template, agent_key, with_segments=True)
        template.close()
        self.rows = {item.report_id: item for item in items}
        self.live = self._answers(folder, agent_key, items)
        self.broker = LoopbackBroker(FACTORY)
        self.messages = _messages(self)
        self.copies = 0

    @staticmethod
    def _answers(folder: Path, agent_key: OKPKey, items: list[OutboxItem]) -> list[bytes]:
        """Receipts of a real bureau holding BUREAU_KEY for this outbox's reports: accepted,
        pending (seq 5 held back), duplicate and rejected, with valid log members, so that
        mutations of them get past the signature and into the log monitor."""
        bureau = start_bureau(folder / "bureau.db", None, {FACTORY: agent_key}, key=BUREAU_KEY)
        topic, answers = report_topic(FACTORY), []
        for item in [*items[:4], *items[5:], items[0]]:
            answers.append(bureau.receiver.handle(topic, item.jws.encode()))
        answers.append(bureau.receiver.handle(topic, b"not a report"))
        bureau.receiver.stop()
        return [answer[1].encode() for answer in answers if answer is not None]

    @contextmanager
    def started(self) -> Iterator[tuple[Outbox, Publisher]]:
        """A copy of the template outbox, drained by a connected publisher."""
        self.copies += 1
        copy = self.folder / f"copy-{self.copies}"
        shutil.copytree(self.folder / "template", copy)
        outbox = Outbox(copy / "outbox.db")
        with mock.patch("agent.publisher.make_client", self.broker.make_client):
            publisher = Publisher(
                PublisherSettings(broker_url="mqtt://127.0.0.1:1", factory_id=FACTORY,
                                  bureau_keys=(public_jwk(BUREAU_KEY),)),
                outbox,
            )
            publisher.start()
        self.broker.link_up()
        publisher.step(0)
        try:
            yield outbox, publisher
        finally:
            outbox.close()
            shutil.rmtree(copy)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    yield Agent(Path(tempfile.mkdtemp(prefix="tieragent-z1-receipt-", dir=SCRATCH)))


def _addressed(receipt: dict[str, Any], agent_rows: dict[str, Any]) -> dict[str, Any]:
    """The receipt naming the local row's hash, so that it can reach `apply_receipt`."""
    row = agent_rows.get(receipt.get("report_id"))  # type: ignore[arg-type]
    return {**receipt, "report_sha256": row.payload_sha256} if row else receipt


def _messages(agent: Agent) -> st.SearchStrategy[bytes]:
    addressed = [_addressed(r, agent.rows) for r in PARSED]
    live = [json.loads(peek_compact(token, Kind.RECEIPT)[1]) for token in agent.live]
    return st.one_of(
        st.sampled_from(live).flatmap(mutated_member).map(_json).map(_signed),
        st.sampled_from(live).flatmap(mutated_value).map(_json).map(_signed),
        st.sampled_from(agent.live).flatmap(mutated_bytes),
        st.sampled_from(addressed).flatmap(mutated_value).map(_json).map(_signed),
        st.sampled_from(addressed).map(_json).flatmap(duplicate_member).map(_signed),
        st.sampled_from(addressed).map(_json).flatmap(mutated_bytes).map(_signed),
        st.sampled_from(addressed).map(_json).map(_signed).flatmap(mutated_bytes),
        st.sampled_from(TOKENS).flatmap(mutated_bytes),
        st.binary(max_size=2048),
    )


@PROFILE
@given(data=st.data())
def test_Z1_receipt_jws_only_declared_errors(agent: Agent, data: st.DataObject) -> None:
    """If a receipt message is broken in any of the ways above, then the publisher handles it
    without raising, within 1 s and 256 MB, and a row is acknowledged only by a receipt that
    verifies with the bureau key and names the row's hash."""
    message = data.draw(agent.messages)
    with agent.started() as (outbox, publisher), traced():
        within_memory(lambda: (agent.broker.deliver_receipt(message), publisher.step(0)))
        for item in outbox.items(FACTORY):
            if item.state == ACKED:
                assert item.receipt_jws is not None
                receipt = verify_compact(item.receipt_jws, Kind.RECEIPT, public_jwk(BUREAU_KEY))
                assert receipt.payload["report_sha256"] == item.payload_sha256


def test_Z1_receipt_with_a_list_as_status_is_forged_not_a_crash(agent: Agent) -> None:
    """If a receipt signed with the bureau key holds a list as its status (found by fuzzing:
    the membership test raised TypeError out of `Publisher.step`), then it is counted as
    forged and acknowledges nothing."""
    seed = (CORPUS / "receipt" / "regression-status-list.json").read_bytes()
    with agent.started() as (outbox, publisher):
        agent.broker.deliver_receipt(_signed(seed))
        publisher.step(0)
        assert publisher.metrics["receipts_forged_total"] == 1
        assert outbox.counts()["acked"] == 0


def test_Z1_receipt_with_an_object_as_reason_is_forged_not_a_crash(agent: Agent) -> None:
    """If a receipt signed with the bureau key, with a valid log, holds an object as its
    reason (found by fuzzing: binding it to the outbox UPDATE raised sqlite3's
    ProgrammingError out of `Publisher.step`), then it is counted as forged and acknowledges
    nothing."""
    seed = json.loads((CORPUS / "receipt" / "regression-reason-object.json").read_bytes())
    accepted = json.loads(peek_compact(agent.live[0], Kind.RECEIPT)[1])
    with agent.started() as (outbox, publisher):
        agent.broker.deliver_receipt(_signed(_json({**accepted, "reason": seed["reason"]})))
        publisher.step(0)
        assert publisher.metrics["receipts_forged_total"] == 1
        assert outbox.counts()["acked"] == 0
        agent.broker.deliver_receipt(agent.live[0])  # the genuine receipt still acks its row
        publisher.step(0)
        assert outbox.counts()["acked"] == 1
