"""The shared invariant checker (tests/support/invariants.py) can fail: each of I1-I8 is
broken once on a bureau fed directly (no broker) and must be caught."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from joserfc.jwk import OKPKey

from agent.outbox import Outbox
from agent.protocol.envelope import Kind, verify_compact
from agent.protocol.mqtt import report_topic
from tests.support.bureau_receiver import Bureau, start_bureau
from tests.support.invariants import check_invariants, synthetic_leaves
from tests.support.reports import FACTORY, commit_days


def _delivered(tmp_path: Path, days: range = range(1, 4)) -> tuple[Outbox, Bureau, OKPKey]:
    """Reports committed, handed to the bureau and their receipts applied, as a run would."""
    key = OKPKey.generate_key("Ed25519")
    bureau = start_bureau(tmp_path / "bureau.db", None, {FACTORY: key})
    outbox = Outbox(tmp_path / "outbox.db")
    for item in commit_days(outbox, key, days):
        _deliver(outbox, bureau, item.jws)
    return outbox, bureau, key


def _deliver(outbox: Outbox, bureau: Bureau, jws: str) -> None:
    reply = bureau.receiver.handle(report_topic(FACTORY), jws.encode())
    assert reply is not None
    receipt = verify_compact(reply[1], Kind.RECEIPT, bureau.public).payload
    outbox.apply_receipt(receipt["report_id"], receipt["report_sha256"], receipt["status"],
                         reply[1], receipt["reason"])


def test_a_clean_run_passes(tmp_path: Path) -> None:
    outbox, bureau, _ = _delivered(tmp_path)
    check_invariants(outbox, bureau, databases=[tmp_path / "outbox.db"])


def _drop_last_bureau_row(outbox: Outbox, bureau: Bureau, tmp_path: Path) -> None:
    with bureau.receiver.store.transaction():
        bureau.receiver.store.db.execute(
            "DELETE FROM reports WHERE seq = 3", {}
        )


def _commit_unsent(outbox: Outbox, bureau: Bureau, tmp_path: Path) -> None:
    key = OKPKey.generate_key("Ed25519")
    commit_days(outbox, key, range(4, 5))


def _swap_a_receipt(outbox: Outbox, bureau: Bureau, tmp_path: Path) -> None:
    other = outbox.items(FACTORY)[0].receipt_jws
    outbox.connection.execute("UPDATE outbox SET receipt_jws = ? WHERE seq = 2", (other,))
    outbox.connection.commit()


def _corrupt_stored_hash(outbox: Outbox, bureau: Bureau, tmp_path: Path) -> None:
    with bureau.receiver.store.transaction():
        bureau.receiver.store.db.execute(
            "UPDATE reports SET prev_sha256 = :bad WHERE seq = 2", {"bad": "0" * 64}
        )


def _garbage_database(outbox: Outbox, bureau: Bureau, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
        db.executemany("INSERT INTO t VALUES (?)", [(b"x" * 3000,) for _ in range(50)])
    raw = bytearray(other.read_bytes())
    raw[4096 + 100 : 4096 + 400] = b"\xff" * 300  # a b-tree page overwritten
    other.write_bytes(bytes(raw))


Breakage = Callable[[Outbox, Bureau, Path], None]


@pytest.mark.parametrize(
    ("breakage", "invariant"),
    [
        (_drop_last_bureau_row, "I1"),
        (_corrupt_stored_hash, "I3"),
        (_commit_unsent, "I1"),
        (_swap_a_receipt, "I5"),
        (_garbage_database, "I7"),
    ],
)
def test_each_broken_invariant_is_caught(
    tmp_path: Path, breakage: Breakage, invariant: str
) -> None:
    outbox, bureau, _ = _delivered(tmp_path)
    breakage(outbox, bureau, tmp_path)
    with pytest.raises(AssertionError, match=invariant):
        check_invariants(outbox, bureau, databases=[tmp_path / "other.db"]
                         if (tmp_path / "other.db").exists() else [])


def test_an_undrained_outbox_is_caught(tmp_path: Path) -> None:
    outbox, bureau, key = _delivered(tmp_path)
    [extra] = commit_days(outbox, key, range(4, 5))
    bureau.receiver.handle(report_topic(FACTORY), extra.jws.encode())  # stored, receipt lost
    with pytest.raises(AssertionError, match="I4"):
        check_invariants(outbox, bureau)


def test_a_wrong_merkle_root_is_caught(tmp_path: Path) -> None:
    outbox, bureau, _ = _delivered(tmp_path)
    with pytest.raises(AssertionError, match="I6"):
        check_invariants(outbox, bureau, raw_leaves=lambda r: list(synthetic_leaves(r))[::-1])


def test_a_logged_traceback_is_caught(tmp_path: Path) -> None:
    outbox, bureau, _ = _delivered(tmp_path)
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None,
                                   __import__("sys").exc_info())
    with pytest.raises(AssertionError, match="I8"):
        check_invariants(outbox, bureau, logs=[record])
    with pytest.raises(AssertionError, match="I8"):
        check_invariants(outbox, bureau, outputs=[b"Traceback (most recent call last):\n"])
