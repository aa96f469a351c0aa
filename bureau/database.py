"""The bureau database: one SQLAlchemy connection to SQLite (the embedded default) or
PostgreSQL, its schema brought to the newest migration at open (bureau/migrations/).

`Database(target)` takes a file path (SQLite) or a `postgresql://` URL. SQL is written once
for both, as `text()` with named parameters (`:factory_id`); the few dialect differences
(locks, integrity checks) are methods here.

Transactions are explicit: `with db.transaction():` is one transaction (joined when already
inside one); a query outside one runs in its own short transaction. On SQLite a transaction
is `BEGIN IMMEDIATE`: it takes the file's write lock at once, which serialises writers in
every process, so `lock_factory` and `lock_log` have nothing to add. On PostgreSQL
(READ COMMITTED) several receivers write at once; they serialise what must be serial with
transaction-scoped advisory locks:

- `lock_factory(factory_id)` at the start of a message's transaction: its chain checks
    (duplicate, fork, link to seq - 1 and seq + 1) and the writes they decide run alone for
    that factory, and read what the previous holder committed.
- `lock_log()` before the transparency log appends a leaf: leaf numbers are global, and the
    lock held to COMMIT keeps the committed leaves a gapless prefix whose signed head is the
    one stored in `log_head`.

The order is always factory, then log, so two transactions never wait on each other in a
cycle.

Errors: a database that cannot be opened raises ReportStoreError naming the file (or the
URL without its password) and the next step, in one line.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, Row, TextClause, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.pool import NullPool

from bureau.errors import BureauError

DATABASE_URL_ENV = "TIERAGENT_BUREAU_DATABASE_URL"

# Advisory lock keys (pg_advisory_xact_lock(namespace, key)): the namespace keeps the
# bureau's locks apart from anything else sharing the PostgreSQL database.
_LOCK_NAMESPACE = 0x7A6E  # "tieragent bureau"
_LOG_LOCK = 1
_MIGRATION_LOCK = 2

Params = Mapping[str, Any]
if TYPE_CHECKING:
    DbRow = Row[*tuple[Any, ...]]  # a row of any width (SQLAlchemy 2.1's typing)


class ReportStoreError(BureauError):
    """The bureau database cannot be used; str() names the file and the next step."""


def is_database_url(target: str | Path) -> bool:
    return isinstance(target, str) and "://" in target


def safe_name(target: str | Path) -> str:
    """How to name the database in messages and logs: a path, or the URL without password."""
    if not is_database_url(target):
        return str(target)
    try:
        return make_url(str(target)).render_as_string(hide_password=True)
    except ArgumentError:
        return "the database URL (not a valid URL)"


class Database:
    """One connection to the bureau database, used by one thread at a time: a call from
    another thread waits until the transaction in progress has ended."""

    def __init__(self, target: str | Path) -> None:
        self.name = safe_name(target)
        self.path: Path | None = None if is_database_url(target) else Path(target)
        self._texts: dict[str, TextClause] = {}
        self._psycopg_sql: dict[str, str] = {}
        # `batched`: statements waiting for the next round trip, with a list for the rows
        # of a prefetched query (None for a write).
        self._queued: list[Queued] | None = None
        self._immediate = threading.local()
        # One connection, used by one thread at a time: a transaction holds it to its end, a
        # statement outside one for itself (a test or a status thread reading the receiver's
        # store waits for the message in hand to commit, instead of joining its transaction).
        self._in_use = threading.RLock()
        try:
            self.engine = self._engine(target)
            self.dialect = self.engine.dialect.name
            self.conn = self.engine.connect()
        except DBAPIError as error:
            raise ReportStoreError(self._cannot_open(error)) from None
        try:
            if self.dialect == "sqlite":
                self._sqlite_checks()
            from bureau.migrations.run import upgrade_to_head

            upgrade_to_head(self)
        except (DBAPIError, sqlite3.DatabaseError) as error:  # the latter: PRAGMAs on the file
            self.close()
            raise ReportStoreError(self._cannot_open(error)) from None
        except BaseException:
            self.close()
            raise

    # ---- opening --------------------------------------------------------------------

    def _engine(self, target: str | Path) -> Engine:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                URL.create("sqlite", database=str(self.path)), poolclass=NullPool,
                connect_args={"timeout": 30.0, "check_same_thread": False},
            )
            event.listen(engine, "connect", _sqlite_connect)
            event.listen(engine, "begin", self._sqlite_begin)
            return engine
        try:
            url = make_url(str(target))
        except ArgumentError:
            raise ReportStoreError(
                "The bureau database URL is not a URL: give postgresql://USER@HOST:PORT/DB "
                f"(the password in ${DATABASE_URL_ENV} or ~/.pgpass)."
            ) from None
        if url.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
            url = url.set(drivername="postgresql+psycopg")
        else:
            raise ReportStoreError(
                f"{self.name}: the bureau stores reports in SQLite (--db FILE) or PostgreSQL "
                "(postgresql://...); give one of those."
            )
        try:
            return create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 10})
        except NoSuchModuleError:  # pragma: no cover - psycopg is a dependency
            raise ReportStoreError("PostgreSQL needs psycopg: pip install 'psycopg[binary]'.") \
                from None

    def _sqlite_checks(self) -> None:
        # On the driver's connection: through SQLAlchemy these would open a transaction, and
        # journal_mode cannot change inside one.
        raw = self.conn.connection.dbapi_connection
        assert raw is not None
        row = raw.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            raise ReportStoreError(
                f"{self.name}: integrity check failed; the file was not modified. Restore it "
                "from a backup, or give --db a new file."
            )
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("PRAGMA synchronous=FULL")

    def _sqlite_begin(self, conn: Connection) -> None:
        """SQLAlchemy's recipe for pysqlite: we issue BEGIN ourselves (pysqlite's implicit
        transactions are off, see _sqlite_connect). IMMEDIATE for `transaction()`."""
        conn.exec_driver_sql("BEGIN IMMEDIATE" if self._wants_immediate() else "BEGIN")

    def _wants_immediate(self) -> bool:
        return bool(getattr(self._immediate, "on", False))

    def _cannot_open(self, error: DBAPIError | sqlite3.DatabaseError) -> str:
        # The driver's first line only: psycopg adds hints on further lines, and neither
        # driver repeats the password.
        cause = error.orig if isinstance(error, DBAPIError) else error
        reason = (str(cause).strip().splitlines() or [type(error).__name__])[0]
        if self.path is not None:
            return f"{self.name}: the bureau database cannot be opened ({reason})."
        return (
            f"{self.name}: cannot connect to the bureau's PostgreSQL ({reason}); check the "
            f"server, the URL and the password (${DATABASE_URL_ENV} or ~/.pgpass)."
        )

    def close(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.dispose()

    # ---- transactions and locks ---------------------------------------------------------

    def in_transaction(self) -> bool:
        return self.conn.in_transaction()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction, committed at the end and rolled back on any exception; inside
        another of the same thread, it joins it."""
        with self._in_use:
            if self.conn.in_transaction():
                yield
                return
            self._immediate.on = True
            try:
                with self.conn.begin():
                    self._immediate.on = False
                    yield
            finally:
                self._immediate.on = False

    def lock_factory(self, factory_id: str) -> None:
        """Serialise this factory's messages until COMMIT (PostgreSQL; SQLite's IMMEDIATE
        transaction already holds the whole file)."""
        if self.dialect == "postgresql":
            self.execute(
                "SELECT pg_advisory_xact_lock(:ns, hashtext(:factory_id))",
                {"ns": _LOCK_NAMESPACE, "factory_id": factory_id},
            )

    def lock_log(self) -> None:
        """Serialise appends to the transparency log until COMMIT (PostgreSQL)."""
        if self.dialect == "postgresql":
            self.execute("SELECT pg_advisory_xact_lock(:ns, :key)",
                         {"ns": _LOCK_NAMESPACE, "key": _LOG_LOCK})

    def lock_migrations(self) -> None:
        """One process migrates at a time (PostgreSQL; SQLite: IMMEDIATE)."""
        if self.dialect == "postgresql":
            self.execute("SELECT pg_advisory_xact_lock(:ns, :key)",
                         {"ns": _LOCK_NAMESPACE, "key": _MIGRATION_LOCK})

    # ---- statements -------------------------------------------------------------------

    def _text(self, sql: str) -> TextClause:
        clause = self._texts.get(sql)
        if clause is None:
            clause = self._texts[sql] = text(sql)
        return clause

    @contextmanager
    def batched(self, *, commit: bool = False) -> Iterator[None]:
        """Inside a transaction on PostgreSQL: statements without rows (`execute`,
        `execute_many`) and `prefetch`ed queries wait, and go to the server together with
        the next query that reads rows, in one pipeline (one round trip); in the same
        order, each statement after the previous one has finished, so a lock is held
        before what follows it is read. With `commit`, the block's last writes and the
        COMMIT go together at its end (the enclosing `transaction()` then finds nothing
        left to commit). A failing statement raises there, inside the transaction.
        SQLite: no effect."""
        with self._in_use:
            if self.dialect != "postgresql" or self._queued is not None:
                yield
                return
            self._queued = []
            try:
                yield
                self._pipeline(commit=commit)
            finally:
                self._queued = None

    @contextmanager
    def fused(self) -> Iterator[None]:
        """Inside `batched` on PostgreSQL: the writes (INSERT, UPDATE, DELETE) queued in this
        block after its last read go to the server as one statement, the first ones as
        data-modifying WITH members of the last, instead of one statement each (each a round
        of the driver's and the server's work per report). For writes that do not depend on
        each other only: the members share one snapshot, none sees another's rows, their
        order is the server's. SQLite, or outside `batched`: no effect."""
        with self._in_use:
            queued = self._queued
            start = len(queued) if queued is not None else 0
            yield
            if self._queued is None or self.dialect != "postgresql":
                return
            if self._queued is not queued:  # a read sent the block's earlier statements
                start = 0
            self._queued[start:] = _fuse_writes(self._queued[start:])

    def prefetch(self, sql: str, params: Params | None = None) -> Callable[[], Sequence[Any]]:
        """A query sent with the next round trip of a `batched` block; call the result for
        its rows once a later query has run (or the block ended). Outside one, the query
        runs when its rows are first asked for (never, when they are not needed)."""
        with self._in_use:
            if self._queued is None or not self.conn.in_transaction():
                ran: list[Sequence[Any]] = []

                def run() -> Sequence[Any]:
                    if not ran:
                        ran.append(self.tuples(sql, params))
                    return ran[0]

                return run
            holder: list[Sequence[Any]] = []
            self._queued.append((sql, [dict(params or {})], holder))
            return lambda: holder[0]

    def _pipeline(
        self, read: tuple[str, Params | None] | None = None, *, commit: bool = False
    ) -> Sequence[Any]:
        """The queued statements, then `read`, then COMMIT if asked, in one pipeline;
        returns `read`'s rows (plain tuples, indexed by position like SQLAlchemy's rows)."""
        queued, self._queued = self._queued or [], []
        if not queued and read is None and not commit:
            return []
        raw = self.conn.connection.dbapi_connection
        assert raw is not None
        readers: list[tuple[Any, list[Sequence[Any]]]] = []
        result: list[Sequence[Any]] = []
        writer = None  # one cursor for every write: no rows to keep apart
        with raw.pipeline():
            for sql, values, holder in queued:
                if holder is not None:
                    cursor = raw.cursor()
                    cursor.execute(self._psycopg(sql), values[0])
                    readers.append((cursor, holder))
                    continue
                writer = writer or raw.cursor()
                if len(values) == 1:
                    writer.execute(self._psycopg(sql), values[0])
                else:
                    writer.executemany(self._psycopg(sql), values)
            if read is not None:
                cursor = raw.cursor()
                cursor.execute(self._psycopg(read[0]), dict(read[1] or {}))
                readers.append((cursor, result))
            if commit:
                raw.commit()
        for cursor, holder in readers:
            holder.append(cursor.fetchall())
        return result[0] if read is not None else []

    def _psycopg(self, sql: str) -> str:
        """`sql` as psycopg takes it (`%(name)s`, literal % doubled), compiled once."""
        compiled = self._psycopg_sql.get(sql)
        if compiled is None:
            compiled = self._psycopg_sql[sql] = str(
                self._text(sql).compile(dialect=self.engine.dialect)
            )
        return compiled

    def _queue(self, sql: str, values: list[dict[str, Any]]) -> bool:
        if self._queued is None or not self.conn.in_transaction():
            return False
        self._queued.append((sql, values, None))
        return True

    def _rows(self, sql: str, params: Params | None) -> Sequence[DbRow]:
        with self._in_use:
            if self._queued is not None and self.conn.in_transaction():
                # Batched: in the pipeline of the waiting statements, on the driver itself
                # (SQLAlchemy's result machinery was a quarter of the time per statement).
                return self._pipeline((sql, params))
            if self.conn.in_transaction():
                return self.conn.execute(self._text(sql), dict(params or {})).all()
            with self.conn.begin():
                return self.conn.execute(self._text(sql), dict(params or {})).all()

    def execute(self, sql: str, params: Params | None = None) -> None:
        """A statement whose rows are not needed (INSERT, UPDATE, DELETE, a lock)."""
        with self._in_use:
            if self._queue(sql, [dict(params or {})]):
                return
            if self.dialect == "sqlite":  # on the driver (see `tuples`), in the transaction if any
                with _as_sqlalchemy_error(sql, params):
                    self._sqlite().execute(sql, dict(params or {}))
                return
            if self.conn.in_transaction():
                self.conn.execute(self._text(sql), dict(params or {}))
                return
            with self.conn.begin():
                self.conn.execute(self._text(sql), dict(params or {}))

    def execute_many(self, sql: str, rows: Sequence[Params]) -> None:
        """One statement for many parameter sets (the driver's executemany)."""
        with self._in_use:
            if not rows:
                return
            values = [dict(row) for row in rows]
            if self._queue(sql, values):
                return
            if self.dialect == "sqlite":
                with _as_sqlalchemy_error(sql, values):
                    self._sqlite().executemany(sql, values)
                return
            if self.conn.in_transaction():
                self.conn.execute(self._text(sql), values)
                return
            with self.conn.begin():
                self.conn.execute(self._text(sql), values)

    def rows(self, sql: str, params: Params | None = None) -> Sequence[DbRow]:
        return self._rows(sql, params)

    def _sqlite(self) -> sqlite3.Connection:
        """The driver's connection under SQLAlchemy's: sqlite3 takes `:name` parameters as
        they are, and runs a statement outside a transaction as one of its own (its implicit
        transactions are off, _sqlite_connect), as `execute` does through SQLAlchemy."""
        raw = self.conn.connection.dbapi_connection
        assert isinstance(raw, sqlite3.Connection)
        return raw

    def tuples(self, sql: str, params: Params | None = None) -> Sequence[tuple[Any, ...]]:
        """`rows` as plain tuples (indexed by position only), from the driver itself where
        that is the same query: SQLite (sqlite3 takes `:name` parameters as they are; in a
        transaction or, outside one, as its own) and a `batched` block on PostgreSQL. For the
        receiver's per-message look-ups: SQLAlchemy's result machinery cost about as much as
        the query."""
        with self._in_use:
            if self.dialect == "sqlite":
                with _as_sqlalchemy_error(sql, params):
                    return self._sqlite().execute(sql, dict(params or {})).fetchall()
            return [tuple(row) for row in self._rows(sql, params)]

    def row(self, sql: str, params: Params | None = None) -> DbRow | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Params | None = None) -> Any:
        row = self.row(sql, params)
        return None if row is None else row[0]

    def integrity_ok(self) -> bool:
        """SQLite's full integrity check; PostgreSQL checks its pages itself."""
        if self.dialect != "sqlite":
            return True
        return bool(self.scalar("PRAGMA integrity_check") == "ok")


