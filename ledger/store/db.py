"""Engine and transactions for SQLite (the zero-set-up default) and PostgreSQL.

Writers go through `Database.write()`: on PostgreSQL it takes a transaction-scoped advisory lock, on
SQLite it begins an IMMEDIATE transaction, so appends are serialised across processes and hosts.
Readers use `Database.read()`, which takes no lock.

With a read replica (`LEDGER_READ_DATABASE_URL`, a PostgreSQL streaming standby), `read()`,
`snapshot()` and `statement()` use the replica's engine inside `from_replica()` (which the API enters
for a GET that only reads, once the replica has replayed what the request must see); everything
else, writes and the projector among them, uses the primary.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from sqlalchemy import JSON, Table, TypeDecorator, event, insert, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql.schema import ScalarElementColumnDefault
from sqlmodel import Session, create_engine

log = logging.getLogger("ledger.db")

# Any constants work; they only have to be the same in every process of a deployment.
SEQUENCER_LOCK_KEY = 0x1ED6E2  # held by appends (and the checkpoint lease)
PROJECTOR_LOCK_KEY = 0x1ED6E3  # held by the one applier of projections, never by appends


# The Database whose reads this context sends to its replica (None: every read goes to the primary).
_ROUTED: ContextVar[Database | None] = ContextVar("ledger_reads_routed", default=None)
REPLICA_CONNECT_TIMEOUT = 2  # seconds: an unreachable replica costs a request at most this


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _private_file(url: str) -> None:
    """Creates a SQLite database file 0600 before SQLite does (its -wal and -shm files take the
    database file's mode), and narrows an existing one to 0600."""
    path = make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
    except OSError:  # a directory that does not exist yet, or a file of another owner: SQLite says
        pass


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Creates an engine; SQLite gets WAL, full sync, foreign keys, secure delete and manual BEGIN
    control, and its files are private (0600)."""
    if _is_sqlite(url):
        _private_file(url)
        # A pool of reused connections: opening one costs a file open and four pragmas.
        # How long a writer waits for SQLite's one write lock before "database is locked" (answered
        # 503): 30 s, or the URL's own `?timeout=` (seconds), which pysqlite passes on.
        busy = {} if "timeout" in make_url(url).query else {"timeout": 30}
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, **busy},
            pool_size=pool_size,
            max_overflow=10,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event decide how transactions start (pysqlite's own
            # implicit BEGIN would defer the write lock until the first write).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            # Deleted content is overwritten with zeros, not left in free pages (an erased payload).
            cur.execute("PRAGMA secure_delete=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            options = conn.get_execution_options()
            if options.get("isolation_level") == "AUTOCOMMIT":
                return  # a single-statement read: no transaction
            immediate = options.get("ledger_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=10, pool_pre_ping=True)


class Database:
    """One engine and the two kinds of transaction the ledger uses."""

    def __init__(self, url: str, *, pool_size: int = 5, read_url: str | None = None) -> None:
        self.url = url
        self.is_sqlite = _is_sqlite(url)
        self.engine = make_engine(url, pool_size=pool_size)
        self._write_engine = self.engine.execution_options(ledger_write=True)
        self._statement_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._memory_lock = threading.Lock()  # the projector lock of an in-memory SQLite database
        self.replica: Engine | None = None
        if read_url is not None:
            if self.is_sqlite or not read_url.startswith("postgresql"):
                raise ValueError("a read replica needs PostgreSQL for both the primary and the replica")
            self.replica = create_engine(
                read_url,
                pool_size=pool_size,
                max_overflow=10,
                pool_pre_ping=True,  # a replica that restarted leaves dead connections in the pool
                connect_args={"connect_timeout": REPLICA_CONNECT_TIMEOUT},
            )
            self._replica_statement = self.replica.execution_options(isolation_level="AUTOCOMMIT")

    # --- where reads go ----------------------------------------------------------------------------

    @contextmanager
    def from_replica(self) -> Iterator[None]:
        """Within it, this context's reads go to the replica (there must be one)."""
        assert self.replica is not None
        token = _ROUTED.set(self)
        try:
            yield
        finally:
            _ROUTED.reset(token)

    @contextmanager
    def on_primary(self) -> Iterator[None]:
        """Within it, every read goes to the primary: for reads that decide what is written."""
        token = _ROUTED.set(None)
        try:
            yield
        finally:
            _ROUTED.reset(token)

    def route_to_replica(self, on: bool) -> None:
        """Sends this context's reads to the replica from now on (or no longer): for a request,
        whose hooks begin and end it in separate calls (`from_replica` is the scoped form)."""
        assert not on or self.replica is not None
        _ROUTED.set(self if on else None)

    def primary_only(self) -> Database:
        """This database without its replica (the same engines and locks): for a service whose
        reads must always see the primary, such as the principals that authenticate requests."""
        twin = copy.copy(self)
        twin.replica = None
        return twin

    @property
    def reads_from_replica(self) -> bool:
        return self.replica is not None and _ROUTED.get() is self

    def _reader(self) -> Engine:
        return self.replica if self.replica is not None and _ROUTED.get() is self else self.engine

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A transaction without the sequencer lock; rows loaded in it stay usable after it ends."""
        # Committing would otherwise expire every loaded row, and the detached rows a reader
        # returns (`Ledger.stored_checkpoints`, say) would raise DetachedInstanceError on first use.
        with Session(self._reader(), expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def write(self, *, lock: bool = True) -> Iterator[Session]:
        """A transaction holding the sequencer lock; commits on success, rolls back on error.

        `lock=False`: no sequencer lock on PostgreSQL; the caller takes it as the first statement of
        the transaction (an append group pipelines it with its reads: `ledger.store.groupio`), or
        needs none (a row only the holder of another lock writes). SQLite has one writer anyway."""
        with Session(self._write_engine) as session, session.begin():
            if lock and not self.is_sqlite:
                session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SEQUENCER_LOCK_KEY})
            yield session

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A read transaction that sees one committed state throughout (REPEATABLE READ on
        PostgreSQL; a SQLite read transaction in WAL mode does so already): a decision built from
        several queries then rests on one state of the projections."""
        reader = self._reader()
        engine = reader if self.is_sqlite else reader.execution_options(isolation_level="REPEATABLE READ")
        with Session(engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def projecting(self) -> Iterator[Session | None]:
        """A write transaction holding the projector lock, or None when another applier holds it.

        On PostgreSQL the projector lock is an advisory lock of its own: appends go on while
        projections are applied. SQLite has one writer: there it is the write transaction itself.
        """
        if self.is_sqlite:
            with self._sqlite_projector_lock() as held:
                if not held:
                    yield None
                    return
                with self.write() as session:
                    yield session
            return
        with Session(self._write_engine) as session, session.begin():
            taken = session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": PROJECTOR_LOCK_KEY}).scalar()
            yield session if taken else None

    @contextmanager
    def projector_lock(self) -> Iterator[bool]:
        """The projector lock alone, without a write transaction (False when another holds it): what a
        follower holds while it decides and appends, so that no batch is applied meanwhile.

        PostgreSQL: the same advisory lock as `projecting`, in a transaction of its own that writes
        nothing. SQLite: a lock file beside the database (flock), which `projecting` takes too; the
        follower's appends then take SQLite's write lock as any append does.
        """
        if self.is_sqlite:
            with self._sqlite_projector_lock() as held:
                yield held
            return
        with Session(self.engine) as session, session.begin():
            yield bool(
                session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": PROJECTOR_LOCK_KEY}).scalar()
            )

    @contextmanager
    def _sqlite_projector_lock(self) -> Iterator[bool]:
        import fcntl

        database = make_url(self.url).database
        if not database or database == ":memory:":  # one process: a lock of this process
            held = self._memory_lock.acquire(blocking=False)
            try:
                yield held
            finally:
                if held:
                    self._memory_lock.release()
            return
        fd = os.open(f"{database}.projector-lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True  # closing the descriptor releases the lock
        finally:
            os.close(fd)

    @contextmanager
    def statement(self) -> Iterator[Connection]:
        """A connection for single-statement reads of immutable rows (tree nodes): no BEGIN/COMMIT."""
        replica = self.replica is not None and _ROUTED.get() is self
        with (self._replica_statement if replica else self._statement_engine).connect() as conn:
            yield conn

    def scrub(self, tables: Iterable[str], *, rewrite: Iterable[str] = ()) -> None:
        """After an erasure: leaves no copy of deleted rows in this database's files where the
        database lets us.

        SQLite (secure_delete on, so deleted content is zeroed): the WAL, which still holds the pages
        as they were, is checkpointed into the main file and truncated to zero bytes.

        PostgreSQL: `tables` are vacuumed, which removes their dead rows; but VACUUM leaves a removed
        row's bytes in the page's free space when no row is moved over them, so the tables in
        `rewrite` are rewritten (VACUUM FULL: a new file, the old one unlinked). The rewrite holds an
        ACCESS EXCLUSIVE lock for its duration (appends wait), and waits at most
        SCRUB_LOCK_TIMEOUT_MS for it; past that, the table is only vacuumed and a warning says the
        bytes may stay in free space until overwritten. Copies in PostgreSQL's own WAL, in replicas
        and in backups stay until those are recycled (README, "Erasure").
        """
        if self.is_sqlite:
            for _ in range(50):  # a reader holding an old snapshot makes the checkpoint wait: retry
                with self._statement_engine.connect() as conn:
                    busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
                if busy is not None and busy[0] == 0:
                    return
                time.sleep(0.1)
            log.warning("erasure: the SQLite WAL could not be truncated (readers kept it busy)")
            return
        full = sorted(set(rewrite))
        with self._statement_engine.connect() as conn:
            self._outlive_snapshots(conn)
            # Plain VACUUM first: it removes the dead rows whatever this session's own snapshot
            # (VACUUM FULL would copy a row that snapshot might see, and a snapshot's xmin counts
            # transactions of every database on the server).
            conn.exec_driver_sql(f"VACUUM {', '.join(sorted({*tables, *full}))}")
            conn.exec_driver_sql(f"SET lock_timeout = {int(self.SCRUB_LOCK_TIMEOUT_MS)}")
            for table in full:  # then a new file of the live rows: no freed space with old bytes
                for attempt in range(3):  # the lock not granted in time: a moment later, twice more
                    try:
                        conn.exec_driver_sql(f"VACUUM (FULL) {table}")
                        break
                    except OperationalError:
                        if attempt == 2:
                            log.warning("erasure: %s could not be rewritten (busy); vacuumed only", table)
                        else:
                            time.sleep(1.0)
            conn.exec_driver_sql("RESET lock_timeout")

    SCRUB_LOCK_TIMEOUT_MS = 5000
    SCRUB_SNAPSHOT_WAIT_SECONDS = 10.0

    def _outlive_snapshots(self, conn: Connection) -> None:
        """Waits (at most SCRUB_SNAPSHOT_WAIT_SECONDS) until no other session of this database holds
        a snapshot taken before now: VACUUM keeps, and VACUUM FULL copies, a deleted row that such a
        snapshot may still see (a reader, the projector applying the erasure entry)."""
        horizon = conn.exec_driver_sql(
            "SELECT mod(txid_snapshot_xmax(txid_current_snapshot()), 4294967296)"
        ).scalar_one()
        older = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_xmin IS NOT NULL AND age(backend_xmin) > age(CAST(CAST(:h AS text) AS xid))"
        )
        deadline = time.monotonic() + self.SCRUB_SNAPSHOT_WAIT_SECONDS
        while conn.execute(older, {"h": int(horizon)}).scalar_one() and time.monotonic() < deadline:
            time.sleep(0.05)

    def dispose(self) -> None:
        self.engine.dispose()
        if self.replica is not None:
            self.replica.dispose()


T = TypeVar("T")


def chunks(values: Iterable[T], size: int = 500) -> Iterator[list[T]]:
    """`values` in lists of at most `size`: IN (...) lists short enough for any database's limits."""
    vals = list(values)
    for i in range(0, len(vals), size):
        yield vals[i : i + size]


COPY_MIN_ROWS = 20  # below this, one INSERT round trip is as quick as COPY's


def bulk_insert(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Inserts `rows` (dicts of column values) into `table` within the session's transaction.

    On PostgreSQL, sets of COPY_MIN_ROWS or more go through COPY, several times faster than
    executemany (`bench/hotspots.py`, section inserts). Values are written as SQLAlchemy would bind
    them: JSON columns encoded with json.dumps, fixed column defaults filled in. A table with a column
    type of our own (a TypeDecorator) or a computed default takes executemany, which applies them.
    """
    if not rows:
        return
    conn = session.connection()
    given = list(rows[0])
    omitted = [c for c in table.columns if c.name not in given]
    if (
        conn.dialect.name != "postgresql"
        or len(rows) < COPY_MIN_ROWS
        or any(isinstance(c.type, TypeDecorator) for c in table.columns if c.name in given)
        or any(c.default is not None and not isinstance(c.default, ScalarElementColumnDefault) for c in omitted)
    ):
        session.execute(insert(table), rows)
        return
    defaults = {c.name: c.default.arg for c in omitted if isinstance(c.default, ScalarElementColumnDefault)}
    cols = [*given, *defaults]
    encode = {c.name for c in table.columns if isinstance(c.type, JSON)}
    fixed = [json.dumps(v) if k in encode else v for k, v in defaults.items()]
    from psycopg import sql as pg_sql  # here: a SQLite deployment never loads the driver

    session.flush()  # pending ORM rows first, as executemany's autoflush would
    raw = conn.connection.driver_connection
    assert raw is not None
    stmt = pg_sql.SQL("COPY {} ({}) FROM STDIN").format(
        pg_sql.Identifier(table.name), pg_sql.SQL(", ").join(pg_sql.Identifier(c) for c in cols)
    )
    with raw.cursor() as cur, cur.copy(stmt) as cp:
        for r in rows:
            cp.write_row([json.dumps(r[c]) if c in encode else r[c] for c in given] + fixed)
