"""A real PostgreSQL for the tests, started from Debian's `postgresql` binaries into a
temporary directory on a free loopback port, and stopped by PID.

- `PostgresServer` runs `initdb` into a fresh directory under /tmp, then the `postgres`
    server itself (not `pg_ctl`, so that the PID we hold is the postmaster's) with
    `listen_addresses=127.0.0.1`, a free port, and `unix_socket_directories` inside that
    directory. `stop()` sends SIGINT (PostgreSQL's "fast" shutdown) to that PID and waits.
- `create_database()` gives each test its own database (`CREATE DATABASE ... TEMPLATE
    template0`, about 0.1 s); the server is shared by the whole session (tests/conftest.py).
- Never the machine's own PostgreSQL on 5432: CI on another machine may not have one.

Root: initdb refuses to run as root ("cannot be run as root"), and so does postgres. When
the tests run as root (this project's CI does), both run as the unprivileged user `nobody`
through subprocess's `user=`/`group=` (setuid in the child before exec, so the PID is still
the server's), in a directory made by `tempfile.mkdtemp` under /tmp and handed to `nobody`:
pytest's own tmp_path lies under a 0700 root directory that `nobody` cannot enter. Not root:
everything runs as the current user.

Settings are for tests, not production: fsync and synchronous_commit off (the tests check
the bureau's logic, not the disk), trust authentication on loopback only. `durable=True`
keeps PostgreSQL's defaults for both (bench/bureau_pg.py: a receipt is only sent for a
report on disk).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Self

import psycopg
import pytest

from tests.support.ports import free_port, serving
from tests.support.waiting import wait_until

DEBIAN_BINARIES = "/usr/lib/postgresql/*/bin"


def postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL bin directory that has initdb and postgres."""
    candidates = sorted(
        (Path(p) for p in glob.glob(DEBIAN_BINARIES)),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for directory in reversed(candidates):
        if (directory / "initdb").is_file() and (directory / "postgres").is_file():
            return directory
    return None


class PostgresServer:
    """One PostgreSQL server for a test session; see the module docstring."""

    def __init__(self, *, durable: bool = False) -> None:
        bin_dir = postgres_bin()
        if bin_dir is None:
            pytest.fail(
                f"PostgreSQL binaries not found in {DEBIAN_BINARIES}; install Debian's "
                "postgresql package (bash .ci/setup does)."
            )
        self.bin = bin_dir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.directory = Path(tempfile.mkdtemp(prefix="tieragent-pg-"))
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            self._as = {"user": "nobody", "group": "nogroup"}
            shutil.chown(self.directory, "nobody", "nogroup")
        self._databases = 0
        self.durable = durable

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        initdb = subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"],
            capture_output=True, cwd=self.directory, **self._as,
        )
        if initdb.returncode != 0:
            pytest.fail(f"initdb failed: {initdb.stderr.decode(errors='replace')[-800:]}")
        log = open(self.directory / "postgres.log", "wb")  # noqa: SIM115
        fast = [] if self.durable else [
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data),
             "-c", "listen_addresses=127.0.0.1", "-c", f"port={self.port}",
             "-c", f"unix_socket_directories={self.directory}", *fast,
             "-c", "max_connections=200"],
            stdout=log, stderr=log, cwd=self.directory, **self._as,
        )
        log.close()
        if not wait_until(self._ready, 30.0):
            tail = (self.directory / "postgres.log").read_text(errors="replace")[-800:]
            self.stop()
            pytest.fail(f"PostgreSQL did not accept connections on port {self.port}: {tail}")

    def _ready(self) -> bool:
        if not serving(self.process, self.port):
            return False
        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:  # still starting ("the database system is starting up")
            return False

    def create_database(self, prefix: str = "bureau") -> str:
        """A new empty database; returns its URL."""
        self._databases += 1
        name = f"{prefix}_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


# Tables of the bureau schema (bureau/migrations/) in an order that copies cleanly.
BUREAU_TABLES = ("keys", "rotations", "reports", "rejections", "alerts", "log_leaves", "log_head")


def copy_sqlite_bureau(sqlite_file: Path, url: str) -> None:
    """Copy every row of a SQLite bureau database into the (new) PostgreSQL database at
    `url`, migrated first by opening it as a store: the same evidence on both back ends.
    Rejections and alerts get new ids in the same order."""
    import sqlite3

    from bureau.store import SqlReportStore

    store = SqlReportStore(url)
    source = sqlite3.connect(f"file:{sqlite_file}?mode=ro", uri=True)
    try:
        with store.transaction():
            for table in BUREAU_TABLES:
                cursor = source.execute(f"SELECT * FROM {table} ORDER BY rowid")
                columns = [c[0] for c in cursor.description if c[0] != "id" or table == "log_head"]
                names = ", ".join(columns)
                values = ", ".join(f":{c}" for c in columns)
                for row in cursor:
                    record = dict(zip([c[0] for c in cursor.description], row, strict=True))
                    store.db.execute(f"INSERT INTO {table} ({names}) VALUES ({values})",
                                     {c: record[c] for c in columns})
    finally:
        source.close()
        store.close()
