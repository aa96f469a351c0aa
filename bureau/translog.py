"""The bureau's transparency log: an append-only Merkle log (RFC 9162 hashing) of every
report it stores, accepted or pending-link (docs/reliability.md §b.9).

Leaves live in the `log_leaves` table of the bureau database (bureau/store.py), one row per
stored report in the order stored; the latest signed head in `log_head`. The wire format
(leaf hash, signed tree head, the receipt's `log` member) is agent/protocol/translog.py.

Every receipt for a stored report carries the head right after its leaf was appended, its
inclusion proof, and the consistency proof from the head of the same factory's previous
leaf. All of it is a function of the leaves and their append times, so a duplicate receipt
computes the same bytes again, whenever it is asked for.

Cost: proofs come from a cache of every perfect subtree's hash (`TreeLevels`: 2n hashes in
memory, about 150 bytes a leaf with Python's objects), so a head, an inclusion proof or a
consistency proof costs O(log² n) hashes instead of O(n). The cache is loaded from the table
once (n leaf reads and n hashes: about 0.16 s for 100,000 leaves) and then brought up to the
table on each use (two indexed lookups; other receivers may share the database). BENCHMARKS.md
has the figures.

Several receivers (PostgreSQL): `append` and `backfill` take the log lock (bureau.database)
first and hold it to COMMIT, so leaf numbers have no gap or double, each head signed covers
exactly the leaves committed before it, and the cache reads what the previous holder
committed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import OKPKey

from agent.protocol.merkle import EMPTY_ROOT, consistency_path, inclusion_path, node_hash
from agent.protocol.translog import hex_list, report_leaf, sign_head
from bureau.database import Database
from bureau.errors import BureauError


class LogError(BureauError):
    """The log table cannot be used (its leaf numbers have a hole); str() says so."""


class TreeLevels:
    """Leaf hashes and every perfect, aligned subtree's hash: levels[k][j] is the hash of
    leaves [j·2^k, (j+1)·2^k). Appending updates at most log2(n) entries."""

    def __init__(self) -> None:
        self.levels: list[list[bytes]] = [[]]

    def __len__(self) -> int:
        return len(self.levels[0])

    def leaf(self, index: int) -> bytes:
        return self.levels[0][index]

    def append(self, leaf: bytes) -> None:
        levels = self.levels
        levels[0].append(leaf)
        k = 0
        while len(levels[k]) % 2 == 0:
            if len(levels) == k + 1:
                levels.append([])
            below = levels[k]
            levels[k + 1].append(node_hash(below[-2], below[-1]))
            k += 1

    def mth(self, start: int, end: int) -> bytes:
        """RFC 6962 MTH of leaves [start, end)."""
        size = end - start
        if size <= 0:
            return EMPTY_ROOT
        if size & (size - 1) == 0 and start % size == 0:
            return self.levels[size.bit_length() - 1][start // size]
        k = 1 << ((size - 1).bit_length() - 1)  # largest power of two below size
        return node_hash(self.mth(start, start + k), self.mth(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        return self.mth(0, len(self) if size is None else size)


@dataclass(frozen=True, slots=True)
class Leaf:
    index: int
    report_id: str
    factory_id: str
    payload_sha256: str
    appended_at: float


_LEAF_COLUMNS = "leaf_index, report_id, factory_id, payload_sha256, appended_at"


class TransparencyLog:
    """The log on the bureau database connection `db`; `key` signs heads (None: read only).
    `alert(detail)` hears of a log that no longer extends the head it signed last."""

    def __init__(
        self, db: Database, bureau_id: str, key: OKPKey | None = None,
        alert: Callable[[str], None] | None = None,
    ) -> None:
        self.db = db
        self.bureau_id = bureau_id
        self.key = key
        self.alert = alert
        self._tree = TreeLevels()
        self._signed: tuple[int, bytes, float, str] | None = None  # the last head signed

    # ---- the leaves --------------------------------------------------------------------

    def tree(self) -> TreeLevels:
        """The cached tree, brought up to the table first, in one query: the last cached leaf
        (still there and unchanged?) and every leaf after it. A table that shrank or changed
        that leaf is read again in full."""
        return self._synced(with_head=False)[0]

    def _synced(self, with_head: bool) -> tuple[TreeLevels, tuple[int, str] | None]:
        """`tree()`, and with `with_head` the stored head's (size, root) read by the same
        query (one round trip under the log lock instead of two)."""
        head_sql = (" UNION ALL SELECT -1, NULL, tree_size, root_hash FROM log_head "
                    "WHERE id = 1") if with_head else ""
        leaves = "SELECT leaf_index, leaf_hash, NULL, NULL FROM log_leaves"
        cached = len(self._tree)
        rows = self.db.rows(f"{leaves} WHERE leaf_index >= :first{head_sql}",
                            {"first": max(cached - 1, 0)})
        head = next(((int(r[2]), str(r[3])) for r in rows if r[0] == -1), None)
        found = sorted((r for r in rows if r[0] != -1), key=lambda r: int(r[0]))
        if cached:
            if not found or found[0][0] != cached - 1 or bytes(found[0][1]) != self._tree.leaf(
                cached - 1
            ):
                self._tree = TreeLevels()  # rewritten under us: start again
                found = list(self.db.rows(f"{leaves} ORDER BY leaf_index"))
            else:
                found = found[1:]
        for index, leaf, _, _ in found:
            if index != len(self._tree):
                self._tree = TreeLevels()
                raise LogError(
                    f"The transparency log's leaf numbers have a hole before leaf {index}: "
                    "leaves were deleted from log_leaves."
                )
            self._tree.append(bytes(leaf))
        return self._tree, head

    def leaf(self, report_id: str, payload_sha256: str | None = None) -> Leaf | None:
        """The newest leaf of a report (of that payload, when given)."""
        sql = f"SELECT {_LEAF_COLUMNS} FROM log_leaves WHERE report_id = :report_id"
        args = {"report_id": report_id}
        if payload_sha256 is not None:
            sql += " AND payload_sha256 = :payload_sha256"
            args["payload_sha256"] = payload_sha256
        row = self.db.row(sql + " ORDER BY leaf_index DESC LIMIT 1", args)
        return Leaf(*row) if row else None

    def factory_leaves(self, factory_id: str) -> list[Leaf]:
        return [Leaf(*row) for row in self.db.rows(
            f"SELECT {_LEAF_COLUMNS} FROM log_leaves WHERE factory_id = :factory_id "
            "ORDER BY leaf_index",
            {"factory_id": factory_id},
        )]

    # ---- appending (inside the caller's transaction) ------------------------------------

    def append(self, report_id: str, factory_id: str, payload_sha256: str, now: float) -> int:
        """Append a stored report's leaf and sign the new head; returns the leaf index.
        Holds the log lock until the caller's transaction commits (leaf numbers are global)."""
        self.db.lock_log()
        tree, head = self._synced(with_head=True)
        self._check_last_head(tree, head)
        index = self._insert(tree, report_id, factory_id, payload_sha256, now)
        self._save_head(index + 1, now)
        return index

    def prefetch_last_leaf(self, factory_id: str) -> Callable[[], int | None]:
        """The factory's newest leaf number, read with the next query (Database.prefetch).
        Under its factory lock no other receiver appends for it, so it may be read before
        `append` takes the log lock."""
        rows = self.db.prefetch(
            "SELECT MAX(leaf_index) FROM log_leaves WHERE factory_id = :factory_id",
            {"factory_id": factory_id},
        )

        def last() -> int | None:
            value = rows()[0][0]
            return None if value is None else int(value)

        return last

    def appended_member(self, index: int, previous: int | None, at: float) -> dict[str, Any]:
        """The receipt's `log` member for the leaf `append` just gave number `index` at `at`,
        `previous` the factory's leaf before it (`last_leaf_of`): what `receipt_member`
        computes, from the tree in memory (brought up to the table under the log lock)."""
        size = index + 1
        link = None
        if previous is not None:
            link = {"from_size": previous + 1,
                    "proof": hex_list(consistency_path(previous + 1, size, self._tree.mth))}
        return {
            "head": self.head(size, at),
            "leaf_index": index,
            "inclusion": hex_list(inclusion_path(index, size, self._tree.mth)),
            "link": link,
        }

    def backfill(self, now: float) -> int:
        """Give every stored report without a leaf one (reports stored before the log
        existed), in the order received; returns how many. Appending never changes a
        head already signed."""
        query = (
            "SELECT report_id, factory_id, payload_sha256 FROM reports r WHERE NOT EXISTS "
            "(SELECT 1 FROM log_leaves l WHERE l.report_id = r.report_id "
            "AND l.payload_sha256 = r.payload_sha256) ORDER BY received_at, factory_id, seq"
        )
        if not self.db.rows(query + " LIMIT 1"):
            return 0  # the usual case: no lock taken, receivers start side by side
        self.db.lock_log()
        rows = self.db.rows(query)
        if not rows:
            return 0
        tree, head = self._synced(with_head=True)
        self._check_last_head(tree, head)
        for report_id, factory_id, payload_sha256 in rows:
            self._insert(tree, report_id, factory_id, payload_sha256, now)
        self._save_head(len(tree), now)
        return len(rows)

    def _insert(
        self, tree: TreeLevels, report_id: str, factory_id: str, payload_sha256: str, now: float
    ) -> int:
        index = len(tree)
        leaf = report_leaf(payload_sha256)
        self.db.execute(
            "INSERT INTO log_leaves (leaf_index, leaf_hash, report_id, factory_id, "
            "payload_sha256, appended_at) VALUES (:index, :leaf, :report_id, :factory_id, "
            ":payload_sha256, :now)",
            {"index": index, "leaf": leaf, "report_id": report_id, "factory_id": factory_id,
             "payload_sha256": payload_sha256, "now": now},
        )
        tree.append(leaf)
        return index

    def _check_last_head(self, tree: TreeLevels, head: tuple[int, str] | None) -> None:
        """The bureau checks itself: the leaves must still extend the head it signed last
        (`head`: its stored size and root)."""
        if head is None or self.alert is None:
            return
        size, root = head
        if size > len(tree) or tree.root(size).hex() != root:
            self.alert(
                f"the log's {len(tree)} leaves no longer extend the head it signed last "
                f"(size {size}, root {root[:16]}…): leaves were removed or changed"
            )

    def _save_head(self, size: int, at: float) -> None:
        head = self.head(size, at)
        self.db.execute(
            "INSERT INTO log_head (id, tree_size, root_hash, sth_jws) VALUES (1, :size, :root, "
            ":head) ON CONFLICT (id) DO UPDATE SET tree_size = excluded.tree_size, "
            "root_hash = excluded.root_hash, sth_jws = excluded.sth_jws",
            {"size": size, "root": self._tree.root(size).hex(), "head": head},
        )

    # ---- heads and proofs --------------------------------------------------------------

    def head(self, size: int, appended_at: float | None = None) -> str:
        """The signed head of the first `size` leaves, timestamped when its last leaf was
        appended (so it is the same JWS each time: Ed25519 signatures are deterministic).
        `appended_at`: that time, when the caller has just appended it (no look-ups)."""
        if self.key is None:
            raise LogError("This log was opened without the bureau key; it cannot sign heads.")
        if appended_at is None:
            tree = self.tree()
            row = self.db.row(
                "SELECT appended_at FROM log_leaves WHERE leaf_index = :index",
                {"index": size - 1},
            )
            appended_at = None if row is None else float(row[0])
        else:
            tree = self._tree
        if size < 1 or size > len(tree) or appended_at is None:
            raise LogError(f"The log has no head of size {size} (it has {len(tree)} leaves).")
        root, at = tree.root(size), appended_at
        if self._signed is None or self._signed[:3] != (size, root, at):
            self._signed = (size, root, at, sign_head(self.bureau_id, size, root, at, self.key))
        return self._signed[3]

    def latest_head(self) -> tuple[int, str, str] | None:
        """(tree size, root hex, STH JWS) of the head signed last, as stored."""
        row = self.db.row("SELECT tree_size, root_hash, sth_jws FROM log_head WHERE id = 1")
        return (int(row[0]), str(row[1]), str(row[2])) if row else None

    def inclusion(self, index: int, size: int) -> list[bytes]:
        tree = self.tree()
        return inclusion_path(index, size, tree.mth)

    def consistency(self, first: int, second: int) -> list[bytes]:
        tree = self.tree()
        return consistency_path(first, second, tree.mth)

    def receipt_member(self, report_id: str, payload_sha256: str) -> dict[str, Any] | None:
        """The receipt's `log` member for a stored report (agent.protocol.translog), or None
        when the report has no leaf."""
        leaf = self.leaf(report_id, payload_sha256)
        if leaf is None:
            return None
        previous = self.db.scalar(
            "SELECT MAX(leaf_index) FROM log_leaves WHERE factory_id = :factory_id "
            "AND leaf_index < :index",
            {"factory_id": leaf.factory_id, "index": leaf.index},
        )
        self.tree()  # once; the member is then computed from memory
        return self.appended_member(
            leaf.index, None if previous is None else int(previous), leaf.appended_at
        )
