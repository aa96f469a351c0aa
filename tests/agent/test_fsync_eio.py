"""Fault matrix row P6 (docs/reliability.md §c): fsync fails with EIO while a report is built.

`tieragent report` runs under strace, which makes every fsync/fdatasync from the k-th on
return EIO (`-e inject=...:error=EIO:when=k+`), for k at the first sync, at the outbox's
COMMIT and at the last one. The outbox is the only way out of the agent for a report (the
publisher reads nothing else), so "nothing published without a successful commit" is
checked as "nothing in the outbox after a failed command"; then a clean run creates the
report exactly once, continuing the chain.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tieragent.cli import _register_subcommands, app

ROOT = Path(__file__).resolve().parents[2]
FACTORY = ROOT / "config" / "factories" / "demo.yaml"
CONFIG = ROOT / "config" / "demo-agent.yaml"
DAY = "2026-01-02"
# What every sender (`report send`, the service's delivery loop) does first.
OPEN_OUTBOX = ("import sys, pathlib; from agent.outbox import Outbox; "
               "Outbox(pathlib.Path(sys.argv[1]))")


@dataclass
class Site:
    data: Path
    keys: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A demo-factory store with two days backfilled and the first day's report queued."""
    _register_subcommands()
    tmp = tmp_path_factory.mktemp("p6")
    made = Site(tmp / "data", tmp / "keys")
    runner = CliRunner()
    for args in (
        ["sim", "history", "-f", str(FACTORY), "--start", "2026-01-01", "--end", "2026-01-03",
         "--out", str(tmp / "hist"), "--sample-interval", "900"],
        ["backfill", "--config", str(CONFIG), "--history", str(tmp / "hist"), "--data-dir",
         str(made.data)],
        ["keys", "init", "--dir", str(made.keys)],
        ["report", "--config", str(CONFIG), "--period", "2026-01-01", "--data-dir",
         str(made.data), "--key-dir", str(made.keys)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    yield made


def _report(site: Site, data: Path, prefix: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "tieragent", "report", "--config", str(CONFIG),
         "--period", DAY, "--data-dir", str(data), "--key-dir", str(site.keys)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )


def _strace() -> str:
    found = shutil.which("strace")
    assert found, "Debian's strace is missing: run `bash .ci/setup`"
    return found


def _syncs(site: Site, tmp: Path) -> list[str]:
    """The files synced by a clean `report` of DAY, in call order (strace -y names them)."""
    data = tmp / "trace-data"
    shutil.copytree(site.data, data)
    log = tmp / "syncs.log"
    done = _report(site, data, [_strace(), "-f", "-qq", "-y", "-o", str(log),
                                "-e", "trace=fsync,fdatasync", "-e", "signal=none"])
    assert done.returncode == 0, done.stderr
    return re.findall(r"f(?:data)?sync\(\d+<([^>]+)>\)", log.read_text())


def _outbox_rows(data: Path) -> list[tuple[int, str, str]]:
    with sqlite3.connect(data / "outbox.db") as db:
        return db.execute("SELECT seq, period_slot, payload_sha256 FROM outbox ORDER BY seq"
                          ).fetchall()


def test_P6_fsync_eio_publishes_nothing_uncommitted_and_the_report_is_made_once(
        site: Site, tmp_path: Path) -> None:
    """If fsync returns EIO from the first sync, from the outbox's COMMIT, or from the last
    sync of `tieragent report` on, then the command either fails with a message naming the
    file and no traceback, leaving no report of the day in the outbox, or (a failure after
    the COMMIT) succeeds with the report queued; a clean run afterwards leaves exactly one
    report of the day, with seq 2."""
    syncs = _syncs(site, tmp_path)
    commits = [i for i, name in enumerate(syncs, 1) if name.endswith("outbox.db-wal")]
    assert commits, f"no sync of the outbox's WAL in {syncs}"
    failed_at_commit = 0
    for when in sorted({1, commits[0], len(syncs)}):
        data = tmp_path / f"data-{when}"
        shutil.copytree(site.data, data)
        faulty = _report(site, data, [
            _strace(), "-f", "-qq", "-o", "/dev/null", "-e", "signal=none",
            "-e", f"inject=fsync:error=EIO:when={when}+",
            "-e", f"inject=fdatasync:error=EIO:when={when}+"])
        assert "Traceback" not in faulty.stderr, (when, faulty.stderr)
        day_rows = [row for row in _outbox_rows(data) if DAY in row[1]]
        if faulty.returncode != 0:
            assert faulty.returncode in (1, 2) and str(data) in faulty.stderr, faulty.stderr
            assert "I/O error" in faulty.stderr, faulty.stderr
            if "not known to be queued" in faulty.stderr:
                failed_at_commit += 1
                # SQLite reads the WAL frames whose sync failed: an open with the disk still
                # failing must refuse, so that no sender can read the unsynced row.
                still_failing = subprocess.run(
                    [_strace(), "-f", "-qq", "-o", "/dev/null", "-e", "signal=none",
                     "-e", "inject=fsync:error=EIO", "-e", "inject=fdatasync:error=EIO",
                     sys.executable, "-c", OPEN_OUTBOX, str(data / "outbox.db")],
                    capture_output=True, text=True, timeout=60, cwd=ROOT)
                assert still_failing.returncode != 0, still_failing.stderr
                assert "OutboxError" in still_failing.stderr and "I/O error" in still_failing.stderr
            else:
                assert day_rows == [], (when, faulty.stderr)
        else:
            assert len(day_rows) == 1
        clean = _report(site, data, [])
        assert clean.returncode == 0, clean.stderr
        rows = _outbox_rows(data)
        assert [seq for seq, _, _ in rows] == [1, 2], rows
        assert DAY in rows[1][1]
    assert failed_at_commit == 1, "the EIO at the outbox's COMMIT was not the one reported"
