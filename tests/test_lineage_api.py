"""Lineage projections and the Marquez-compatible reads, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from conftest import auth
from events import dataset_event, run_event


def _post(client, token: str, event: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/lineage", json=event, headers=auth(token))
    assert r.status_code == 201, r.get_json()


def _io(ns: str, name: str, **facets: Any) -> dict[str, Any]:
    return {"namespace": ns, "name": name, "facets": facets}


def _chain(client, token: str, length: int) -> None:  # type: ignore[no-untyped-def]
    """d0 -> j1 -> d1 -> j2 -> d2 ... and a side branch j1 -> side."""
    for i in range(1, length + 1):
        outputs = [_io("wh", f"d{i}")] + ([_io("wh", "side")] if i == 1 else [])
        _post(client, token, run_event(namespace="dag", job=f"j{i}", inputs=[_io("wh", f"d{i - 1}")], outputs=outputs))


def _graph(client, token: str, node: str, **params: Any) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    q = "&".join(f"{k}={v}" for k, v in params.items())
    r = client.get(f"/api/v1/lineage?nodeId={quote(node)}&{q}", headers=auth(token))
    assert r.status_code == 200, r.get_json()
    return {n["id"]: n for n in r.get_json()["graph"]}


def test_lineage_graph_depth_and_direction(client, tokens) -> None:
    _chain(client, tokens.pipeline, 6)
    g = _graph(client, tokens.auditor, "dataset:wh:d3", depth=1)
    assert set(g) == {"dataset:wh:d2", "dataset:wh:d3", "dataset:wh:d4", "job:dag:j3", "job:dag:j4"}
    assert g["dataset:wh:d3"]["inEdges"] == [{"origin": "job:dag:j3", "destination": "dataset:wh:d3"}]
    assert g["dataset:wh:d3"]["outEdges"] == [{"origin": "dataset:wh:d3", "destination": "job:dag:j4"}]
    assert g["job:dag:j3"]["type"] == "JOB" and g["dataset:wh:d3"]["type"] == "DATASET"

    up = _graph(client, tokens.auditor, "dataset:wh:d3", depth=20, direction="upstream")
    assert {k for k in up if k.startswith("job")} == {"job:dag:j1", "job:dag:j2", "job:dag:j3"}
    assert "dataset:wh:d0" in up and "dataset:wh:d4" not in up
    down = _graph(client, tokens.auditor, "dataset:wh:d3", depth=2, direction="downstream")
    assert {k for k in down if k.startswith("job")} == {"job:dag:j4", "job:dag:j5"}
    both = _graph(client, tokens.auditor, "job:dag:j2", depth=20)
    assert "dataset:wh:side" in both and "job:dag:j6" in both  # siblings and descendants
    assert len(_graph(client, tokens.auditor, "job:dag:j1", depth=0)) == 4  # j1, d0, d1, side

    r = client.get("/api/v1/lineage?nodeId=nope:x&depth=2", headers=auth(tokens.auditor))
    assert r.status_code == 400 and r.get_json()["field"] == "nodeId"
    r = client.get("/api/v1/lineage?nodeId=dataset:wh:missing", headers=auth(tokens.auditor))
    assert r.status_code == 404
    r = client.get("/api/v1/lineage?nodeId=dataset:wh:d1&depth=-1", headers=auth(tokens.auditor))
    assert r.status_code == 400 and r.get_json()["field"] == "depth"


def test_runs_state_facets_versions_and_marquez_shapes(client, tokens) -> None:
    run_id = str(uuid.uuid4())
    src = {"type": "git", "url": "https://git.example/x", "version": "abc123"}
    _post(
        client,
        tokens.pipeline,
        dataset_event(
            "s3://raw", "customers", dataSource={"name": "crm", "uri": "pg://crm"}, version={"datasetVersion": "v1"}
        ),
    )
    _post(
        client,
        tokens.pipeline,
        run_event(
            event_type="START",
            run_id=run_id,
            job="clean",
            inputs=[_io("s3://raw", "customers", version={"datasetVersion": "v1"})],
            outputs=[
                _io(
                    "s3://clean",
                    "customers",
                    version={"datasetVersion": "c1"},
                    schema={"fields": [{"name": "id", "type": "int"}]},
                )
            ],
            job_facets={"sourceCodeLocation": src},
            run_facets={"a": {"x": 1}, "b": {"y": 1}},
        ),
    )
    run = client.get(f"/api/v1/jobs/runs/{run_id}", headers=auth(tokens.auditor)).get_json()
    assert run["state"] == "RUNNING" and run["jobVersion"]["version"] == "abc123"
    _post(
        client,
        tokens.pipeline,
        run_event(event_type="COMPLETE", run_id=run_id, job="clean", run_facets={"b": {"y": 2}, "c": {"z": 3}}),
    )
    run = client.get(f"/api/v1/jobs/runs/{run_id}", headers=auth(tokens.auditor)).get_json()
    assert run["state"] == "COMPLETED"  # Marquez's run state (DESIGN.md 8)
    # Facets are additive across a run's events; the same name replaces the earlier facet.
    assert run["facets"] == {"a": {"x": 1}, "b": {"y": 2}, "c": {"z": 3}}
    assert run["inputDatasetVersions"] == [
        {"datasetVersionId": {"namespace": "s3://raw", "name": "customers", "version": "v1"}, "facets": {}}
    ]
    assert len(run["entries"]) == 2

    ns = client.get("/api/v1/namespaces", headers=auth(tokens.auditor)).get_json()["namespaces"]
    assert {n["name"] for n in ns} == {"etl", "s3://raw", "s3://clean"}
    ds = client.get("/api/v1/namespaces/s3%3A%2F%2Fclean/datasets/customers", headers=auth(tokens.auditor)).get_json()
    assert ds["id"] == {"namespace": "s3://clean", "name": "customers"} and ds["currentVersion"] == "c1"
    assert ds["fields"] == [{"name": "id", "type": "int", "tags": [], "description": None}]
    raw = client.get(
        f"/api/v1/namespaces/{quote('s3://raw', safe='')}/datasets/customers", headers=auth(tokens.auditor)
    ).get_json()
    assert raw["declaredSource"] is True
    versions = client.get(
        "/api/v1/namespaces/s3%3A%2F%2Fclean/datasets/customers/versions", headers=auth(tokens.auditor)
    ).get_json()
    assert versions["versions"][0]["version"] == "c1"
    assert versions["versions"][0]["createdByRun"]["id"] == run_id
    listing = client.get("/api/v1/namespaces/s3%3A%2F%2Fclean/datasets", headers=auth(tokens.auditor)).get_json()
    assert listing["totalCount"] == 1
    job = client.get("/api/v1/namespaces/etl/jobs/clean", headers=auth(tokens.auditor)).get_json()
    assert job["latestRun"]["id"] == run_id and job["currentVersion"] == "abc123"
    assert job["inputs"] == [{"namespace": "s3://raw", "name": "customers"}]
    runs = client.get("/api/v1/namespaces/etl/jobs/clean/runs", headers=auth(tokens.auditor)).get_json()
    assert runs["totalCount"] == 1 and runs["runs"][0]["state"] == "COMPLETED"
    assert client.get("/api/v1/namespaces/nope/jobs", headers=auth(tokens.auditor)).status_code == 404
    assert client.get(f"/api/v1/jobs/runs/{uuid.uuid4()}", headers=auth(tokens.auditor)).status_code == 404


def test_pipeline_reads_only_its_namespaces(client, tokens, runtime) -> None:
    _chain(client, tokens.pipeline, 2)
    _, scoped = runtime.principals.create("team-a", roles=["pipeline"], namespaces=["team-a"])
    assert client.get("/api/v1/namespaces/dag/jobs", headers=auth(scoped)).status_code == 403
    assert client.get("/api/v1/namespaces", headers=auth(scoped)).get_json()["namespaces"] == []
    assert client.get("/api/v1/namespaces/dag/jobs", headers=auth(tokens.auditor)).status_code == 200
    assert client.get("/api/v1/namespaces", headers={}).status_code == 401


def test_concurrent_intake_projects_every_event(runtime, tokens) -> None:
    """Concurrent callers share a group transaction, and the projector applies them all: nothing is lost."""
    import threading

    from ledger.security.principals import AuthenticatedPrincipal

    who = AuthenticatedPrincipal("etl-nightly", frozenset({"pipeline"}))
    ids: list[str] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        for i in range(15):
            ev = run_event(
                namespace="conc", job=f"j{w}", inputs=[_io("wh", f"in{w}")], outputs=[_io("wh", f"out{w}-{i}")]
            )
            runtime.intake.record(ev, who)
            with lock:
                ids.append(ev["run"]["runId"])

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    from sqlalchemy import func, select

    from ledger.lineage.models import JobDataset, Run

    runtime.projector.sync_to_head()  # the projections follow the log
    with runtime.db.read() as s:
        assert s.execute(select(func.count()).select_from(Run)).scalar_one() == len(ids) == 90
        assert s.execute(select(func.count()).select_from(JobDataset)).scalar_one() == 6 + 90
