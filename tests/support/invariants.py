"""The global invariants I1-I8 of docs/reliability.md §c, checked after every chaos run.

`check_invariants(outbox, bureau, ...)` asserts all eight at once (AssertionError names the
one that broke):

- I1 the bureau stores every report the agent committed, and nothing else;
- I2 no duplicate rows at the bureau;
- I3 the bureau's chain verifies from genesis without a fork or gap (agent.protocol.chain's
  `walk_chain`, the walk the bureau's own evaluation and evidence check use), and every
  stored row's JWS verifies with its enrolled key and hashes to the stored payload_sha256
  (no truncated or unverifiable row);
- I4 the outbox drained: nothing pending or inflight;
- I5 every acked row has a receipt that verifies with the bureau key and names the row's
  report_id and payload SHA-256;
- I6 each stored report's raw-data Merkle root recomputes from its raw segments;
- I7 `PRAGMA integrity_check` = ok on the outbox, the bureau store and any other database;
- I8 no unhandled traceback in the captured log records or process output.

I6 in delivery tests: the outbox keeps signed reports, not raw samples, so there are no
stored segments to read; `synthetic_leaves` regenerates the segments the report was built
from (tests.support.reports, seeded) and recomputes the root. A test whose reports come from
somewhere else passes its own `raw_leaves`, or None to skip I6 (and says why).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from agent.outbox import ACKED, Outbox
from agent.protocol.chain import ChainEntry, walk_chain
from agent.protocol.envelope import EnvelopeError, Kind, sha256_hex, verify_compact
from agent.protocol.merkle import ordered_digests, root
from agent.protocol.period import Period
from bureau.store import ACCEPTED
from tests.support.bureau_receiver import Bureau
from tests.support.reports import FACTORY, segments

RawLeaves = Callable[[Mapping[str, Any]], Sequence[bytes]]  # signed report -> leaf hashes


def synthetic_leaves(report: Mapping[str, Any]) -> Sequence[bytes]:
    """The leaves of the segments `tests.support.reports.make_report` built the report from
    (one device per inventory row, the same seed)."""
    period = report["period"]
    devices = len(report["inventory"])
    built = segments(Period(period["kind"], period["key"], period["time_zone"]), devices)
    return [digest for _, digest in ordered_digests(built)]


def check_invariants(
    outbox: Outbox,
    bureau: Bureau,
    *,
    factory_id: str = FACTORY,
    raw_leaves: RawLeaves | None = synthetic_leaves,
    logs: Iterable[logging.LogRecord] = (),
    outputs: Iterable[str | bytes] = (),
    databases: Iterable[Path] = (),
) -> None:
    """Assert I1-I8 (see the module docstring) for one factory after a run.

    `logs`: the captured records (caplog.records); `outputs`: stderr/stdout of child
    processes; `databases`: SQLite files besides the outbox and the bureau store.
    """
    store = bureau.receiver.store
    items = outbox.items(factory_id)
    stored = store.reports(factory_id)
    stored_ids = [r.report_id for r in stored]
    assert len(stored) == len(items), f"I1: bureau {len(stored)} rows, agent {len(items)}"
    assert len(set(stored_ids)) == len(stored_ids), "I2: duplicate report_id rows"
    assert len({r.seq for r in stored}) == len(stored), "I2: two rows with one seq"
    assert stored_ids == [i.report_id for i in items], "I1: different reports (seq order)"
    for row, item in zip(stored, items, strict=True):
        assert row.jws == item.jws, f"I1: seq {row.seq} stored bytes differ from the agent's"
    _check_chain(bureau, factory_id)
    assert outbox.unacked() == 0, f"I4: outbox not drained {outbox.counts()}"
    for item in items:
        assert item.state == ACKED and item.receipt_jws is not None, f"I5: {item.seq} not acked"
        try:
            receipt = verify_compact(item.receipt_jws, Kind.RECEIPT, bureau.public).payload
        except EnvelopeError as error:
            raise AssertionError(f"I5: receipt of seq {item.seq}: {error}") from None
        named = (receipt["report_id"], receipt["report_sha256"])
        assert named == (item.report_id, item.payload_sha256), f"I5: receipt of {item.seq}"
    if raw_leaves is not None:
        for row in stored:
            raw_data = row.payload()["raw_data"]
            leaves = raw_leaves(row.payload())
            assert len(leaves) == raw_data["segment_count"], f"I6: seq {row.seq} segment count"
            assert root(leaves).hex() == raw_data["merkle_root"], f"I6: seq {row.seq} root"
    assert outbox.integrity_ok(), "I7: outbox integrity_check"
    assert store.integrity_ok(), "I7: bureau store integrity_check"
    for path in databases:
        assert sqlite_integrity(path) == "ok", f"I7: {path}"
    check_no_tracebacks(logs, outputs)


def _check_chain(bureau: Bureau, factory_id: str) -> None:
    """I3: seq 1 from genesis, each next seq linked to the previous payload, no fork or gap,
    every row accepted and verifiable with its enrolled key."""
    store, registry = bureau.receiver.store, bureau.receiver.registry
    stored = store.reports(factory_id)
    links = walk_chain(
        [ChainEntry(r.seq, r.payload_sha256, r.prev_sha256) for r in stored], factory_id
    )
    for link in links:
        if link.previous_seq is None:
            assert link.seq == 1 and link.from_genesis, f"I3: chain starts at seq {link.seq}"
        else:
            assert link.follows and link.linked, f"I3: seq {link.seq} breaks the chain"
    for row in stored:
        assert row.state == ACCEPTED, f"I3: seq {row.seq} is {row.state}"
        enrolled = registry.get(row.kid)
        assert enrolled is not None, f"I3: seq {row.seq} signed by an unknown key"
        try:
            verified = verify_compact(row.jws, Kind.REPORT, enrolled.jwk)
        except EnvelopeError as error:
            raise AssertionError(f"I3: stored seq {row.seq} does not verify: {error}") from None
        assert sha256_hex(verified.payload_bytes) == row.payload_sha256, f"I3: seq {row.seq}"
        payload = verified.payload
        assert (payload["seq"], payload["prev_sha256"]) == (row.seq, row.prev_sha256), (
            f"I3: seq {row.seq} columns differ from the signed payload"
        )


def sqlite_integrity(path: Path) -> str:
    """`PRAGMA integrity_check` of a SQLite file, opened read-only ("ok", or what is wrong)."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    except sqlite3.DatabaseError as error:  # too broken to check: that is the answer
        return str(error)


def check_no_tracebacks(
    logs: Iterable[logging.LogRecord] = (), outputs: Iterable[str | bytes] = ()
) -> None:
    """I8: no log record carries an exception, no process printed a traceback."""
    failures = [r.getMessage() for r in logs if r.exc_info]
    assert failures == [], f"I8: logged exceptions {failures}"
    for output in outputs:
        text = output.decode(errors="replace") if isinstance(output, bytes) else output
        assert "Traceback (most recent call last)" not in text, f"I8: {text[-2000:]}"
