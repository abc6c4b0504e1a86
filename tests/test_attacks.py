"""The attacks of issue 10, each replayed against the real service (both databases): every one of
them succeeded before its fix."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import requests
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
    # Nor through an input's facets: only the version it read.
    r = client.post(
        "/api/v1/lineage",
        json=run_event(
            namespace="A", job="read", inputs=[dataset("B", "customers", **evil)], outputs=[dataset("A", "m")]
        ),
        headers=auth(team_a),
    )
    assert r.status_code == 403 and r.get_json()["field"] == "/inputs/0/facets/schema"
    r = client.post(
        "/api/v1/lineage",
        json=run_event(
            namespace="A",
            job="read",
            inputs=[dataset("B", "customers", version={"datasetVersion": "v1"})],
            outputs=[dataset("A", "mine", schema={"fields": []})],
        ),
        headers=auth(team_a),
    )
    assert r.status_code == 201
    ds = client.get("/api/v1/namespaces/B/datasets/customers", headers=auth(tokens.auditor)).get_json()
    assert [f["name"] for f in ds["fields"]] == ["id"]
    # Reading B is allowed: inputs may come from any namespace.
    r = client.post(
        "/api/v1/lineage",
        json=run_event(namespace="A", job="read", inputs=[dataset("B", "customers")], outputs=[dataset("A", "mine")]),
        headers=auth(team_a),
    )
    assert r.status_code == 201


# --- 3. PII in job and run facets ------------------------------------------------------------------

SSN = "078-05-1120"


def test_job_and_run_facets_follow_the_tags_of_the_data_their_runs_touched(client, runtime, tokens) -> None:
    from pipeline import registration

    post = lambda ev: client.post("/api/v1/lineage", json=ev, headers=auth(tokens.pipeline))  # noqa: E731
    assert post(run_event(namespace="B", job="load", outputs=[dataset("B", "customers")])).status_code == 201
    r = client.post(
        "/api/v1/datasets/B/customers/classification",
        json={"tags": ["pii"], "justification": "holds SSNs"},
        headers=auth(tokens.security),
    )
    assert r.status_code == 201, r.get_json()
    run_id = str(uuid.uuid4())
    sql = {"sql": {"query": f"SELECT * FROM customers WHERE ssn = '{SSN}'"}}
    out = dataset("B", "report", version={"datasetVersion": "r1"})
    assert (
        post(
            run_event(
                run_id=run_id,
                namespace="B",
                job="report",
                event_type="START",
                job_facets=sql,
                inputs=[dataset("B", "customers")],
                outputs=[out],
            )
        ).status_code
        == 201
    )
    # The run's last event names no dataset, yet its errorMessage holds the SSN.
    err = {"errorMessage": {"message": f"bad row {SSN}", "programmingLanguage": "python"}}
    assert (
        post(
            run_event(run_id=run_id, namespace="B", job="report", event_type="FAIL", job_facets=sql, run_facets=err)
        ).status_code
        == 201
    )
    r = client.post("/api/v1/models/m/versions", json=registration(run_id, "1"), headers=auth(tokens.pipeline))
    assert r.status_code == 201, r.get_json()
    seqs = [e["header"]["seq"] for e in client_entries(client.application, tokens.security, f"run:{run_id}")]
    routes = [
        "/api/v1/namespaces/B/jobs",
        "/api/v1/namespaces/B/jobs/report",
        "/api/v1/namespaces/B/jobs/report/runs",
        "/api/v1/namespaces/B/jobs/report/versions",
        f"/api/v1/jobs/runs/{run_id}",
        f"/api/v1/jobs/runs/{run_id}/facets?type=run",
        f"/api/v1/jobs/runs/{run_id}/facets?type=job",
        "/api/v1/namespaces/B/datasets/report/versions",
        "/api/v1/namespaces/B/datasets/report/versions/r1",
        "/api/v1/lineage?nodeId=job:B:report&depth=2",
        "/api/v1/lineage?nodeId=dataset:B:report&depth=2",
        "/api/v1/events/lineage",
        f"/api/v1/log/entries?subject=run:{run_id}",
        *(f"/api/v1/log/entries/{s}" for s in seqs),
        "/api/v1/log/export",
        "/api/v1/models/m/versions/1",
        "/api/v1/provenance/models/m/versions/1",
        "/api/v1/provenance/models/m/versions/1/bundle",
    ]
    uncleared = {
        "auditor": tokens.auditor,
        "approver": tokens.approver,
        "pipeline": tokens.pipeline,
        "admin": tokens.admin,
    }
    for route in routes:
        cleared = client.get(route, headers=auth(tokens.security))
        assert cleared.status_code == 200, (route, cleared.get_json())
        for who, token in uncleared.items():
            r = client.get(route, headers=auth(token))
            assert r.status_code == 200, (route, who)
            assert SSN not in r.get_data(as_text=True), (route, who)
    # The cleared principal reads them (so the checks above can fail).
    for route in (
        f"/api/v1/jobs/runs/{run_id}",
        "/api/v1/namespaces/B/jobs/report",
        f"/api/v1/jobs/runs/{run_id}/facets?type=job",
        "/api/v1/lineage?nodeId=job:B:report&depth=2",
    ):
        assert SSN in client.get(route, headers=auth(tokens.security)).get_data(as_text=True), route
    run = client.get(f"/api/v1/jobs/runs/{run_id}", headers=auth(tokens.auditor)).get_json()
    assert run["facets"]["redacted"] == {"facets": ["errorMessage"], "missing_clearances": ["pii"]}


# --- 4. scopes on models and provenance ------------------------------------------------------------


def _same_as_missing(present: Any, missing: Any, present_name: str, missing_name: str) -> None:
    """Two answers equal once the names they echo are swapped: out of scope reads as absent."""
    assert present.status_code == missing.status_code == 404
    assert present.get_data(as_text=True).replace(present_name, missing_name) == missing.get_data(as_text=True)


def test_models_and_provenance_belong_to_the_namespace_of_their_training_run(client, runtime, tokens) -> None:
    from pipeline import registration, validation

    team_a, team_b = _scoped(runtime, "team-a", "A"), _scoped(runtime, "team-b", "B")
    b_run, a_run = str(uuid.uuid4()), str(uuid.uuid4())
    post = lambda ev, t: client.post("/api/v1/lineage", json=ev, headers=auth(t))  # noqa: E731
    assert (
        post(run_event(run_id=b_run, namespace="B", job="train", outputs=[dataset("B", "x")]), team_b).status_code
        == 201
    )
    assert (
        post(
            run_event(
                run_id=a_run, namespace="A", job="train", inputs=[dataset("B", "x")], outputs=[dataset("A", "m")]
            ),
            team_a,
        ).status_code
        == 201
    )
    assert (
        client.post("/api/v1/models/bm/versions", json=registration(b_run, "1"), headers=auth(team_b)).status_code
        == 201
    )
    assert (
        client.post("/api/v1/models/am/versions", json=registration(a_run, "1"), headers=auth(team_a)).status_code
        == 201
    )

    # Reads: B's model is absent for A, exactly as a missing one.
    assert [m["name"] for m in client.get("/api/v1/models", headers=auth(team_a)).get_json()["models"]] == ["am"]
    assert [m["name"] for m in client.get("/api/v1/models", headers=auth(tokens.auditor)).get_json()["models"]] == [
        "am",
        "bm",
    ]
    for path in (
        "/api/v1/models/{}/versions/1",
        "/api/v1/provenance/models/{}/versions/1",
        "/api/v1/provenance/models/{}/versions/1/bundle",
    ):
        _same_as_missing(
            client.get(path.format("bm"), headers=auth(team_a)),
            client.get(path.format("nosuch"), headers=auth(team_a)),
            "bm",
            "nosuch",
        )
        assert client.get(path.format("bm"), headers=auth(team_b)).status_code == 200
    # Writes: as about a missing version, or a missing training run.
    for path, body in (
        ("/api/v1/models/{}/versions/1/validations", validation("performance")),
        ("/api/v1/models/{}/versions/1/promotions", {"stage": "staging"}),
        ("/api/v1/models/{}/versions/1/deployments", {"stage": "staging", "environment": "prod"}),
    ):
        _same_as_missing(
            client.post(path.format("bm"), json=body, headers=auth(team_a)),
            client.post(path.format("nosuch"), json=body, headers=auth(team_a)),
            "bm",
            "nosuch",
        )
    missing_run = str(uuid.uuid4())
    _same_as_missing(
        client.post("/api/v1/models/evil/versions", json=registration(b_run, "1"), headers=auth(team_a)),
        client.post("/api/v1/models/evil/versions", json=registration(missing_run, "1"), headers=auth(team_a)),
        b_run,
        missing_run,
    )
    r = client.post("/api/v1/models/bm/versions", json=registration(a_run, "2"), headers=auth(team_a))
    assert r.status_code == 403 and r.get_json()["field"] == "name"
    # A's own model trained on B's data: its provenance and graph name nothing of B's runs or jobs.
    report = client.get("/api/v1/provenance/models/am/versions/1", headers=auth(team_a)).get_json()
    assert [r["id"] for r in report["upstream"]["runs"]] == [a_run]
    assert [j["namespace"] for j in report["upstream"]["jobs"]] == ["A"]
    assert {d["namespace"] for d in report["upstream"]["datasets"]} <= {"A"}
    bundle = client.get("/api/v1/provenance/models/am/versions/1/bundle", headers=auth(team_a)).get_data(as_text=True)
    assert b_run not in bundle.replace(f"run:{b_run}", "")  # entry headers are public; nothing else names it
    job = client.get("/api/v1/namespaces/A/jobs/train", headers=auth(team_a)).get_json()
    assert job["inputs"] == [] and job["outputs"] == [{"namespace": "A", "name": "m"}]
    run = client.get(f"/api/v1/jobs/runs/{a_run}", headers=auth(team_a)).get_json()
    assert [v["datasetVersionId"]["namespace"] for v in run["inputDatasetVersions"]] == []
    graph = client.get("/api/v1/lineage?nodeId=dataset:A:m&depth=5", headers=auth(team_a)).get_json()
    assert "B" not in {n["id"].split(":")[1] for n in graph["graph"]}
    assert "B:" not in str([n["inEdges"] + n["outEdges"] for n in graph["graph"]])
    # A node of B answers as a missing node does.
    _same_as_missing(
        client.get("/api/v1/lineage?nodeId=dataset:B:x", headers=auth(team_a)),
        client.get("/api/v1/lineage?nodeId=dataset:B:nosuch", headers=auth(team_a)),
        "B:x",
        "B:nosuch",
    )
    _same_as_missing(
        client.get("/api/v1/lineage?nodeId=job:B:train", headers=auth(team_a)),
        client.get("/api/v1/lineage?nodeId=job:B:nosuch", headers=auth(team_a)),
        "B:train",
        "B:nosuch",
    )
    assert client.get("/api/v1/lineage?nodeId=dataset:B:x", headers=auth(team_b)).status_code == 200


# --- 7. the guess limiter --------------------------------------------------------------------------


def test_the_guess_limiter_never_refuses_a_valid_token_and_is_shared(settings, runtime, tokens) -> None:
    from conftest import shared_policy

    from ledger.errors import AuthenticationError, RateLimitedError
    from ledger.runtime import build_runtime

    other = build_runtime(settings, policy=shared_policy(settings.policy_dir))  # another worker or host
    try:
        stores = [runtime.principals, other.principals]
        limit = runtime.principals.max_failures
        for i in range(limit):  # alternately on each: one count for both
            with pytest.raises(AuthenticationError) as e:
                stores[i % 2].authenticate("lgr_guess", client="203.0.113.9")
            assert not isinstance(e.value, RateLimitedError), i
        for store in stores:
            with pytest.raises(RateLimitedError):
                store.authenticate("lgr_guess", client="203.0.113.9")
            # A valid token from the same address (a proxy everyone shares) is never refused.
            assert store.authenticate(tokens.auditor, client="203.0.113.9").name == "audit"
        assert runtime.principals.authenticate(tokens.pipeline, client="203.0.113.9").name == "etl-nightly"
        with pytest.raises(AuthenticationError) as e:  # another address is not held off
            other.principals.authenticate("lgr_guess", client="203.0.113.10")
        assert not isinstance(e.value, RateLimitedError)
    finally:
        other.close()


def test_the_guess_count_is_bounded(runtime) -> None:
    from sqlalchemy import func, select

    from ledger.errors import AuthenticationError
    from ledger.security.principals import PrincipalStore
    from ledger.store.models import AuthFailure

    store = PrincipalStore(runtime.db, window_seconds=0.05)
    largest = 0
    for i in range(300):
        with pytest.raises(AuthenticationError):
            store.authenticate("lgr_guess", client=f"198.51.100.{i % 256}/{i}")
        if i % 20 == 0:
            time.sleep(0.06)  # a window passes: the next new window drops the old rows
            with runtime.db.read() as s:
                largest = max(largest, s.execute(select(func.count()).select_from(AuthFailure)).scalar_one())
    assert largest <= 21


# --- 9. names, revocation and rotation -------------------------------------------------------------


def test_names_are_nfc_and_invisible_characters_are_refused(client, runtime, tokens) -> None:
    import unicodedata

    nfd = unicodedata.normalize("NFD", "données")
    assert nfd != "données"
    r = client.post("/api/v1/lineage", json=run_event(namespace=nfd, job=f"clé-{nfd}"), headers=auth(tokens.pipeline))
    assert r.status_code == 201
    r = client.post(
        "/api/v1/lineage", json=run_event(namespace="données", job="clé-données"), headers=auth(tokens.pipeline)
    )
    assert r.status_code == 201
    names = client.get("/api/v1/namespaces", headers=auth(tokens.auditor)).get_json()["namespaces"]
    assert [n["name"] for n in names if n["name"].startswith("donn")] == ["données"]  # one name, not two
    jobs = client.get(f"/api/v1/namespaces/{nfd}/jobs", headers=auth(tokens.auditor)).get_json()["jobs"]
    assert [j["name"] for j in jobs] == ["clé-données"]
    assert client.get(f"/api/v1/lineage?nodeId=job:{nfd}:clé-{nfd}", headers=auth(tokens.auditor)).status_code == 200
    for bad, field in (
        (run_event(namespace="etl", job="gpj.\u202eexe"), "/job/name"),
        (run_event(namespace="e\u200btl"), "/job/namespace"),
        (run_event(outputs=[dataset("etl", "cus\u2060tomers")]), "/outputs/0/name"),
        (run_event(inputs=[dataset("\ufeffetl", "x")]), "/inputs/0/namespace"),
    ):
        r = client.post("/api/v1/lineage", json=bad, headers=auth(tokens.pipeline))
        assert r.status_code == 400 and r.get_json()["field"] == field, r.get_json()
    r = client.post(
        "/api/v1/principals",
        json={"name": "ml", "roles": ["pipeline"], "namespaces": ["ml\u202e"]},
        headers=auth(tokens.admin),
    )
    assert r.status_code == 400 and r.get_json()["field"] == "namespaces"
    p, _ = runtime.principals.create("team-nfd", roles=["pipeline"], namespaces=[nfd])
    assert p.namespaces == {"données"}


def test_revoked_and_rotated_tokens_answer_401_at_once_on_every_worker(tmp_path, database_url) -> None:
    from conftest import start_server, stop_server

    srv = start_server(tmp_path, database_url)  # two worker processes
    try:
        url = f"{srv.url}/api/v1/log/entries?limit=1"
        token = srv.add_principal("reader", "auditor")
        for _ in range(10):  # both workers have seen it
            assert requests.get(url, headers=auth(token), timeout=10).status_code == 200
        r = srv.ledger("principals", "revoke", "reader")
        assert r.returncode == 0
        codes = [requests.get(url, headers=auth(token), timeout=10).status_code for _ in range(4)]
        assert codes == [401] * 4
        r = srv.ledger("principals", "rotate", "reader")
        new = r.stdout.strip().splitlines()[-1]
        assert [requests.get(url, headers=auth(new), timeout=10).status_code for _ in range(6)] == [200] * 6
        # Over the admin API.
        r = requests.post(f"{srv.url}/api/v1/principals/reader/rotation", headers=auth(srv.admin_token), timeout=10)
        assert r.status_code == 201
        newer = r.json()["token"]
        assert [requests.get(url, headers=auth(new), timeout=10).status_code for _ in range(3)] == [401] * 3
        assert [requests.get(url, headers=auth(newer), timeout=10).status_code for _ in range(6)] == [200] * 6
        r = requests.post(f"{srv.url}/api/v1/principals/reader/revocation", headers=auth(srv.admin_token), timeout=10)
        assert r.status_code == 200
        assert [requests.get(url, headers=auth(newer), timeout=10).status_code for _ in range(3)] == [401] * 3
        r = requests.post(f"{srv.url}/api/v1/principals/nobody/revocation", headers=auth(srv.admin_token), timeout=10)
        assert r.status_code == 404 and r.json()["field"] == "name"
        assert srv.ledger("principals", "revoke", "nobody", check=False).returncode != 0
        # The guess limiter counts across both workers: 20 failures in all get 401 (10 so far above).
        codes = [requests.get(url, headers=auth("lgr_guess"), timeout=10).status_code for _ in range(12)]
        assert codes == [401] * 10 + [429] * 2
        assert requests.get(url, headers=auth(srv.admin_token), timeout=10).status_code == 200
    finally:
        stop_server(srv)


# --- 8. erasure leaves no copies -------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Any, database_url: str) -> Any:
    """This module's logs rewrite the tables an erasure touched (LEDGER_ERASURE_REWRITE=1): plain
    VACUUM, the default, may leave an erased row's bytes in a page's free space on PostgreSQL."""
    from conftest import initialise, make_settings, shared_policy

    s = make_settings(tmp_path, database_url, LEDGER_ERASURE_REWRITE="1")
    initialise(s, policy=shared_policy(s.policy_dir))
    return s


def _holding(runtime: Any, data: bytes) -> list[str]:
    """The database's files holding `data`: SQLite's file, WAL and shared memory; PostgreSQL's heap
    and TOAST files of every table (read through the server, as the test's superuser)."""
    from pathlib import Path

    from sqlalchemy import text

    db = runtime.db
    if db.is_sqlite:
        path = Path(db.engine.url.database)
        return [p.name for p in path.parent.glob(path.name + "*") if data in p.read_bytes()]
    found = []
    with db.engine.connect() as c:
        c.exec_driver_sql("CHECKPOINT")  # the heap on disk is the heap as it stands
        files = c.execute(
            text(
                "SELECT relname, pg_relation_filepath(oid) FROM pg_class WHERE relkind IN ('r', 't', 'i') "
                "AND relnamespace IN ('public'::regnamespace, 'pg_toast'::regnamespace)"
            )
        ).all()
        for name, f in files:
            size = c.execute(text("SELECT (pg_stat_file(:f, true)).size"), {"f": f}).scalar() if f else None
            if size and data in c.execute(text("SELECT pg_read_binary_file(:f)"), {"f": f}).scalar_one():
                found.append(name)
    return found


def test_an_erasure_leaves_no_copy_in_the_database_files(client, runtime, tokens, settings) -> None:
    import os
    import stat

    secret = f"SSN-{uuid.uuid4().hex}"
    event = run_event(
        namespace="etl", job="leaky", run_facets={"errorMessage": {"message": secret, "programmingLanguage": "py"}}
    )
    r = client.post("/api/v1/lineage", json=event, headers=auth(tokens.pipeline))
    assert r.status_code == 201
    seq = r.get_json()["receipt"]["seq"]
    client.get(f"/api/v1/jobs/runs/{event['run']['runId']}", headers=auth(tokens.auditor))  # projected too
    assert _holding(runtime, secret.encode())  # the check below can fail
    r = client.post(
        f"/api/v1/log/entries/{seq}/erasure", json={"reason": "GDPR art. 17"}, headers=auth(tokens.security)
    )
    assert r.status_code == 201, r.get_json()
    # The projector replays the erasure and then scrubs, after the request: wait for it (bounded).
    client.get(f"/api/v1/jobs/runs/{event['run']['runId']}", headers=auth(tokens.auditor))
    deadline = time.monotonic() + 30
    while (held := _holding(runtime, secret.encode())) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert held == []
    # Posting the same event again cannot confirm a guess: it is a new entry, not the erased one.
    r = client.post("/api/v1/lineage", json=event, headers=auth(tokens.pipeline))
    assert r.status_code == 201 and r.get_json()["receipt"]["seq"] != seq
    # Dedup keys are keyed with the server's secret: not the plain digest of the event.
    import hashlib

    import rfc8785

    plain = hashlib.sha256(rfc8785.dumps(event)).hexdigest()
    with runtime.db.read() as s:
        from sqlalchemy import text

        keys = [k for (k,) in s.execute(text("SELECT dedup_key FROM log_entries WHERE dedup_key IS NOT NULL"))]
    assert keys and not any(plain in k for k in keys)
    # The data directory and its files are the owner's alone.
    data = settings.data_dir
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    for p in data.iterdir():
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    if runtime.db.is_sqlite:
        from pathlib import Path

        db_path = Path(runtime.db.engine.url.database)
        for p in db_path.parent.glob(db_path.name + "*"):
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


def test_a_new_sqlite_database_is_private_from_its_first_byte(tmp_path) -> None:
    import os
    import stat

    from ledger.config import Settings
    from ledger.runtime import initialise

    old = os.umask(0o022)
    try:
        s = Settings.from_env({"LEDGER_DATA_DIR": str(tmp_path / "d"), "LEDGER_ORIGIN": "ledger.test/p"})
        initialise(s)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o700
    files = [p for p in (tmp_path / "d").iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"ledger.db", "signing-key.pem"}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o600 for p in files}


def test_the_dedup_secret_comes_with_the_signing_key(tmp_path: Any) -> None:
    """A second host with only the key file (and the database URL) keys dedup as the first does;
    another key gives another secret; LEDGER_DEDUP_KEY pins one file across rotations."""
    from ledger.config import Settings
    from ledger.runtime import initialise
    from ledger.security.keys import dedup_secret

    first = Settings.from_env({"LEDGER_DATA_DIR": str(tmp_path / "a"), "LEDGER_ORIGIN": "ledger.test/p"})
    initialise(first)
    other = Settings.from_env({"LEDGER_DATA_DIR": str(tmp_path / "b"), "LEDGER_ORIGIN": "ledger.test/q"})
    initialise(other)
    one = dedup_secret(None, first.data_dir, first.signing_key_path)
    assert len(one) == 32
    assert dedup_secret(None, tmp_path / "elsewhere", first.signing_key_path) == one
    assert dedup_secret(None, other.data_dir, other.signing_key_path) != one
    pinned = dedup_secret(tmp_path / "pinned", first.data_dir, first.signing_key_path)
    assert pinned != one and dedup_secret(tmp_path / "pinned", other.data_dir, other.signing_key_path) == pinned
