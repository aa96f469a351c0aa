"""Fault matrix row P7 (docs/reliability.md §c): the durability configuration is asserted.

The agent's two databases run with journal_mode=WAL and synchronous=FULL (2) and refuse to
run with anything weaker; key files are written temp file → fsync → rename → directory
fsync, which strace (Debian's) shows on the real `tieragent keys init`. Real page-cache loss
on power failure cannot be produced here: that limit is stated in docs/reliability.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from agent_testkit import modbus_config

from agent.outbox import Outbox, OutboxError
from agent.store import Store

ROOT = Path(__file__).parents[2]


def test_P7_both_databases_run_with_wal_and_synchronous_full(tmp_path: Path) -> None:
    """If the store and the outbox are opened, then each connection reports journal_mode
    wal and synchronous 2 (FULL)."""
    store = Store.open(tmp_path / "agent.db", modbus_config())
    outbox = Outbox(tmp_path / "outbox.db")
    try:
        for conn in (store._conn, outbox.connection):
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    finally:
        store.close()
        outbox.close()


@pytest.mark.parametrize("weaker", ["PRAGMA synchronous=NORMAL", "PRAGMA journal_mode=DELETE"])
def test_P7_the_outbox_refuses_weaker_settings(tmp_path: Path, weaker: str) -> None:
    """If the outbox connection ends up with weaker settings than declared (a file system
    that cannot do WAL, a changed default), then its durability check refuses to go on,
    naming the file and the settings found."""
    outbox = Outbox(tmp_path / "outbox.db")
    try:
        outbox.connection.execute(weaker)
        with pytest.raises(OutboxError, match="durability settings not in effect") as caught:
            outbox._assert_durability()
        assert str(tmp_path / "outbox.db") in str(caught.value)
    finally:
        outbox.close()


def test_P7_key_files_are_written_temp_fsync_rename_then_directory_fsync(tmp_path: Path) -> None:
    """If `tieragent keys init` writes the key pair, then for each file the system calls are,
    in order: create a temporary file in the same folder (0600 for the private key), fsync
    it, rename it over the final name, fsync the folder."""
    strace = shutil.which("strace")
    assert strace, "Debian's strace is missing: run `bash .ci/setup`"
    keys = tmp_path / "keys"
    trace = tmp_path / "trace"
    done = subprocess.run(
        [strace, "-f", "-qq", "-y", "-o", str(trace), "-e",
         "trace=openat,fsync,fdatasync,rename,renameat,renameat2", "-e", "signal=none",
         sys.executable, "-m", "tieragent", "keys", "init", "--dir", str(keys)],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    calls = [line for line in trace.read_text().splitlines()
             if str(keys) in line and "ENOENT" not in line]
    for name, mode in (("agent-key.pem", "0600"), ("agent-key.jwk.json", None)):
        tmp = re.escape(f"{keys}/.{name}.") + r"\d+\.tmp"
        steps = [
            rf"openat\(.*\"{tmp}\", O_WRONLY\|O_CREAT\|O_TRUNC.*{mode or ''}",
            rf"fsync\(\d+<{tmp}>\)",
            rf"rename\w*\(.*\"{tmp}\", .*\"{re.escape(str(keys / name))}\"\)",
            rf"openat\(.*\"{re.escape(str(keys))}\", O_RDONLY",
            rf"fsync\(\d+<{re.escape(str(keys))}>\)",
        ]
        position = 0
        for step in steps:
            found = next((i for i in range(position, len(calls))
                          if re.search(step, calls[i])), None)
            assert found is not None, (name, step, calls)
            position = found + 1
