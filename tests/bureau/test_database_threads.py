"""One bureau store used from two threads (the receiver's thread and a reader, such as a test
or a status page holding the same store): the reader waits for the transaction in progress to
end; it neither fails ("cannot start a transaction within a transaction") nor joins it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bureau.store import SqlReportStore


class _RolledBack(Exception):
    pass


def test_a_read_from_another_thread_waits_for_the_transaction_to_end(
    bureau_database: Path | str,
) -> None:
    """If one thread writes a row in a transaction that it then rolls back, and another thread
    reads meanwhile, then the reader gets no error and never sees the row (it would, inside
    the writer's transaction)."""
    store = SqlReportStore(bureau_database)
    inside = threading.Event()
    outcome: list[BaseException] = []

    def writer() -> None:
        try:
            with store.transaction():
                store.alert("F1", "test", "never committed")
                inside.set()
                time.sleep(0.5)  # the reader below runs while this transaction is open
                raise _RolledBack()
        except BaseException as error:
            outcome.append(error)
            inside.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert inside.wait(10)
        seen = store.alerts()
    finally:
        thread.join(10)
        store.close()
    assert seen == []
    assert len(outcome) == 1 and isinstance(outcome[0], _RolledBack), outcome


def test_the_same_thread_still_joins_its_own_transaction(bureau_database: Path | str) -> None:
    store = SqlReportStore(bureau_database)
    try:
        with pytest.raises(_RolledBack), store.transaction():
            store.alert("F1", "test", "inner")
            with store.transaction():  # joins: rolled back with the outer one
                store.alert("F1", "test", "joined")
            assert len(store.alerts()) == 2
            raise _RolledBack()
        assert store.alerts() == []
    finally:
        store.close()
