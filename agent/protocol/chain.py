"""The per-factory hash chain: each report names its sequence number and the SHA-256 of the
previous report's payload (`prev_sha256`); seq 1 names the genesis hash.

`walk_chain` is the one walk every verifier uses (the agent's audit bundle, the bureau's
annual evaluation, the evidence folder check): it orders the reports by seq and says how
each joins the one before it. What counts as a problem is the caller's decision.

One chain carries every report of the factory: day, month and year periods and the revisions
of any of them, in the order they were signed. A walk over one kind of report alone sees the
others as gaps; `chain_slice` picks what a walk needs: every report between the first and the
last seq of the reports of interest, whatever their kind, so that a gap the walk finds is a
sequence number that is really missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from agent.protocol.envelope import sha256_hex

T = TypeVar("T")


def genesis_sha256(factory_id: str) -> str:
    """prev_sha256 of seq 1: SHA-256 of 'tieragent-genesis/v1/<factory_id>'.

    A documented constant rather than the enrollment record, so the bureau and any auditor
    can compute it without the enrollment bytes.
    """
    return sha256_hex(f"tieragent-genesis/v1/{factory_id}".encode())


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """One report as the chain sees it."""

    seq: int
    payload_sha256: str | None
    prev_sha256: str | None


@dataclass(frozen=True, slots=True)
class Link:
    """How the report at `index` (its position in the walk's input) joins its predecessor."""

    index: int
    seq: int
    previous_seq: int | None  # None for the first report of the walk
    follows: bool  # seq is exactly previous_seq + 1
    linked: bool  # follows, and prev_sha256 is the previous report's payload SHA-256
    from_genesis: bool | None  # for seq 1: prev_sha256 is the genesis hash; else None

    @property
    def gap(self) -> bool:
        """Sequence numbers are missing between the previous report and this one."""
        return self.previous_seq is not None and self.seq > self.previous_seq + 1


def walk_chain(entries: Sequence[ChainEntry], factory_id: str | None = None) -> list[Link]:
    """Every entry in seq order (stable for equal seqs) with how it joins the one before."""
    order = sorted(range(len(entries)), key=lambda i: entries[i].seq)
    genesis = genesis_sha256(factory_id) if factory_id else None
    links: list[Link] = []
    previous: ChainEntry | None = None
    for index in order:
        entry = entries[index]
        follows = previous is not None and entry.seq == previous.seq + 1
        links.append(
            Link(
                index=index,
                seq=entry.seq,
                previous_seq=previous.seq if previous is not None else None,
                follows=follows,
                linked=follows
                and previous is not None
                and entry.prev_sha256 == previous.payload_sha256,
                from_genesis=(
                    entry.prev_sha256 == genesis if entry.seq == 1 and genesis else None
                ),
            )
        )
        previous = entry
    return links


def chain_slice(items: Iterable[T], seq: Callable[[T], int], of: Iterable[int]) -> list[T]:
    """The items whose seq lies between the lowest and the highest seq in `of` (inclusive),
    in seq order: the contiguous part of a factory's chain that joins the reports `of` names,
    whatever the kind or revision of the reports in between. Empty when `of` is empty."""
    wanted = list(of)
    if not wanted:
        return []
    first, last = min(wanted), max(wanted)
    return sorted((item for item in items if first <= seq(item) <= last), key=seq)
