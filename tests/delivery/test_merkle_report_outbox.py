"""Merkle tree (RFC 6962), report building and the durable outbox (P1 crash points)."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from joserfc.jwk import OKPKey

from agent.outbox import Outbox, OutboxError
from agent.protocol import merkle
from agent.protocol.chain import genesis_sha256
from agent.protocol.envelope import canonical_bytes, sha256_hex
from agent.protocol.period import Period
from agent.protocol.report import ReportError, report_id, schema_errors
from tests.support.paths import python_env
from tests.support.reports import (
    FACTORY,
    TZ,
    commit_days,
    day,
    make_report,
    segments,
    synthetic_base,
)

# RFC 6962 test vectors (certificate-transparency merkle_tree_test.cc).
LEAVES = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_merkle_roots_match_rfc6962_vectors() -> None:
    """If the CT test leaves are hashed, then every prefix root equals the published one."""
    leaves = [merkle.leaf_hash(bytes.fromhex(x)) for x in LEAVES]
    assert merkle.root([]) == hashlib.sha256(b"").digest()
    assert [merkle.root(leaves[: n + 1]).hex() for n in range(8)] == ROOTS


def test_inclusion_proofs_verify_and_fail_when_touched() -> None:
    """If a proof is checked for every leaf of trees of 1..20 leaves, then it verifies, and
    fails for a different leaf or index."""
    for size in range(1, 21):
        leaves = [merkle.leaf_hash(bytes([i])) for i in range(size)]
        top = merkle.root(leaves)
        for index in range(size):
            proof = merkle.inclusion_proof(leaves, index)
            assert merkle.verify_inclusion(leaves[index], index, size, proof, top)
            assert not merkle.verify_inclusion(merkle.leaf_hash(b"x"), index, size, proof, top)
            if size > 1:
                other = (index + 1) % size
                assert not merkle.verify_inclusion(leaves[index], other, size, proof, top)


def test_raw_tampering_is_detected_and_localised() -> None:
    """If one raw sample changes, a segment is deleted, reordered or the last leaf duplicated,
    then the root changes; proofs fail for the touched segment only (B13)."""
    segs = segments(day(1), devices=2)
    pairs = merkle.ordered_digests(segs)
    leaves = [d for _, d in pairs]
    top = merkle.root(leaves)
    assert merkle.root([*leaves, leaves[-1]]) != top  # CVE-2012-2459 style
    assert merkle.root(leaves[:-1]) != top
    assert merkle.root([leaves[1], leaves[0], *leaves[2:]]) != top
    victim = pairs[5][0]
    rows = list(victim.samples)
    rows[1] = (*rows[1][:3], rows[1][3] + 1, rows[1][4])
    changed = merkle.Segment(victim.device_id, victim.signal_id, victim.hour_start, tuple(rows))
    current = [merkle.segment_digest(changed) if s is victim else d for s, d in pairs]
    assert merkle.root(current) != top
    verdicts = [
        merkle.verify_inclusion(current[i], i, len(leaves), merkle.inclusion_proof(leaves, i), top)
        for i in range(len(leaves))
    ]
    assert verdicts.count(False) == 1 and verdicts[5] is False


@pytest.mark.parametrize("tamper", ["delete", "duplicate"])
def test_B13_deleting_or_duplicating_one_raw_sample_is_detected_and_localised(
        tamper: str) -> None:
    """If one raw sample is deleted from a segment, or one is stored twice, then the day's
    root changes and inclusion proofs fail for that segment only (B13)."""
    pairs = merkle.ordered_digests(segments(day(1), devices=2))
    leaves = [d for _, d in pairs]
    top = merkle.root(leaves)
    victim_index = 7
    victim = pairs[victim_index][0]
    rows = list(victim.samples)
    assert len(rows) >= 3
    rows = rows[:1] + rows[2:] if tamper == "delete" else [*rows[:2], rows[1], *rows[2:]]
    changed = merkle.Segment(victim.device_id, victim.signal_id, victim.hour_start, tuple(rows))
    current = [merkle.segment_digest(changed) if s is victim else d for s, d in pairs]
    assert merkle.root(current) != top
    verdicts = [
        merkle.verify_inclusion(current[i], i, len(leaves), merkle.inclusion_proof(leaves, i), top)
        for i in range(len(leaves))
    ]
    assert verdicts.count(False) == 1 and verdicts[victim_index] is False


def test_segment_bytes_do_not_depend_on_sample_order() -> None:
    """If a segment's samples come in another order, then its digest is the same."""
    seg = segments(day(1), devices=1)[0]
    shuffled = merkle.Segment(seg.device_id, seg.signal_id, seg.hour_start, seg.samples[::-1])
    assert merkle.segment_digest(seg) == merkle.segment_digest(shuffled)


def test_report_is_valid_deterministic_and_pure() -> None:
    """If the same inputs are built twice, then the bytes are equal, the id is UUIDv5 of
    factory/period/revision, the schema validates and the input frame is unchanged."""
    key = OKPKey.generate_key("Ed25519")
    base = synthetic_base(day(1), 2)
    before = base.copy()
    first = make_report(key, day(1), 1, genesis_sha256(FACTORY))
    second = make_report(key, day(1), 1, genesis_sha256(FACTORY))
    assert canonical_bytes(first) == canonical_bytes(second)
    assert first["report_id"] == report_id(FACTORY, day(1), 0) != report_id(FACTORY, day(2), 0)
    assert schema_errors(first) == []
    assert len(first["base_measures"]["rows"]) == 2 * 24
    assert synthetic_base(day(1), 2).equals(before)
    assert first["raw_data"]["segment_count"] == 2 * 2 * 24


