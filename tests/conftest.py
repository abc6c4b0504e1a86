"""Shared fixtures: every storage test runs on SQLite and on PostgreSQL.

The schema is migrated once per test process (`alembic upgrade head`): into a SQLite file that each
test copies, and into a PostgreSQL template database that each test clones. The policies are parsed
once per process too (`shared_policy`). Under pytest-xdist every worker is its own process, with its
own template, so workers never wait for each other.

PostgreSQL comes from LEDGER_TEST_POSTGRES_URL (default: the local server, database `test`). Without
it the PostgreSQL half is skipped locally, but fails under CI=true or LEDGER_REQUIRE_POSTGRES=1: CI must
never pass by skipping.

Every database a run creates carries the pid of the process that owns it (`ledger_tpl_<pid>`,
`ledger_t_<pid>_<hex>`). A run drops its own as it goes; one that was killed leaves them behind, and
the next run drops those whose owner is no longer alive, never another live run's.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from ledger.config import Settings
from ledger.policy.engine import PolicyEngine, load_policy_bundle
from ledger.runtime import Runtime, build_runtime, initialise

PG_ADMIN_URL = os.environ.get("LEDGER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("CI", "").lower() == "true" or os.environ.get("LEDGER_REQUIRE_POSTGRES") == "1"
TEMPLATE_DB = f"ledger_tpl_{os.getpid()}"  # this process's; an xdist worker is a process of its own
REPO = Path(__file__).resolve().parent.parent

# The names this suite gives its PostgreSQL databases, with the owner's pid in group 1.
_OWNED_DB = re.compile(r"ledger_tpl_([0-9]+)|ledger_t_([0-9]+)_[0-9a-f]+")


# --- PostgreSQL ----------------------------------------------------------------------------------


@functools.cache
def pg_problem() -> str | None:
    """Why PostgreSQL cannot be used (None if it can); asked once per process, on first need."""
    try:
        eng = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 10})
        with eng.connect() as c:
            c.execute(text("SELECT 1"))
        eng.dispose()
        return None
    except Exception as e:  # report why, and let the fixture skip or fail
        return f"{type(e).__name__}: {e}"


def require_pg() -> None:
    """Skips the calling test without PostgreSQL, or fails it where PostgreSQL is required."""
    problem = pg_problem()
    if problem is not None:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required here but unreachable at {PG_ADMIN_URL}: {problem}")
        pytest.skip(f"PostgreSQL unreachable ({problem}); set LEDGER_TEST_POSTGRES_URL")


@functools.cache
def _admin_engine() -> Engine:
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


def _admin_exec(sql: str) -> None:
    with _admin_engine().connect() as c:
        c.execute(text(sql))


def _pg_url(dbname: str) -> str:
    return make_url(PG_ADMIN_URL).set(database=dbname).render_as_string(hide_password=False)


_TEMPLATE = {"ready": False}


def _ensure_template() -> None:
    if _TEMPLATE["ready"]:
        return
    from ledger.store.db import Database
    from ledger.store.migrate import upgrade

    _admin_exec(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"')
    _admin_exec(f'CREATE DATABASE "{TEMPLATE_DB}"')
    _TEMPLATE["ready"] = True  # from here on, sessionfinish drops it
    db = Database(_pg_url(TEMPLATE_DB))
    try:
        upgrade(db.engine)
    finally:
        db.dispose()  # CREATE DATABASE ... TEMPLATE refuses a template anyone is connected to


class _Clones:
    """This process's clones of its template, made and dropped in the background while tests run.

    A CREATE DATABASE costs a few hundred milliseconds and a DROP DATABASE a checkpoint (PostgreSQL
    15), mostly waiting for the disk: one thread makes the next clone while a test uses the current
    one, another drops a test's clone after it, so tests wait for neither.
    """

    def __init__(self) -> None:
        self._maker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-clone-maker")
        self._dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-clone-dropper")
        self._lock = threading.Lock()
        self._next: Future[str] | None = None
        # At most this many clones wait to be dropped: when the disk is slower than the tests, they
        # wait rather than fill it (a clone is about 8 MB).
        self._backlog = threading.BoundedSemaphore(8)

    @staticmethod
    def _create() -> str:
        name = f"ledger_t_{os.getpid()}_{uuid.uuid4().hex[:12]}"
        _admin_exec(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
        return name

    def take(self) -> str:
        """A fresh clone's URL (the one made in the background, or a new one)."""
        with self._lock:
            made, self._next = self._next, None
            name = made.result() if made is not None else self._create()
            self._next = self._maker.submit(self._create)
        return _pg_url(name)

    def give_back(self, url: str) -> None:
        """Drops a clone in the background; one a killed run leaves is dropped by the next run."""
        self._backlog.acquire()

        def drop() -> None:
            try:
                drop_pg_database(url)
            finally:
                self._backlog.release()

        self._dropper.submit(drop)

    def close(self) -> None:
        """Drops the spare clone and waits for every pending drop."""
        with self._lock:
            spare, self._next = self._next, None
        self._maker.shutdown(wait=True)
        if spare is not None and spare.exception() is None:
            self._dropper.submit(drop_pg_database, _pg_url(spare.result()))
        self._dropper.shutdown(wait=True)


