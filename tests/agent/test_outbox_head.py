"""The outbox's head record (issue 17 item 7; docs/reliability.md §c P8, "truncate the WAL").

A write-ahead log cut short loses its last transaction silently: SQLite opens the database at
the last whole commit. `outbox.db.head`, written after each COMMIT, makes that loss visible
at the next open. The damage here is the one of the issue: 81 committed reports, the files
copied while the writer still has them open (what a power cut leaves), 100 bytes cut off the
end of the copy's `outbox.db-wal`.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from agent_testkit import cli
from joserfc.jwk import OKPKey

from agent.outbox import Outbox, OutboxError, OutboxItem
from agent.outbox_head import HEAD_SUFFIX, WAL_KEPT_SUFFIX
from agent.protocol.envelope import Kind, sign_compact, unverified_payload
from agent.protocol.period import Period
from tests.support.paths import ROOT, python_env
from tests.support.reports import FACTORY, TZ, commit_days, make_report

NAME = "outbox.db"
REPORTS = 81
CUT = 100


def _commit(outbox: Outbox, key: OKPKey, days: range) -> list[OutboxItem]:
    """One daily report per day number (1 = 2025-01-01), through the outbox's public API."""

    def sign(payload: bytes) -> str:
        return sign_compact(payload, key, Kind.REPORT)

    items = []
    for n in days:
        period = Period("day", (date(2025, 1, 1) + timedelta(days=n - 1)).isoformat(), TZ)

        def build(seq: int, prev: str, period: Period = period) -> dict[str, Any]:
            return make_report(key, period, seq, prev, devices=1)

        items.append(outbox.commit_report(FACTORY, period.slot(0), build, sign))
    return items


def _head(folder: Path) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads((folder / (NAME + HEAD_SUFFIX)).read_text())
    return dict(entry["factories"][FACTORY])


def _copy(image: Path, folder: Path, *, head: bool = True) -> Path:
    folder.mkdir()
    for suffix in ("", "-wal", HEAD_SUFFIX if head else None):
        if suffix is not None:
            shutil.copyfile(image / (NAME + suffix), folder / (NAME + suffix))
    return folder / NAME


def _cut_wal(db: Path, cut: int = CUT) -> None:
    wal = db.with_name(db.name + "-wal")
    data = wal.read_bytes()
    wal.write_bytes(data[:-cut])


@dataclass(frozen=True)
class PowerCut:
    """outbox.db, -wal and .head as copied while the writer had them open; the reports."""

    image: Path
    items: list[OutboxItem]
    key: OKPKey


@pytest.fixture(scope="module")
def power_cut(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PowerCut]:
    live = tmp_path_factory.mktemp("live")
    key = OKPKey.generate_key("Ed25519")
    outbox = Outbox(live / NAME)
    # A reader's open transaction keeps every commit in the WAL, appended in order (no
    # checkpoint may reset the log under it), so the last commit is at the end of the file.
    reader = sqlite3.connect(live / NAME)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM outbox").fetchone()
    try:
        items = _commit(outbox, key, range(1, REPORTS + 1))
        image = tmp_path_factory.mktemp("image")
        for suffix in ("", "-wal", HEAD_SUFFIX):
            shutil.copyfile(live / (NAME + suffix), image / (NAME + suffix))
    finally:
        reader.rollback()
        reader.close()
        outbox.close()
    assert (image / (NAME + "-wal")).stat().st_size > 100 * CUT
    yield PowerCut(image, items, key)