Queued = tuple[str, list[dict[str, Any]], list[Any] | None]
_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")  # a named parameter, as SQLAlchemy's text()
_WRITES = ("INSERT ", "UPDATE ", "DELETE ")


def _fuse_writes(queued: list[Queued]) -> list[Queued]:
    """Runs of single writes (one parameter set, no rows wanted) as one statement each:
    `WITH w0 AS (first), w1 AS (second) last`, parameters renamed per member."""
    out: list[Queued] = []
    run: list[tuple[str, dict[str, Any]]] = []

    def close_run() -> None:
        if len(run) == 1:
            out.append((run[0][0], [run[0][1]], None))
        elif run:
            out.append(_fused(run))
        run.clear()

    for sql, values, holder in queued:
        if holder is None and len(values) == 1 and sql.lstrip().upper().startswith(_WRITES):
            run.append((sql, values[0]))
        else:
            close_run()
            out.append((sql, values, holder))
    close_run()
    return out


def _fused(run: list[tuple[str, dict[str, Any]]]) -> Queued:
    params: dict[str, Any] = {}
    members = []
    for n, (sql, values) in enumerate(run):
        members.append(_renamed(sql, n))
        params.update({f"w{n}_{name}": value for name, value in values.items()})
    heads = ", ".join(f"w{n} AS ({member})" for n, member in enumerate(members[:-1]))
    return f"WITH {heads} {members[-1]}", [params], None


@functools.lru_cache(maxsize=256)
def _renamed(sql: str, member: int) -> str:
    return _BIND.sub(lambda match: f":w{member}_{match.group(1)}", sql)


@contextmanager
def _as_sqlalchemy_error(sql: str, params: Any) -> Iterator[None]:
    """The driver's errors as SQLAlchemy raises them (IntegrityError, OperationalError…), so
    callers catch one family whichever path ran the statement."""
    try:
        yield
    except sqlite3.Error as error:
        raise DBAPIError.instance(sql, params, error, sqlite3.Error) from error


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling off: Database issues BEGIN (IMMEDIATE) itself.
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA busy_timeout=30000")
