"""Transparency-log benchmark: what the log adds to each receipt at the bureau and at the agent.

    .venv/bin/python bench/translog.py [--leaves 10000] [--receipts 200]

Builds a bureau database in a temp dir with `--leaves` leaves (100 factories, round robin),
then times, averaged over `--receipts`:

- open: loading the cached tree from the table (once per receiver process);
- store receipt: append a leaf, sign the new head, and build the receipt's `log` member
  (head, inclusion proof, link from the factory's previous head), inside one transaction;
- duplicate receipt: the `log` member of an existing report (a resend);
- agent check: verify the head's signature and the inclusion proof, and the link against the
  head held (agent.protocol.translog; the monitor's SQLite work not included);
- uncached: the same three tree computations (root, inclusion, consistency) from the plain
  list of leaves, as a proof recomputed from all leaves would cost without the cache.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import tempfile
import time
from pathlib import Path

import _paths  # noqa: F401  (the import path: before anything of the project)
from joserfc.jwk import OKPKey

from agent.protocol.envelope import public_jwk, thumbprint
from agent.protocol.merkle import consistency_proof, inclusion_proof, root
from agent.protocol.translog import check_receipt_log, consistent, report_leaf
from bureau.store import SqliteReportStore
from bureau.translog import TransparencyLog

FACTORIES = 100


def _sha(n: int) -> str:
    return hashlib.sha256(f"report {n}".encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leaves", type=int, default=10_000)
    parser.add_argument("--receipts", type=int, default=200)
    args = parser.parse_args()
    key = OKPKey.generate_key("Ed25519")
    keys = {thumbprint(public_jwk(key)): public_jwk(key)}
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteReportStore(Path(folder) / "bureau.db")
        with store.transaction():
            store.db.execute_many(
                "INSERT INTO log_leaves (leaf_index, leaf_hash, report_id, factory_id, "
                "payload_sha256, appended_at) VALUES (:i, :leaf, :report, :factory, :sha, :at)",
                [{"i": i, "leaf": report_leaf(_sha(i)), "report": f"r{i}",
                  "factory": f"f{i % FACTORIES}", "sha": _sha(i), "at": 1e9 + i}
                 for i in range(args.leaves)],
            )
        started = time.perf_counter()
        log = TransparencyLog(store.db, "bureau-bench", key)
        log.tree()
        open_s = time.perf_counter() - started

        members = []
        started = time.perf_counter()
        for n in range(args.leaves, args.leaves + args.receipts):
            with store.transaction():
                log.append(f"r{n}", f"f{n % FACTORIES}", _sha(n), 2e9 + n)
                members.append((_sha(n), log.receipt_member(f"r{n}", _sha(n))))
        store_ms = (time.perf_counter() - started) / args.receipts * 1e3

        rng = random.Random(1)
        picks = [rng.randrange(args.leaves) for _ in range(args.receipts)]
        started = time.perf_counter()
        for n in picks:
            log.receipt_member(f"r{n}", _sha(n))
        duplicate_ms = (time.perf_counter() - started) / args.receipts * 1e3

        heads = {}
        for sha, member in members:
            heads[sha] = check_receipt_log(member, sha, keys)
        started = time.perf_counter()
        for (sha, member), previous in zip(members[FACTORIES:], members, strict=False):
            entry = check_receipt_log(member, sha, keys)
            assert consistent(heads[previous[0]].head, entry.head, entry.link)
        agent_ms = (time.perf_counter() - started) / max(1, len(members) - FACTORIES) * 1e3

        leaves = [report_leaf(_sha(i)) for i in range(args.leaves)]
        rounds = 5
        started = time.perf_counter()
        for n in range(rounds):
            root(leaves)
            inclusion_proof(leaves, n * 997 % args.leaves)
            consistency_proof(leaves, args.leaves - 1 - n)
        uncached_ms = (time.perf_counter() - started) / rounds * 1e3
        store.close()
    print(f"log of {args.leaves:,} leaves, {args.receipts} receipts")
    print(f"| open: load the cached tree | {open_s * 1e3:.0f} ms |")
    print(f"| store receipt: append + head + log member | {store_ms:.2f} ms |")
    print(f"| duplicate receipt: log member | {duplicate_ms:.2f} ms |")
    print(f"| agent check: head signature, inclusion, link | {agent_ms:.2f} ms |")
    print(f"| uncached: root + inclusion + consistency from the list | {uncached_ms:.1f} ms |")


if __name__ == "__main__":
    main()