_CLONES: list[_Clones] = []


def _clones() -> _Clones:
    if not _CLONES:
        _CLONES.append(_Clones())
    return _CLONES[0]


def new_pg_database() -> str:
    """A fresh, migrated PostgreSQL database (a clone of this process's template); returns its URL."""
    require_pg()
    _ensure_template()
    return _clones().take()


def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    _admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, but alive
        return True
    return True


def drop_orphaned_databases() -> list[str]:
    """Drops the databases of runs that were killed: ours by name, whose owning pid is not alive.

    Only for a server on this machine, where a pid means something; other runs, live or not, that
    share the server are left alone. Returns the names dropped.
    """
    if make_url(PG_ADMIN_URL).host not in (None, "", "localhost", "127.0.0.1", "::1") or pg_problem() is not None:
        return []
    eng = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    dropped = []
    try:
        with eng.connect() as c:
            names = c.execute(text("SELECT datname FROM pg_database")).scalars().all()
            for name in names:
                m = _OWNED_DB.fullmatch(name)
                if m is None or _alive(int(m.group(1) or m.group(2))):
                    continue
                try:
                    c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                    dropped.append(name)
                except Exception:  # another run's clean-up got there first, or it is still in use
                    continue
    finally:
        eng.dispose()
    return dropped


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # once per run: in the xdist controller, or alone
        drop_orphaned_databases()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _CLONES:
        _CLONES.pop().close()  # before the template: a clone in the making reads it
    if _TEMPLATE["ready"]:
        _admin_exec(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
        _TEMPLATE["ready"] = False
    if _admin_engine.cache_info().currsize:
        _admin_engine().dispose()


# --- SQLite --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per process; tests get copies of it."""
    from ledger.store.db import Database
    from ledger.store.migrate import upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "ledger.db"
    db = Database(f"sqlite:///{path}")
    try:
        upgrade(db.engine)
        with db.engine.connect() as c:  # fold the WAL into the file, so the file alone is the database
            c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.dispose()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


# --- markers -------------------------------------------------------------------------------------


def _starts_a_server(item: pytest.Item) -> bool:
    code = getattr(getattr(item, "function", None), "__code__", None)
    return "server" in getattr(item, "fixturenames", ()) or (code is not None and "start_server" in code.co_names)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`postgres` marks the PostgreSQL half of every storage test; `slow` every test that starts a
    server process (the rest are marked where they are written). `-m "not postgres and not slow"` is
    the quick loop; CI runs everything."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("database_url") == "postgres":
            item.add_marker(pytest.mark.postgres)
        if _starts_a_server(item):
            item.add_marker(pytest.mark.slow)
    # Slow tests first, so that under xdist they overlap with the many quick ones instead of being
    # the last few a run waits for (a stable sort: the order within each group is kept).
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# --- databases, settings, runtime ----------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty, migrated database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "ledger.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    url = new_pg_database()
    try:
        yield url
    finally:
        _clones().give_back(url)


_POLICIES: dict[tuple[Path, tuple[tuple[str, bytes], ...]], PolicyEngine] = {}


def shared_policy(directory: Path) -> PolicyEngine:
    """The real policy engine for `directory`, parsed once per process for the same files.

    Keyed by the bytes of every `*.rego` file, so a test that writes policies of its own gets them.
    """
    files = tuple(sorted((p.name, p.read_bytes()) for p in directory.glob("*.rego") if p.is_file()))
    key = (directory.resolve(), files)
    if key not in _POLICIES:
        _POLICIES[key] = PolicyEngine(load_policy_bundle(directory))
    return _POLICIES[key]


def make_settings(tmp_path: Path, database_url: str, **env: str) -> Settings:
    base = {
        "LEDGER_DATA_DIR": str(tmp_path / "data"),
        "LEDGER_DATABASE_URL": database_url,
        "LEDGER_ORIGIN": "ledger.test/log",
        "LEDGER_POLICY_DIR": str(REPO / "policies"),
    }
    base.update(env)
    return Settings.from_env(base)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Settings of a test log on `database_url`, after `ledger init` (a real `initialise`)."""
    s = make_settings(tmp_path, database_url)
    initialise(s, policy=shared_policy(s.policy_dir))
    return s


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = build_runtime(settings, policy=shared_policy(settings.policy_dir))
    yield rt
    rt.close()


@dataclass
class Tokens:
    admin: str
    pipeline: str
    auditor: str
    approver: str
    security: str


@pytest.fixture
def tokens(runtime: Runtime) -> Tokens:
    p = runtime.principals
    return Tokens(
        admin=p.create("root", roles=["admin"])[1],
        pipeline=p.create("etl-nightly", roles=["pipeline"])[1],
        auditor=p.create("audit", roles=["auditor"])[1],
        approver=p.create("alice", roles=["approver"])[1],
        security=p.create("sec", roles=["security"], clearances=["pii"])[1],
    )


@pytest.fixture
def app(runtime: Runtime):  # type: ignore[no-untyped-def]
    from ledger.app import create_app

    application = create_app(runtime=runtime)
    application.config["TESTING"] = True
    return application


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- a real server process -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    admin_token: str
    log_path: Path
    log_file: Any = None

    def ledger(
        self, *args: str, check: bool = True, prefix: list[str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Runs a `ledger` command with the server's environment (`prefix`: e.g. `nsenter ...`)."""
        return subprocess.run(
            [*(prefix or []), sys.executable, "-m", "ledger.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=600,
        )

    def verifier_key(self, prefix: list[str] | None = None) -> str:
        return self.ledger("keys", "verifier", prefix=prefix).stdout.strip()

    def add_principal(
        self, name: str, *roles: str, extra: tuple[str, ...] = (), prefix: list[str] | None = None
    ) -> str:
        args = ["principals", "add", name]
        for r in roles:
            args += ["--role", r]
        return self.ledger(*args, *extra, prefix=prefix).stdout.strip().splitlines()[-1]


def start_server(
    tmp_path: Path, database_url: str, *, workers: int = 2, prefix: list[str] | None = None, **env: str
) -> Server:
    """`ledger serve` on a free loopback port, once `/healthz` answers; RuntimeError if it exits.

    `prefix` goes before the command (e.g. `unshare ...` to run it in a mount namespace of its own)."""
    full_env = dict(os.environ)
    full_env.update(
        {
            "LEDGER_DATA_DIR": str(tmp_path / "srv"),
            "LEDGER_DATABASE_URL": database_url,
            "LEDGER_ORIGIN": "ledger.test/e2e",
            "LEDGER_POLICY_DIR": str(REPO / "policies"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    full_env.update(env)
    tmp_path.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        try:
            return _start_server_on(free_port(), full_env, tmp_path, workers, prefix or [])
        except _PortTakenError:
            # Between free_port() closing its socket and the server binding, another process (a
            # parallel test, a client's ephemeral port) took the port: take another.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class _PortTakenError(RuntimeError):
    pass


def _start_server_on(port: int, full_env: dict[str, str], tmp_path: Path, workers: int, prefix: list[str]) -> Server:
    log_path = tmp_path / f"server-{port}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "ledger.cli", "serve", "--port", str(port), "--workers", str(workers)],
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            log.close()
            output = log_path.read_text()
            if f"127.0.0.1:{port}" in output and "in use" in output:
                raise _PortTakenError(f"server exited: {output}")
            raise RuntimeError(f"server exited: {output}")
        try:
            if requests.get(url + "/healthz", timeout=5).status_code == 200:
                break
        except requests.RequestException:  # not listening yet, or workers still booting
            pass
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            log.close()
            raise RuntimeError(f"server did not start: {log_path.read_text()}")
        time.sleep(0.1)
    token = ""
    for line in log_path.read_text().splitlines():
        if line.startswith("admin token: "):
            token = line.split(": ", 1)[1].strip()
    return Server(url=url, env=full_env, proc=proc, admin_token=token, log_path=log_path, log_file=log)


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
    if server.log_file is not None:
        server.log_file.close()


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    srv = start_server(tmp_path, database_url)
    try:
        yield srv
    finally:
        stop_server(srv)


def projection_snapshot(runtime: Any) -> dict[str, list[Any]]:
    """Every projection table's rows, comparable across a rebuild (JSON columns by value)."""
    import json

    from sqlalchemy import select

    from ledger.projections import PROJECTIONS

    out: dict[str, list[Any]] = {}
    runtime.projector.sync_to_head()  # the projections follow the log: let them catch up first
    with runtime.db.read() as s:
        for p in PROJECTIONS:
            for t in p.tables:
                rows = s.execute(select(t)).scalars().all()
                cols = [c.name for c in t.__table__.columns]
                out[t.__tablename__] = sorted(
                    tuple(json.dumps(getattr(r, c), sort_keys=True, default=str) for c in cols) for r in rows
                )
    return out


@pytest.fixture
def vkey(runtime: Runtime) -> str:
    """The verifier key line of the test log."""
    return runtime.ledger.signer.verifier.line()


@pytest.fixture
def base(runtime: Runtime, tokens: Tokens) -> int:
    """Entries in the log before the test posts anything (`ledger init` records the policy bundle)."""
    return runtime.ledger.size()


@pytest.fixture
def pipeline_runs(client, tokens: Tokens) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The example pipeline (raw source, clean, features, train) posted as the pipeline principal."""
    from pipeline import build_pipeline

    def post(event: dict[str, Any]) -> None:
        assert client.post("/api/v1/lineage", json=event, headers=auth(tokens.pipeline)).status_code == 201

    return build_pipeline(post)
