"""The Marquez reads added for compatibility, in-process, on SQLite and PostgreSQL: their parameters
are checked and bounded, and what they read is a projection the log rebuilds exactly."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import pytest
from conftest import auth, projection_snapshot
from events import run_event

from ledger.projections import rebuild_all


def _post(client: Any, token: str, event: dict[str, Any]) -> None:
    r = client.post("/api/v1/lineage", json=event, headers=auth(token))
    assert r.status_code == 201, r.get_json()


def _estate(client: Any, token: str) -> dict[str, str]:
    parent = str(uuid.uuid4())
    child = str(uuid.uuid4())
    _post(
        client,
        token,
        run_event(event_type="START", run_id=parent, namespace="airflow", job="dag", event_time="2026-11-30T11:00:00Z"),
    )
    source = {"dataSource": {"name": "crm", "uri": "postgres://db:5432/crm"}}
    lineage = {"fields": {"id": {"inputFields": [{"namespace": "pg", "name": "customers", "field": "id"}]}}}
    _post(
        client,
        token,
        run_event(
            run_id=child,
            namespace="spark",
            job="clean",
            inputs=[{"namespace": "pg", "name": "customers", "facets": source}],
            outputs=[{"namespace": "s3://lake", "name": "clean/customers", "facets": {"columnLineage": lineage}}],
            run_facets={
                "parent": {"run": {"runId": parent}, "job": {"namespace": "airflow", "name": "dag"}},
            },
            event_time="2026-11-30T13:00:00.123456789+01:00",
        ),
    )
    return {"parent": parent, "child": child}


def test_rebuild_reproduces_events_sources_and_parents(client, tokens, runtime) -> None:
    runs = _estate(client, tokens.pipeline)
    before = projection_snapshot(runtime)
    assert len(before["lineage_run_events"]) == 2
    rebuild_all(runtime.db)
    assert projection_snapshot(runtime) == before
    job = client.get("/api/v1/namespaces/spark/jobs/clean", headers=auth(tokens.auditor)).get_json()
    assert job["parentJobName"] == "dag" and job["latestRun"]["parentRunId"] == runs["parent"]
    events = client.get("/api/v1/events/lineage?sortDirection=asc", headers=auth(tokens.auditor)).get_json()
    assert [e["run"]["runId"] for e in events["events"]] == [runs["parent"], runs["child"]]
    late = client.get(
        "/api/v1/events/lineage?after=" + quote("2026-11-30T12:00:00.123456Z"), headers=auth(tokens.auditor)
    ).get_json()
    assert [e["run"]["runId"] for e in late["events"]] == [runs["child"]]  # eventTime compared in UTC
    assert client.get("/api/v1/sources/crm", headers=auth(tokens.auditor)).get_json()["connectionUrl"] == (
        "postgres://db:5432/crm"
    )


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/namespaces?limit=1001", "limit"),
        ("/api/v1/namespaces/spark/jobs?limit=0", "limit"),
        ("/api/v1/events/lineage?limit=5000", "limit"),
        ("/api/v1/events/lineage?before=yesterday", "before"),
        ("/api/v1/events/lineage?sortDirection=sideways", "sortDirection"),
        ("/api/v1/sources?offset=-1", "offset"),
        ("/api/v1/tags?limit=1001", "limit"),
        ("/api/v1/search", "q"),
        ("/api/v1/search?q=a&filter=model", "filter"),
        ("/api/v1/search?q=a&before=2026-13", "before"),
        ("/api/v1/column-lineage", "nodeId"),
        ("/api/v1/column-lineage?nodeId=dataset:s3://lake:clean/customers&withDownstream=maybe", "withDownstream"),
        ("/api/v1/column-lineage?nodeId=run:0190f2c4-7c1e-7a3b-9d7e-3b1f9c2d4e5f", "nodeId"),
    ],
)
def test_marquez_read_parameters_are_checked(client, tokens, path: str, field: str) -> None:
    _estate(client, tokens.pipeline)
    r = client.get(path, headers=auth(tokens.auditor))
    assert r.status_code == 400 and r.get_json()["field"] == field, (path, r.get_json())


def test_lists_are_paged(client, tokens) -> None:
    for i in range(5):
        _post(client, tokens.pipeline, run_event(namespace=f"ns{i}", job="j"))
    page = client.get("/api/v1/namespaces?limit=2&offset=1", headers=auth(tokens.auditor)).get_json()
    assert page["totalCount"] == 5 and [n["name"] for n in page["namespaces"]] == ["ns1", "ns2"]
    events = client.get("/api/v1/events/lineage?limit=2&offset=4", headers=auth(tokens.auditor)).get_json()
    assert events["totalCount"] == 5 and len(events["events"]) == 1
    hits = client.get("/api/v1/search?q=j&limit=3", headers=auth(tokens.auditor)).get_json()
    assert hits["totalCount"] == 3
