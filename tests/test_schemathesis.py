"""schemathesis against the served OpenAPI document, every operation, on SQLite and PostgreSQL:
no 5xx, every response of the documented content type and matching its documented schema, and no
operation that needs a token answering without one."""

from __future__ import annotations

import atexit
import tempfile
from pathlib import Path

import conftest
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import (
    content_type_conformance,
    missing_required_header,
    not_a_server_error,
    response_schema_conformance,
)

from ledger.app import create_app
from ledger.runtime import build_runtime, initialise

CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance, missing_required_header]
ROLES = ["admin", "pipeline", "security", "auditor", "approver"]


def _served(database_url: str) -> tuple[object, str]:
    tmp = Path(tempfile.mkdtemp(prefix="ledger-schemathesis-"))
    settings = conftest.make_settings(tmp, database_url)
    initialise(settings)
    rt = build_runtime(settings)
    _, token = rt.principals.create("fuzzer", roles=ROLES)
    return create_app(runtime=rt), token


SQLITE_APP, SQLITE_TOKEN = _served(f"sqlite:///{Path(tempfile.mkdtemp()) / 'ledger.db'}")
sqlite_schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", SQLITE_APP)

if conftest._PG_PROBLEM is None:
    conftest._ensure_template()
    import uuid

    _PG_NAME = f"ledger_st_{uuid.uuid4().hex[:10]}"
    conftest._admin_exec(f'CREATE DATABASE "{_PG_NAME}" TEMPLATE "{conftest.TEMPLATE_DB}"')
    _PG_URL = conftest._pg_url(_PG_NAME)
    atexit.register(conftest.drop_pg_database, _PG_URL)
    PG_APP, PG_TOKEN = _served(_PG_URL)
    pg_schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", PG_APP)
else:
    pg_schema = sqlite_schema
    PG_TOKEN = ""

# Derandomized: CI sees the same examples every run (a fresh seed is one env var away: HYPOTHESIS_SEED).
FUZZ = hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@sqlite_schema.parametrize()
@FUZZ
def test_api_on_sqlite(case) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(headers={"Authorization": f"Bearer {SQLITE_TOKEN}"}, checks=CHECKS)


@pg_schema.parametrize()
@FUZZ
def test_api_on_postgres(case) -> None:  # type: ignore[no-untyped-def]
    if not PG_TOKEN:
        if conftest.REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required here but unreachable: {conftest._PG_PROBLEM}")
        pytest.skip("PostgreSQL unreachable")
    case.call_and_validate(headers={"Authorization": f"Bearer {PG_TOKEN}"}, checks=CHECKS)
