"""The attacks of issue 10, each replayed against the real service (both databases): every one of
them succeeded before its fix."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from conftest import auth
from events import dataset, run_event


def _scoped(runtime: Any, name: str, *namespaces: str, roles: tuple[str, ...] = ("pipeline",)) -> str:
    return runtime.principals.create(name, roles=list(roles), namespaces=list(namespaces))[1]  # type: ignore[no-any-return]


def _size(client: Any, token: str) -> int:
    r = client.get("/api/v1/log/entries?limit=1000", headers=auth(token))
    assert r.status_code == 200
    return len(r.get_json()["entries"])


# --- 1. run hijack ---------------------------------------------------------------------------------


def test_a_run_belongs_to_the_job_that_first_recorded_it(client, runtime, tokens) -> None:
    team_a, team_b = _scoped(runtime, "team-a", "A"), _scoped(runtime, "team-b", "B")
    run_id = str(uuid.uuid4())
    r = client.post(
        "/api/v1/lineage",
        json=run_event(
            run_id=run_id,
            namespace="B",
            job="train",
            event_type="START",
            job_facets={"sourceCodeLocation": {"type": "git", "url": "u", "version": "good"}},
        ),
        headers=auth(team_b),
    )
    assert r.status_code == 201
    before = _size(client, tokens.auditor)
    hijack = run_event(
        run_id=run_id.upper(),
        namespace="A",
        job="evil",
        event_type="FAIL",
        job_facets={"sourceCodeLocation": {"type": "git", "url": "u", "version": "EVIL"}},
        run_facets={"errorMessage": {"message": "x", "programmingLanguage": "py"}},
    )
    r = client.post("/api/v1/lineage", json=hijack, headers=auth(team_a))
    assert r.status_code == 409
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.get_json()["field"] == "/run/runId"
    # In a batch: reported by index, the batch's other events recorded.
    ok = run_event(namespace="A", job="fine")
    r = client.post("/api/v1/lineage/batch", json=[ok, hijack], headers=auth(team_a))
    body = r.get_json()
    assert body["summary"] == {"received": 2, "successful": 1, "failed": 1}
    assert body["failed_events"][0]["index"] == 1 and body["failed_events"][0]["field"] == "/run/runId"
    assert _size(client, tokens.auditor) == before + 1  # only `ok`
    run = client.get(f"/api/v1/jobs/runs/{run_id}", headers=auth(tokens.auditor)).get_json()
    assert run["state"] == "RUNNING"
    assert run["jobVersion"] == {"namespace": "B", "name": "train", "version": "good"}
    assert run["facets"] == {} and run["principals"] == ["team-b"]
    # The owner job goes on recording its run; the admin (who writes anywhere) cannot move it either.
    r = client.post("/api/v1/lineage", json=run_event(run_id=run_id, namespace="B", job="train"), headers=auth(team_b))
    assert r.status_code == 201
    r = client.post(
        "/api/v1/lineage", json=run_event(run_id=run_id, namespace="B", job="other"), headers=auth(tokens.admin)
    )
    assert r.status_code == 409


def test_a_run_claimed_by_racing_jobs_goes_to_exactly_one(app, runtime, tokens) -> None:
    run_id = str(uuid.uuid4())
    n = 12
    barrier = threading.Barrier(n)
    codes: list[int] = []

    def post(i: int) -> None:
        c = app.test_client()
        barrier.wait()
        r = c.post(
            "/api/v1/lineage",
            json=run_event(run_id=run_id, namespace="ns", job=f"job{i}"),
            headers=auth(tokens.pipeline),
        )
        codes.append(r.status_code)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [201] + [409] * (n - 1)
    entries = client_entries(app, tokens.auditor, f"run:{run_id}")
    assert len(entries) == 1


def client_entries(app: Any, token: str, subject: str) -> list[dict[str, Any]]:
    r = app.test_client().get(f"/api/v1/log/entries?subject={subject}&limit=1000", headers=auth(token))
    assert r.status_code == 200
    return r.get_json()["entries"]  # type: ignore[no-any-return]


# --- 2. outputs in other namespaces ----------------------------------------------------------------


def test_a_scoped_pipeline_writes_outputs_only_in_its_namespaces(client, runtime, tokens) -> None:
    team_a, team_b = _scoped(runtime, "team-a", "A"), _scoped(runtime, "team-b", "B")
    good = {"schema": {"fields": [{"name": "id", "type": "int"}]}, "version": {"datasetVersion": "v1"}}
    r = client.post(
        "/api/v1/lineage",
        json=run_event(namespace="B", job="load", outputs=[dataset("B", "customers", **good)]),
        headers=auth(team_b),
    )
    assert r.status_code == 201
    before = _size(client, tokens.auditor)
    evil = {"schema": {"fields": [{"name": "evil", "type": "int"}]}, "version": {"datasetVersion": "v2"}}
    attack = run_event(
        namespace="A",
        job="steal",
        inputs=[dataset("B", "customers")],
        outputs=[dataset("A", "mine"), dataset("B", "customers", **evil)],
    )
    r = client.post("/api/v1/lineage", json=attack, headers=auth(team_a))
    assert r.status_code == 403
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.get_json()["field"] == "/outputs/1/namespace"
    r = client.post("/api/v1/lineage/batch", json=[attack], headers=auth(team_a))
    assert r.get_json()["failed_events"][0]["field"] == "/outputs/1/namespace"
    assert _size(client, tokens.auditor) == before
    ds = client.get("/api/v1/namespaces/B/datasets/customers", headers=auth(tokens.auditor)).get_json()
    assert ds["currentVersion"] == "v1" and [f["name"] for f in ds["fields"]] == ["id"]
    # Reading B is allowed: inputs may come from any namespace.
    r = client.post(
        "/api/v1/lineage",
        json=run_event(namespace="A", job="read", inputs=[dataset("B", "customers")], outputs=[dataset("A", "mine")]),
        headers=auth(team_a),
    )
    assert r.status_code == 201