def test_wal_cut_by_100_bytes_is_refused_naming_the_lost_report(
    power_cut: PowerCut, tmp_path: Path
) -> None:
    """If 100 bytes are cut off the WAL after seq 81 was committed, then without the head
    record the outbox opens at seq 80 and nothing says so; with it, the open fails naming the
    file, seq 81, its report id and period and the way out, keeps the log as found, and
    fails the same way at the next start; the command line prints it without a traceback."""
    last, before = power_cut.items[-1], power_cut.items[-2]
    assert last.seq == REPORTS

    silent = _copy(power_cut.image, tmp_path / "without-record", head=False)
    _cut_wal(silent)
    outbox = Outbox(silent)
    assert outbox.chain_head(FACTORY) == (REPORTS - 1, before.payload_sha256)
    assert outbox.get(last.report_id) is None  # the damage is real, and silent without it
    outbox.close()

    db = _copy(power_cut.image, tmp_path / "with-record")
    _cut_wal(db)
    wal_size = db.with_name(NAME + "-wal").stat().st_size
    with pytest.raises(OutboxError) as caught:
        Outbox(db)
    message = str(caught.value)
    for part in (f"{db}:", "seq 81 missing", "database ends at seq 80", last.report_id,
                 last.period_slot, last.payload_sha256[:16], f"move {db}{HEAD_SUFFIX} aside",
                 "Restore outbox.db from a backup"):
        assert part in message, (part, message)
    kept = db.with_name(NAME + WAL_KEPT_SUFFIX)
    assert f"kept in {kept}" in message
    assert kept.stat().st_size == wal_size  # the damaged log as it was found
    assert _head(db.parent)["seq"] == REPORTS  # the record is left as it was

    with pytest.raises(OutboxError, match="seq 81 missing"):
        Outbox(db)  # the log was checkpointed away at the first refusal: still refused
    proc = subprocess.run(cli("report", "status", "--outbox", str(db)), capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    stderr = proc.stderr.replace("\n", "")
    assert proc.returncode == 2 and "Traceback" not in stderr, stderr
    assert "seq 81 missing" in stderr and last.report_id in stderr


def test_whole_wal_and_clean_reopen_pass(power_cut: PowerCut, tmp_path: Path) -> None:
    """If the power-cut copy's WAL is whole, or the outbox was closed cleanly, then it opens
    with every report and the record names the last one."""
    last = power_cut.items[-1]
    db = _copy(power_cut.image, tmp_path / "whole")
    outbox = Outbox(db)
    assert outbox.chain_head(FACTORY) == (REPORTS, last.payload_sha256)
    outbox.close()
    outbox = Outbox(db)  # clean reopen
    assert len(outbox.items()) == REPORTS
    outbox.close()
    assert _head(db.parent) == {"seq": REPORTS, "payload_sha256": last.payload_sha256,
                                "report_id": last.report_id, "period_slot": last.period_slot}


_CRASH_SCRIPT = textwrap.dedent("""
    from pathlib import Path
    from agent.protocol.keys import load_private_key
    from agent.outbox import Outbox
    from tests.support.reports import commit_days
    key = load_private_key(Path({key!r}))
    commit_days(Outbox(Path({db!r})), key, range(1, 4))
""")


def test_crash_between_commit_and_record_passes_and_heals(tmp_path: Path) -> None:
    """If the agent is SIGKILLed after the COMMIT of seq 3 and before its record is written,
    then the record is behind the database (seq 2), the next open passes, and the record
    is brought to seq 3."""
    from agent.protocol.keys import init_keys, load_private_key

    init_keys(tmp_path / "k", None)
    key_file = tmp_path / "k" / "agent-key.pem"
    db = tmp_path / NAME
    outbox = Outbox(db)
    commit_days(outbox, load_private_key(key_file), range(1, 3))
    outbox.close()
    script = _CRASH_SCRIPT.format(key=str(key_file), db=str(db))
    crashed = subprocess.run([sys.executable, "-c", script], timeout=60, check=False,
                             env=python_env(TIERAGENT_CRASH_AT="after_commit"))
    assert crashed.returncode == -9
    assert _head(tmp_path)["seq"] == 2
    outbox = Outbox(db)
    items = outbox.items()
    outbox.close()
    assert [i.seq for i in items] == [1, 2, 3]
    assert _head(tmp_path) == {"seq": 3, "payload_sha256": items[2].payload_sha256,
                               "report_id": items[2].report_id,
                               "period_slot": items[2].period_slot}


def test_accepting_the_loss_takes_the_record_from_the_database(
    power_cut: PowerCut, tmp_path: Path
) -> None:
    """If the operator accepts the loss (`accept_head_loss=True`, or by moving the record
    aside), then the outbox opens at seq 80, the old record is kept beside it, the record
    names seq 80, and the lost period is committed again as seq 81 on seq 80's hash."""
    last, before = power_cut.items[-1], power_cut.items[-2]
    db = _copy(power_cut.image, tmp_path / "accept")
    _cut_wal(db)
    outbox = Outbox(db, accept_head_loss=True)
    assert outbox.accepted_loss is not None and "seq 81 missing" in outbox.accepted_loss
    (aside,) = db.parent.glob(f"{NAME}{HEAD_SUFFIX}.lost-*")
    assert json.loads(aside.read_text())["factories"][FACTORY]["seq"] == REPORTS
    assert _head(db.parent)["seq"] == REPORTS - 1
    again = _commit(outbox, power_cut.key, range(REPORTS, REPORTS + 1))[0]
    outbox.close()
    assert (again.seq, again.period_slot) == (REPORTS, last.period_slot)
    assert unverified_payload(again.jws, Kind.REPORT)["prev_sha256"] == before.payload_sha256
    reopened = Outbox(db)
    assert reopened.chain_head(FACTORY) == (REPORTS, again.payload_sha256)
    reopened.close()
    assert _head(db.parent)["seq"] == REPORTS

    moved = _copy(power_cut.image, tmp_path / "moved")
    _cut_wal(moved)
    moved.with_name(NAME + HEAD_SUFFIX).rename(moved.with_name(NAME + ".head.old"))
    outbox = Outbox(moved)  # the documented manual way: no record, taken from the database
    outbox.close()
    assert _head(moved.parent)["seq"] == REPORTS - 1


def test_outbox_of_an_older_version_gets_a_record(tmp_path: Path) -> None:
    """If an outbox has no record (written by a version before it), then it opens without
    error and the record is created from the database."""
    key = OKPKey.generate_key("Ed25519")
    db = tmp_path / NAME
    outbox = Outbox(db)
    items = commit_days(outbox, key, range(1, 4))
    outbox.close()
    db.with_name(NAME + HEAD_SUFFIX).unlink()
    Outbox(db).close()
    assert _head(tmp_path)["seq"] == 3
    assert _head(tmp_path)["report_id"] == items[2].report_id


def test_a_report_replaced_at_the_recorded_seq_is_refused(tmp_path: Path) -> None:
    """If the database holds the recorded seq but another report there (an older copy put in
    place that then went on), then the open fails naming both reports."""
    key = OKPKey.generate_key("Ed25519")
    first = tmp_path / "first" / NAME
    outbox = Outbox(first)
    committed = commit_days(outbox, key, range(1, 4))[-1]
    outbox.close()
    other = tmp_path / "other" / NAME
    outbox = Outbox(other)
    commit_days(outbox, key, range(1, 3))
    replacement = commit_days(outbox, key, range(5, 6))[0]
    outbox.close()
    assert replacement.seq == committed.seq == 3
    shutil.copyfile(first.with_name(NAME + HEAD_SUFFIX), other.with_name(NAME + HEAD_SUFFIX))
    with pytest.raises(OutboxError) as caught:
        Outbox(other)
    message = str(caught.value)
    assert f"seq 3 is now report {replacement.report_id}" in message
    assert committed.report_id in message and str(other) in message


@pytest.mark.parametrize("content", [
    b"",
    b"{\"format\": 1, \"factor",
    b"[1, 2]",
    b"{\"format\": 2, \"factories\": {}}",
    b"{\"format\": 1, \"factories\": {\"demo-tj-001\": {\"seq\": \"81\"}}}",
], ids=["empty", "cut", "not-an-object", "unknown-format", "malformed-entry"])
def test_unreadable_record_is_refused_naming_it(tmp_path: Path, content: bytes) -> None:
    """If the record is not a readable head record, then the open fails with an OutboxError
    naming the record (no traceback), and the record is left as it was."""
    key = OKPKey.generate_key("Ed25519")
    db = tmp_path / NAME
    outbox = Outbox(db)
    commit_days(outbox, key, range(1, 3))
    outbox.close()
    record = db.with_name(NAME + HEAD_SUFFIX)
    record.write_bytes(content)
    with pytest.raises(OutboxError) as caught:
        Outbox(db)
    assert str(caught.value).startswith(f"{record}: the outbox's head record ")
    assert "move it aside" in str(caught.value)
    assert record.read_bytes() == content
    outbox = Outbox(db, accept_head_loss=True)  # accepting sets it aside
    outbox.close()
    assert _head(tmp_path)["seq"] == 2
