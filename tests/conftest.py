"""Shared fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL comes from LEDGER_TEST_POSTGRES_URL (default: the local server, database `test`). Each
test gets a database of its own, cloned from a template migrated once with `alembic upgrade head`.
Without PostgreSQL the PostgreSQL half is skipped locally, but fails under CI=true or
LEDGER_REQUIRE_POSTGRES=1: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ledger.config import Settings
from ledger.runtime import Runtime, build_runtime, initialise

PG_ADMIN_URL = os.environ.get("LEDGER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("CI", "").lower() == "true" or os.environ.get("LEDGER_REQUIRE_POSTGRES") == "1"
TEMPLATE_DB = f"ledger_tpl_{os.getpid()}"
REPO = Path(__file__).resolve().parent.parent


def _pg_available() -> str | None:
    try:
        eng = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(text("SELECT 1"))
        eng.dispose()
        return None
    except Exception as e:  # report why, and let the fixture skip or fail
        return f"{type(e).__name__}: {e}"


_PG_PROBLEM = _pg_available()
_TEMPLATE = {"ready": False}


def _admin_exec(sql: str) -> None:
    eng = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with eng.connect() as c:
            c.execute(text(sql))
    finally:
        eng.dispose()


def _pg_url(dbname: str) -> str:
    return make_url(PG_ADMIN_URL).set(database=dbname).render_as_string(hide_password=False)


def _ensure_template() -> None:
    if _TEMPLATE["ready"]:
        return
    from ledger.store.db import Database
    from ledger.store.migrate import upgrade

    _admin_exec(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"')
    _admin_exec(f'CREATE DATABASE "{TEMPLATE_DB}"')
    db = Database(_pg_url(TEMPLATE_DB))
    upgrade(db.engine)
    db.dispose()
    _TEMPLATE["ready"] = True


def new_pg_database() -> str:
    """A fresh, migrated PostgreSQL database; returns its URL."""
    if _PG_PROBLEM is not None:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required here but unreachable at {PG_ADMIN_URL}: {_PG_PROBLEM}")
        pytest.skip(f"PostgreSQL unreachable ({_PG_PROBLEM}); set LEDGER_TEST_POSTGRES_URL")
    _ensure_template()
    name = f"ledger_t_{uuid.uuid4().hex[:12]}"
    _admin_exec(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
    return _pg_url(name)


def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    _admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _TEMPLATE["ready"]:
        _admin_exec(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty, migrated database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    url = new_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


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
    s = make_settings(tmp_path, database_url)
    initialise(s)
    return s


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = build_runtime(settings)
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

    def ledger(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ledger.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=600,
        )

    def verifier_key(self) -> str:
        return self.ledger("keys", "verifier").stdout.strip()

    def add_principal(self, name: str, *roles: str, extra: tuple[str, ...] = ()) -> str:
        args = ["principals", "add", name]
        for r in roles:
            args += ["--role", r]
        return self.ledger(*args, *extra).stdout.strip().splitlines()[-1]


def start_server(tmp_path: Path, database_url: str, *, workers: int = 2, **env: str) -> Server:
    port = free_port()
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
    log_path = tmp_path / f"server-{port}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", "serve", "--port", str(port), "--workers", str(workers)],
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            log.close()
            raise RuntimeError(f"server exited: {log_path.read_text()}")
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
        time.sleep(0.2)
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
    with runtime.db.read() as s:
        for _, tables, _ in PROJECTIONS:
            for t in tables:
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