def test_month_report_carries_daily_sums() -> None:
    """If a month report is built, then it has one row per device per local day whose sums
    equal the hourly sums, and indicators come from those rows."""
    key = OKPKey.generate_key("Ed25519")
    month = Period("month", "2025-02", TZ)
    report = make_report(key, month, 1, genesis_sha256(FACTORY))
    rows = report["base_measures"]["rows"]
    assert report["base_measures"]["granularity"] == "day" and len(rows) == 2 * 28
    hourly = synthetic_base(month, 2)
    assert sum(r[11] for r in rows) == int(hourly["produced"].sum())
    assert abs(sum(r[4] for r in rows) - float(hourly["apt_s"].sum())) < 1e-6


def test_nan_in_base_measures_is_refused() -> None:
    """If a base measure is NaN, then building the report raises ReportError."""
    from agent.protocol.report import build_report
    from tests.support.reports import EVALUATION, inventory, meta

    key = OKPKey.generate_key("Ed25519")
    base = synthetic_base(day(1), 1)
    base.loc[3, "apt_s"] = float("nan")
    with pytest.raises(ReportError, match="not finite"):
        build_report(
            meta(key, day(1)),
            seq=1,
            prev_sha256="0" * 64,
            inventory=inventory(1),
            base=base,
            evaluation=EVALUATION,
            segment_digests=[],
        )


def test_outbox_chains_reports_and_is_idempotent_per_period(tmp_path: Path) -> None:
    """If three days are committed twice, then seq is 1..3, each prev_sha256 is the previous
    payload hash, the second pass returns the same rows, and the DB is WAL + FULL."""
    key = OKPKey.generate_key("Ed25519")
    outbox = Outbox(tmp_path / "outbox.db")
    first = commit_days(outbox, key, range(1, 4))
    again = commit_days(outbox, key, range(1, 4))
    assert [i.seq for i in first] == [1, 2, 3] and first == again
    prev = genesis_sha256(FACTORY)
    from agent.protocol.envelope import Kind, unverified_payload

    for item in first:
        payload = unverified_payload(item.jws, Kind.REPORT)
        assert payload["prev_sha256"] == prev
        prev = item.payload_sha256
    db = sqlite3.connect(tmp_path / "outbox.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert outbox.chain_head(FACTORY) == (3, first[-1].payload_sha256)


_COMMIT_SCRIPT = textwrap.dedent("""
    from pathlib import Path
    from agent.protocol.keys import load_private_key
    from agent.outbox import Outbox
    from tests.support.reports import commit_days
    key = load_private_key(Path({key!r}))
    commit_days(Outbox(Path({db!r})), key, range(1, 3))
""")


@pytest.mark.parametrize("point", ["after_build", "after_sign", "after_commit"])
def test_crash_points_in_commit_keep_the_chain_whole(tmp_path: Path, point: str) -> None:
    """If the agent is SIGKILLed at a named point while committing day 1, then after restart
    day 1 is committed exactly once, seq is never reused and bytes sent are the stored
    bytes (P1)."""
    from agent.protocol.keys import init_keys

    init_keys(tmp_path / "k", None)
    script = _COMMIT_SCRIPT.format(
        key=str(tmp_path / "k" / "agent-key.pem"),
        db=str(tmp_path / "outbox.db"),
    )
    env = python_env(TIERAGENT_CRASH_AT=point)  # the script imports tests.support
    crashed = subprocess.run([sys.executable, "-c", script], env=env, timeout=60, check=False)
    assert crashed.returncode == -9
    outbox = Outbox(tmp_path / "outbox.db")
    survived = outbox.items()
    assert len(survived) == (1 if point == "after_commit" else 0)
    outbox.close()
    env.pop("TIERAGENT_CRASH_AT")
    subprocess.run([sys.executable, "-c", script], env=env, timeout=60, check=True)
    outbox = Outbox(tmp_path / "outbox.db")
    items = outbox.items()
    assert [i.seq for i in items] == [1, 2]
    if survived:
        assert items[0].jws == survived[0].jws
    assert outbox.integrity_ok()


def test_corrupted_outbox_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """If the outbox file is corrupted, then opening fails with a message naming the file, and
    the file's bytes are unchanged (P8)."""
    key = OKPKey.generate_key("Ed25519")
    path = tmp_path / "outbox.db"
    outbox = Outbox(path)
    commit_days(outbox, key, range(1, 3))
    outbox.close()
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xa5" * (4096 - 100)
    path.write_bytes(bytes(data))
    before = sha256_hex(path.read_bytes())
    with pytest.raises(OutboxError, match=str(path)):
        Outbox(path)
    assert sha256_hex(path.read_bytes()) == before


def test_level_by_level_root_equals_the_rfc_6962_recursion() -> None:
    """`root` pairs level by level; RFC 6962 splits at the largest power of two below n.
    They are the same tree for every size (odd counts, powers of two and one past)."""
    import hashlib
    import os

    from agent.protocol.merkle import EMPTY_ROOT, root

    def definition(leaves: list[bytes]) -> bytes:
        if not leaves:
            return EMPTY_ROOT
        if len(leaves) == 1:
            return leaves[0]
        k = 1
        while k * 2 < len(leaves):
            k *= 2
        return hashlib.sha256(b"\x01" + definition(leaves[:k]) + definition(leaves[k:])).digest()

    for n in [*range(70), 127, 128, 129, 1000, 4097]:
        leaves = [os.urandom(32) for _ in range(n)]
        assert root(leaves) == definition(leaves), n
