"""Receiver CPU per report without MQTT (issue 18 item 6): `Receiver.handle` in this process
into a durable PostgreSQL of its own (tests/support/postgres.py) or a new SQLite file, 50
factories x 24 days of the bureau bench's signed daily reports; CPU per report of each chunk
of 200 after 200 of warm-up. Run from the tree to measure, so that its code is first on the
path (an older checkout: cd OLD && python PATH/TO/THIS):

    .venv/bin/python bench/bureau_handle.py pg|sqlite

Paired runs (before and after started together) are what compare on a shared machine.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path[0:0] = [".", "bench"]  # the tree in the working directory, then its bench/

from joserfc.jwk import OKPKey  # noqa: E402

from bench.bureau import factory_id, factory_rows, templates  # noqa: E402
from bench.bureau_ingest import signed_messages  # noqa: E402
from bureau.receiver import Receiver, ReceiverSettings  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402

CHUNK = 200


def run(target: Path | str, messages: list[tuple[str, bytes]],
        keys: dict[str, dict[str, str]]) -> list[float]:
    receiver = Receiver(
        ReceiverSettings(db=target, broker_url="mqtt://127.0.0.1:1", bureau_id="bureau-bench"),
        OKPKey.generate_key("Ed25519"),
    )
    with receiver.store.transaction():
        for fid, jwk in keys.items():
            receiver.registry.enroll(fid, jwk, at=0.0)
    for topic, message in messages[:CHUNK]:
        receiver.handle(topic, message)
    per_report = []
    for start in range(CHUNK, len(messages), CHUNK):
        cpu = time.process_time()
        for topic, message in messages[start : start + CHUNK]:
            assert receiver.handle(topic, message) is not None
        per_report.append((time.process_time() - cpu) / CHUNK * 1000)
    accepted = receiver.metrics["reports_accepted_total"]
    receiver.store.close()
    assert accepted == len(messages), (accepted, len(messages))
    return per_report


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "pg"
    messages, keys = signed_messages(50, 24, 2, templates, factory_rows, factory_id)
    if kind == "pg":
        with PostgresServer(durable=True) as server:
            per_report = run(server.create_database("handle"), messages, keys)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            per_report = run(Path(tmp) / "bureau.db", messages, keys)
    print(f"{kind}: CPU ms per report, chunks of {CHUNK}: "
          + " ".join(f"{ms:.2f}" for ms in per_report)
          + f"; mean {sum(per_report) / len(per_report):.2f}, min {min(per_report):.2f}",
          flush=True)


if __name__ == "__main__":
    main()
