"""RFC 9162 consistency and inclusion proofs (agent/protocol/merkle.py) and the bureau's cached
tree (bureau/translog.TreeLevels) against a brute-force reference: the recursive definitions
of RFC 6962 §2.1 (MTH, PATH, SUBPROOF) over plain lists, for every tree size up to 64."""

from __future__ import annotations

import hashlib

from agent.protocol.merkle import (
    consistency_path,
    consistency_proof,
    inclusion_path,
    inclusion_proof,
    leaf_hash,
    list_subtree_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from bureau.translog import TreeLevels

SIZES = range(1, 65)


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return node_hash(ref_mth(d[:k]), ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], whole: bool) -> list[bytes]:
    if m == len(d):
        return [] if whole else [ref_mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*ref_subproof(m, d[:k], whole), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


LEAVES = [leaf_hash(f"report {i}".encode()) for i in range(max(SIZES))]


def _flipped(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


def test_cached_tree_equals_the_recursive_definition_for_every_range() -> None:
    """If leaves are appended one by one to the bureau's cached tree, then its hash of every
    range [a, b) of every size up to 64 equals RFC 6962's MTH of that slice."""
    tree = TreeLevels()
    for n in SIZES:
        tree.append(LEAVES[n - 1])
        assert tree.root() == ref_mth(LEAVES[:n])
    for a in range(64):
        for b in range(a + 1, 65):
            assert tree.mth(a, b) == ref_mth(LEAVES[a:b]), (a, b)


def test_inclusion_proofs_match_the_reference_and_verify() -> None:
    """If an inclusion proof is made for every leaf of every tree up to 64 leaves (from the
    cached tree and from a list), then it is RFC 6962's PATH, it verifies, and it fails for
    a changed leaf, another index, or a changed proof hash."""
    tree = TreeLevels()
    for n in SIZES:
        tree.append(LEAVES[n - 1])
        d, root = LEAVES[:n], ref_mth(LEAVES[:n])
        for i in range(n):
            proof = inclusion_path(i, n, tree.mth)
            assert proof == ref_path(i, d) == inclusion_proof(d, i)
            assert verify_inclusion(d[i], i, n, proof, root)
            assert not verify_inclusion(_flipped(d[i]), i, n, proof, root)
            if n > 1:
                assert not verify_inclusion(d[i], (i + 1) % n, n, proof, root)
            for j in range(len(proof)):
                bad = [*proof[:j], _flipped(proof[j]), *proof[j + 1:]]
                assert not verify_inclusion(d[i], i, n, bad, root)


def test_consistency_proofs_match_the_reference_and_verify() -> None:
    """If a consistency proof is made from every size m to every size n >= m up to 64, then
    it is RFC 6962's SUBPROOF(m, D[n], true), the same from the cached tree and from a list,
    and it verifies (RFC 9162 §2.1.4.2); and it fails for a changed proof hash, a proof one
    hash short or long, the wrong first or second root, or other sizes."""
    tree = TreeLevels()
    for n in SIZES:
        tree.append(LEAVES[n - 1])
        d, second = LEAVES[:n], ref_mth(LEAVES[:n])
        for m in range(1, n + 1):
            first = ref_mth(d[:m])
            proof = consistency_path(m, n, tree.mth)
            assert proof == (ref_subproof(m, d, True) if m < n else [])
            assert proof == consistency_proof(d, m)
            assert proof == consistency_path(m, n, list_subtree_hash(d))
            assert verify_consistency(m, n, first, second, proof)
            if m == n:
                assert not verify_consistency(m, n, first, _flipped(second), proof)
                continue
            assert not verify_consistency(m, n, _flipped(first), second, proof)
            assert not verify_consistency(m, n, first, _flipped(second), proof)
            assert not verify_consistency(m, n, first, second, proof[:-1])
            assert not verify_consistency(m, n, first, second, [*proof, second])
            assert not verify_consistency(n, m, second, first, proof)
            if m + 1 < n:
                assert not verify_consistency(m + 1, n, ref_mth(d[: m + 1]), second, proof)
            for j in range(len(proof)):
                bad = [*proof[:j], _flipped(proof[j]), *proof[j + 1:]]
                assert not verify_consistency(m, n, first, second, bad)


def test_a_removed_or_changed_leaf_breaks_every_proof_from_an_older_head() -> None:
    """If a log of n leaves drops or changes leaf j and is appended to again, then no honest
    proof over the new leaves shows it consistent with any earlier head that held leaf j
    (what the agent and `verify` check after a bureau rewrote its log)."""
    for n in range(2, 33):
        for j in range(n):
            for rewritten in (
                [*LEAVES[:j], *LEAVES[j + 1:n], leaf_hash(b"new")],  # removed, one appended
                [*LEAVES[:j], leaf_hash(b"changed"), *LEAVES[j + 1:n]],  # changed in place
            ):
                for m in range(j + 1, n + 1):
                    old_root = ref_mth(LEAVES[:m])
                    proof = consistency_proof(rewritten, m)
                    assert not verify_consistency(
                        m, len(rewritten), old_root, ref_mth(rewritten), proof
                    ), (n, j, m)
