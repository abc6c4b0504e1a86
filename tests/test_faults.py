"""Storage faults answer 503 with `Retry-After`, never 500, and leave nothing half-written.

Every fault here is real: PostgreSQL backends are terminated with `pg_terminate_backend` (at a chosen
statement, or over and over under load), a database is set read-only or closed to connections, and
SQLite's one write lock is held by another connection. A full disk is in tests/test_operations.py (a
server on a small tmpfs). After each fault the log is checked entry by entry against the reference.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import auth, make_settings, shared_policy
from events import run_event
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from test_store import check_log, entry, load_reference

from ledger.app import create_app
from ledger.runtime import Runtime, build_runtime, initialise
from ledger.store.faults import CONNECTION, fault_of


@pytest.fixture(autouse=True)
def _collect_terminated_connections() -> Iterator[None]:
    """A psycopg connection whose backend was terminated under a running statement can outlive the
    test until the garbage collector finds it (its socket is already dead); collect it here, so its
    ResourceWarning does not land on whichever test runs next."""
    yield
    import gc
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


PG_ONLY = "a fault of PostgreSQL's (SQLite has no server to lose); SQLite's own faults are tested beside it"


def _admin(url: str) -> Engine:
    return create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")


def _terminate(admin: Engine, pid: int) -> None:
    with admin.connect() as c:  # waits (up to 5 s) until the backend has exited
        assert c.execute(text("SELECT pg_terminate_backend(:p, 5000)"), {"p": pid}).scalar()


def _terminate_all(admin: Engine, dbname: str) -> int:
    with admin.connect() as c:
        return len(
            c.execute(
                text(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                    "WHERE datname = :d AND pid <> pg_backend_pid()"
                ),
                {"d": dbname},
            ).all()
        )


@contextmanager
def kill_at(rt: Runtime, pattern: str, *, at_commit: bool = False) -> Iterator[list[str]]:
    """Terminates the backend of the first statement matching `pattern` just before it is sent (or,
    with `at_commit`, just before the commit of the transaction that ran it). Yields the statements
    it fired on, so a test can check that the fault really happened."""
    admin = _admin(rt.db.url)
    fired: list[str] = []
    seen: dict[int, str] = {}

    def before(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if fired or not re.search(pattern, statement):
            return
        if at_commit:
            seen[id(conn)] = statement
            return
        fired.append(statement)
        _terminate(admin, conn.connection.driver_connection.info.backend_pid)

    def on_commit(conn: Any) -> None:
        if fired or id(conn) not in seen:
            return
        fired.append(seen.pop(id(conn)))
        _terminate(admin, conn.connection.driver_connection.info.backend_pid)

    # The append group speaks to psycopg directly (ledger.store.groupio, pipelined): its statements
    # and its commit are seen at the driver's methods, the rest at SQLAlchemy's events.
    import psycopg

    real_execute, real_commit = psycopg.Connection.execute, psycopg.Connection.commit

    def execute(conn: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if not fired and isinstance(query, str) and re.search(pattern, query):
            if at_commit:
                seen[id(conn)] = query
            else:
                fired.append(query)
                _terminate(admin, conn.info.backend_pid)
        return real_execute(conn, query, *args, **kwargs)

    def commit(conn: Any) -> None:
        if not fired and id(conn) in seen:
            fired.append(seen.pop(id(conn)))
            _terminate(admin, conn.info.backend_pid)
        real_commit(conn)

    event.listen(rt.db.engine, "before_cursor_execute", before)
    event.listen(rt.db.engine, "commit", on_commit)
    psycopg.Connection.execute, psycopg.Connection.commit = execute, commit  # type: ignore[method-assign]
    try:
        yield fired
    finally:
        psycopg.Connection.execute, psycopg.Connection.commit = real_execute, real_commit  # type: ignore[method-assign]
        event.remove(rt.db.engine, "before_cursor_execute", before)
        event.remove(rt.db.engine, "commit", on_commit)
        admin.dispose()


def _is_problem_503(r: Any) -> None:
    assert r.status_code == 503, (r.status_code, r.get_data(as_text=True))
    assert r.mimetype == "application/problem+json"
    assert int(r.headers["Retry-After"]) >= 1
    body = r.get_json()
    assert body["status"] == 503 and body["detail"]


def _count(rt: Runtime, sql: str, **params: Any) -> int:
    with rt.db.engine.connect() as c:
        return int(c.execute(text(sql), params).scalar_one())


# --- PostgreSQL: a connection lost while in use ----------------------------------------------------


def test_read_whose_connection_is_terminated_is_retried_once(client, runtime: Runtime, tokens) -> None:
    if runtime.db.is_sqlite:
        pytest.skip(PG_ONLY)
    receipt = client.post("/api/v1/lineage", json=run_event(), headers=auth(tokens.pipeline)).get_json()["receipt"]
    with kill_at(runtime, r"FROM log_entries") as fired:
        r = client.get(f"/api/v1/log/entries/{receipt['seq']}", headers=auth(tokens.auditor))
    assert fired, "the backend was never terminated: the test proved nothing"
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["leaf_hash"] == receipt["leaf_hash"]


def test_append_whose_connection_is_terminated_before_commit_is_retried(client, runtime: Runtime, tokens) -> None:
    if runtime.db.is_sqlite:
        pytest.skip(PG_ONLY)
    ref = load_reference()
    before = runtime.ledger.size()
    with kill_at(runtime, r"INSERT INTO log_entries") as fired:
        r = client.post("/api/v1/lineage", json=run_event(), headers=auth(tokens.pipeline))
    assert fired
    assert r.status_code == 201, r.get_json()
    log = check_log(runtime, ref)
    assert len(log.headers) == before + 1  # written once
    receipt = r.get_json()["receipt"]
    assert log.leaves[receipt["seq"]].hex() == receipt["leaf_hash"]


def test_deduplicated_append_whose_commit_is_cut_off_is_retried(client, runtime: Runtime, tokens) -> None:
    """At the commit nobody knows whether it committed; intake's dedup key makes a retry safe."""
    if runtime.db.is_sqlite:
        pytest.skip(PG_ONLY)
    ref = load_reference()
    before = runtime.ledger.size()
    with kill_at(runtime, r"INSERT INTO log_entries", at_commit=True) as fired:
        r = client.post("/api/v1/lineage", json=run_event(), headers=auth(tokens.pipeline))
    assert fired
    assert r.status_code in (200, 201), r.get_json()
    log = check_log(runtime, ref)
    assert len(log.headers) == before + 1
    receipt = r.get_json()["receipt"]
    assert log.leaves[receipt["seq"]].hex() == receipt["leaf_hash"]


