"""Hostile input, on SQLite and PostgreSQL: injection attempts in names (SQL, Rego, path traversal)
are stored as plain data and break nothing; huge strings and deep nesting are refused cleanly."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from conftest import auth
from events import dataset_event, run_event

HOSTILE = [
    "'; DROP TABLE log_entries; --",
    "x' OR '1'='1",
    'name"} deny contains "x" if { true }',
    "import rego.v1\npackage ledger.promotion",
    "../../../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%00null",
    "<script>alert(1)</script>",
    "$(rm -rf /)",
    "名前/ü/\u202e",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_injection_in_names_is_just_data(client, tokens, runtime, name: str) -> None:
    ev = run_event(namespace="etl", job=name, inputs=[{"namespace": "s3://raw", "name": name}])
    r = client.post("/api/v1/lineage", json=ev, headers=auth(tokens.pipeline))
    if r.status_code != 201:  # refused as invalid (control characters): a clean 4xx, nothing stored
        assert 400 <= r.status_code < 500 and r.mimetype == "application/problem+json", r.get_json()
        return
    stored = runtime.ledger.entry(r.get_json()["receipt"]["seq"])
    assert stored.payload["job"]["name"] == name
    # The tables are intact and the name reads back verbatim through the Marquez API.
    assert runtime.ledger.size() >= 2
    job = client.get(f"/api/v1/namespaces/etl/jobs/{quote(name, safe='')}", headers=auth(tokens.auditor))
    assert job.status_code in (200, 404)  # names with '/' may not route as one path segment
    if job.status_code == 200:
        assert job.get_json()["name"] == name
    g = client.get(f"/api/v1/lineage?nodeId={quote('job:etl:' + name, safe='')}&depth=1", headers=auth(tokens.auditor))
    assert g.status_code == 200 and any(n["id"] == f"job:etl:{name}" for n in g.get_json()["graph"])
    # The policy engine sees such names only as data.
    d = client.post(
        "/api/v1/policies/evaluate",
        headers=auth(tokens.security),
        json={
            "package": "ledger.access",
            "input": {
                "principal": {"name": name, "roles": ["auditor"], "clearances": []},
                "dataset": {"namespace": "s3://raw", "name": name, "tags": ["pii"]},
                "action": "read",
                "purpose": name,
                "config": {"allowed_purposes": {"pii": ["audit"]}},
            },
        },
    )
    assert d.status_code == 200 and d.get_json()["decision"]["allowed"] is False


@pytest.mark.parametrize("name", HOSTILE)
def test_injection_in_model_names_and_queries(client, tokens, runtime, name: str) -> None:
    size = runtime.ledger.size()
    r = client.post(f"/api/v1/models/{quote(name, safe='')}/versions", json={}, headers=auth(tokens.pipeline))
    assert r.status_code in (400, 404) and r.mimetype == "application/problem+json"
    r = client.get(f"/api/v1/log/entries?subject={quote(name, safe='')}", headers=auth(tokens.auditor))
    assert r.status_code in (200, 400)
    r = client.get(f"/api/v1/log/entries?kind={quote(name, safe='')}", headers=auth(tokens.auditor))
    assert r.status_code == 400 and r.get_json()["field"] == "kind"
    assert runtime.ledger.size() == size


def test_huge_strings_and_deep_nesting_are_refused_cleanly(client, tokens, runtime) -> None:
    size = runtime.ledger.size()
    big = dataset_event("s3://raw", "x" * 100_000)
    r = client.post("/api/v1/lineage", json=big, headers=auth(tokens.pipeline))
    assert r.status_code == 400 and r.get_json()["field"] == "/dataset/name"
    nested = '{"a":' * 5000 + '"leaf"' + "}" * 5000
    body = json.dumps(dataset_event())[:-1] + ', "extra": ' + nested + "}"
    r = client.post("/api/v1/lineage", data=body, content_type="application/json", headers=auth(tokens.pipeline))
    assert r.status_code == 400 and r.mimetype == "application/problem+json"
    r = client.post(
        "/api/v1/lineage", data="[" * 100_000, content_type="application/json", headers=auth(tokens.pipeline)
    )
    assert r.status_code == 400
    assert runtime.ledger.size() == size


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "p1", "roles": ["pipeline"], "namespaces": ["a\u0000b"]}, "namespaces"),
        ({"name": "p2", "roles": ["pipeline"], "namespaces": ["\udad5x"]}, "namespaces"),
        ({"name": "p3", "roles": ["pipeline"], "clearances": ["PII\u0000"]}, "clearances"),
        ({"name": "p4\u0000", "roles": ["pipeline"]}, "name"),
    ],
)
def test_regression_nul_in_principal_fields_was_a_500_on_postgres(client, tokens, body, field) -> None:
    """Found by schemathesis: NUL or a lone surrogate in a namespace or clearance reached PostgreSQL."""
    r = client.post(
        "/api/v1/principals", data=json.dumps(body), content_type="application/json", headers=auth(tokens.admin)
    )
    assert r.status_code == 400, r.get_json()
    assert field in r.get_json()["field"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/api/v1/access/decisions",
            '{"principal": "audit", "dataset": {"namespace": "a", "name": "b\\u0000"}, '
            '"action": "read", "purpose": "x"}',
        ),
        (
            "/api/v1/access/decisions",
            '{"principal": "audit", "dataset": {"namespace": "a", "name": "\\udad5"}, '
            '"action": "read", "purpose": "x"}',
        ),
        ("/api/v1/policies/evaluate", '{"input": {"k\\u0000": 1}}'),
    ],
)
def test_regression_nul_and_lone_surrogates_in_bodies_are_400(client, tokens, runtime, path, body) -> None:
    """Found by schemathesis: such strings reached PostgreSQL as query parameters and gave a 500."""
    size = runtime.ledger.size()
    r = client.post(path, data=body, content_type="application/json", headers=auth(tokens.security))
    assert r.status_code == 400, r.get_json()
    assert r.get_json()["field"].startswith("/")
    assert runtime.ledger.size() == size
    assert client.get("/api/v1/namespaces/a%00b/datasets", headers=auth(tokens.auditor)).status_code == 400