def test_append_without_dedup_key_cut_off_at_commit_is_not_retried(runtime: Runtime) -> None:
    """Without a dedup key a retry after an uncertain commit could write the entry twice: it fails
    instead (503 over HTTP), and here the commit never reached the database, so nothing was written."""
    if runtime.db.is_sqlite:
        pytest.skip(PG_ONLY)
    ref = load_reference()
    before = runtime.ledger.size()
    with kill_at(runtime, r"INSERT INTO log_entries", at_commit=True) as fired, pytest.raises(Exception) as caught:
        runtime.ledger.append([entry("no-key")])
    assert fired
    fault = fault_of(caught.value)
    assert fault is not None and fault.kind == CONNECTION
    assert len(check_log(runtime, ref).headers) == before
    runtime.ledger.append([entry("after")])  # and the next append goes through on a new connection
    assert len(check_log(runtime, ref).headers) == before + 1


def test_backends_terminated_under_load_answer_201_or_503_and_lose_nothing(app, runtime: Runtime, tokens) -> None:
    if runtime.db.is_sqlite:
        pytest.skip(PG_ONLY)
    ref = load_reference()
    admin = _admin(runtime.db.url)
    dbname = make_url(runtime.db.url).database
    assert dbname
    stop = threading.Event()
    answers: list[tuple[int, dict[str, Any], dict[str, str]]] = []
    kills = [0]

    def poster() -> None:
        c = app.test_client()
        while not stop.is_set():
            r = c.post("/api/v1/lineage", json=run_event(), headers=auth(tokens.pipeline))
            answers.append((r.status_code, r.get_json(), dict(r.headers)))
            g = c.get("/api/v1/log/entries?limit=5", headers=auth(tokens.auditor))
            answers.append((g.status_code, g.get_json(), dict(g.headers)))

    def killer() -> None:
        while not stop.is_set():
            kills[0] += _terminate_all(admin, dbname)
            time.sleep(0.05)  # a fault every 50 ms: this is the load's shape, not a wait for a condition

    threads = [threading.Thread(target=poster) for _ in range(4)] + [threading.Thread(target=killer)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and sum(s == 201 for s, _, _ in answers) < 40:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    admin.dispose()
    statuses = {s for s, _, _ in answers}
    assert kills[0] > 0
    assert statuses <= {200, 201, 503}, statuses
    for status, body, headers in answers:
        if status == 503:
            assert "Retry-After" in headers and body["status"] == 503, body
    log = check_log(runtime, ref)
    receipts = [b["receipt"] for s, b, _ in answers if s == 201]
    assert receipts
    for r in receipts:  # every receipt handed out is in the log at its seq, with its leaf hash
        assert log.leaves[r["seq"]].hex() == r["leaf_hash"]


# --- PostgreSQL: a read-only database, a closed database ------------------------------------------


@contextmanager
def database_setting(runtime: Runtime, sql: str, undo: str) -> Iterator[None]:
    admin = _admin(runtime.db.url)
    dbname = make_url(runtime.db.url).database
    try:
        with admin.connect() as c:
            c.execute(text(sql.format(db=dbname)))
        _terminate_all(admin, str(dbname))  # the pool's connections were opened before the change
        yield
    finally:
        with admin.connect() as c:
            c.execute(text(undo.format(db=dbname)))
        admin.dispose()


def test_read_only_database_answers_503_and_readyz_says_why(client, runtime: Runtime, tokens) -> None:
    if runtime.db.is_sqlite:
        pytest.skip(PG_ONLY + " (a read-only SQLite file: test_read_only_sqlite_file_answers_503)")
    ref = load_reference()
    before = runtime.ledger.size()
    runtime.projector.sync_to_head()  # no projection can be applied while the database is read-only
    with database_setting(
        runtime,
        'ALTER DATABASE "{db}" SET default_transaction_read_only = on',
        'ALTER DATABASE "{db}" RESET default_transaction_read_only',
    ):
        r = client.post("/api/v1/lineage", json=run_event(), headers=auth(tokens.pipeline))
        _is_problem_503(r)
        assert "read-only" in r.get_json()["detail"]
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "read-only" in ready.get_json()["reason"]
        assert client.get("/api/v1/log/entries?limit=1", headers=auth(tokens.auditor)).status_code == 200
    admin = _admin(runtime.db.url)
    _terminate_all(admin, str(make_url(runtime.db.url).database))  # connections still read-only
    admin.dispose()
    assert client.post("/api/v1/lineage", json=run_event(), headers=auth(tokens.pipeline)).status_code == 201
    assert len(check_log(runtime, ref).headers) == before + 1


def test_closed_database_answers_503_then_recovers(client, runtime: Runtime, tokens) -> None:
    if runtime.db.is_sqlite:
        pytest.skip(PG_ONLY)
    ref = load_reference()
    before = runtime.ledger.size()
    with database_setting(
        runtime, 'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false', 'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true'
    ):
        _is_problem_503(client.post("/api/v1/lineage", json=run_event(), headers=auth(tokens.pipeline)))
        _is_problem_503(client.get("/api/v1/log/entries?limit=1", headers=auth(tokens.auditor)))
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "unreachable" in ready.get_json()["reason"]
    assert client.post("/api/v1/lineage", json=run_event(), headers=auth(tokens.pipeline)).status_code == 201
    assert client.get("/readyz").status_code == 200
    assert len(check_log(runtime, ref).headers) == before + 1


# --- SQLite: busy, read-only ----------------------------------------------------------------------


@pytest.fixture
def sqlite_runtime(tmp_path: Path, sqlite_template: Path) -> Callable[[str], Runtime]:
    made: list[Runtime] = []

    def make(query: str) -> Runtime:
        import shutil

        path = tmp_path / "ledger.db"
        if not path.exists():
            shutil.copyfile(sqlite_template, path)
            initialise(s := make_settings(tmp_path, f"sqlite:///{path}"), policy=shared_policy(s.policy_dir))
        name = f"file:{path}" if "uri=true" in query else str(path)  # SQLite's URI filenames
        s = make_settings(tmp_path, f"sqlite:///{name}{query}")
        rt = build_runtime(s, policy=shared_policy(s.policy_dir))
        made.append(rt)
        return rt

    yield make  # type: ignore[misc]
    for rt in made:
        rt.close()


def test_busy_sqlite_answers_503_and_writes_nothing(sqlite_runtime: Callable[[str], Runtime], tmp_path: Path) -> None:
    rt = sqlite_runtime("?timeout=0.3")
    client = create_app(runtime=rt).test_client()
    _, token = rt.principals.create("etl", roles=["pipeline", "auditor"])
    ref = load_reference()
    before = rt.ledger.size()
    rt.projector.sync_to_head()  # reads that need nothing new are served while a writer holds the lock
    holder = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds SQLite's one write lock
    try:
        r = client.post("/api/v1/lineage", json=run_event(), headers=auth(token))
        _is_problem_503(r)
        assert "busy" in r.get_json()["detail"]
        # Readers are not blocked by a writer (WAL).
        assert client.get("/api/v1/log/entries?limit=1", headers=auth(token)).status_code == 200
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert client.post("/api/v1/lineage", json=run_event(), headers=auth(token)).status_code == 201
    assert len(check_log(rt, ref).headers) == before + 1


def test_read_only_sqlite_file_answers_503(sqlite_runtime: Callable[[str], Runtime], tmp_path: Path) -> None:
    """The database opened read-only (as SQLite opens a file it may not write): appends answer 503,
    reads go on, and /readyz reports the failed write."""
    sqlite_runtime("")  # initialised read-write first
    rt = sqlite_runtime("?mode=ro&uri=true")
    client = create_app(runtime=rt).test_client()
    with sqlite3.connect(tmp_path / "ledger.db") as c:
        token_rows = c.execute("SELECT count(*) FROM principals").fetchone()[0]
    assert token_rows == 0
    writable = sqlite_runtime("")
    _, token = writable.principals.create("etl", roles=["pipeline", "auditor"])
    writable.projector.sync_to_head()  # the read-only host cannot apply projections itself
    before = rt.ledger.size()
    r = client.post("/api/v1/lineage", json=run_event(), headers=auth(token))
    _is_problem_503(r)
    assert "read-only" in r.get_json()["detail"]
    assert client.get("/api/v1/log/entries?limit=1", headers=auth(token)).status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "read-only" in ready.get_json()["reason"]
    assert writable.ledger.size() == before
