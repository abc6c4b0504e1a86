"""The Marquez reads added for compatibility, in-process, on SQLite and PostgreSQL: their parameters
are checked and bounded, what they read is a projection the log rebuilds exactly, and job versions,
run facets, upstream run lineage and stats have Marquez's shapes, scope and redaction."""

from __future__ import annotations

import hashlib
import itertools
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from conftest import auth, projection_snapshot
from events import PRODUCER, SCHEMA, run_event

from ledger.projections import rebuild_all
from ledger.reads import lineage as queries
from ledger.tlog.entry import format_time


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
    rebuild_all(runtime.projector)
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


# --- job versions, run facets, upstream run lineage, stats ---------------------------------------

MARQUEZ_TIME = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")
GIT = "https://git.example/etl.git"


def _get(client: Any, token: str, path: str, status: int = 200) -> Any:
    r = client.get(path, headers=auth(token))
    assert r.status_code == status, (path, r.get_json())
    return r.get_json()


def _code(version: str) -> dict[str, Any]:
    return {"sourceCodeLocation": {"type": "git", "url": f"{GIT}#{version}", "version": version}}


def _io(namespace: str, name: str, version: str | None = None) -> dict[str, Any]:
    return {"namespace": namespace, "name": name, "facets": {"version": {"datasetVersion": version}} if version else {}}


def _classify(client: Any, token: str, namespace: str, name: str) -> None:
    r = client.post(
        f"/api/v1/datasets/{quote(namespace, safe='')}/{quote(name, safe='')}/classification",
        json={"tags": ["pii"], "justification": "customer emails"},
        headers=auth(token),
    )
    assert r.status_code == 201, r.get_json()


def test_job_versions_are_the_code_versions_of_the_runs(client, tokens, runtime) -> None:
    """One version per code version the job's runs recorded, newest first; a version only a JobEvent
    declared so far comes first, with the job's datasets and no run; the rebuild reproduces them."""
    first, second, third = (str(uuid.uuid4()) for _ in range(3))
    job = {"namespace": "spark", "job": "clean"}
    for event_type in ("START", "COMPLETE"):
        _post(
            client,
            tokens.pipeline,
            run_event(
                event_type=event_type,
                run_id=first,
                **job,
                job_facets=_code("release/1.0"),
                inputs=[_io("pg", "customers")],
                outputs=[_io("s3://lake", "clean/customers", "c1")],
            ),
        )
    _post(client, tokens.pipeline, run_event(run_id=second, **job, job_facets=_code("release/1.0")))
    source = {"sourceCode": {"language": "python", "sourceCode": "print(1)"}}
    _post(client, tokens.pipeline, run_event(run_id=third, **job, job_facets=source, inputs=[_io("pg", "orders")]))
    declared = {
        "eventTime": "2026-11-30T12:00:00Z",
        "producer": PRODUCER,
        "schemaURL": f"{SCHEMA}#/definitions/JobEvent",
        "job": {"namespace": "spark", "name": "clean", "facets": _code("v3")},
        "inputs": [],
        "outputs": [],
    }
    _post(client, tokens.pipeline, declared)
    digest = "sha256:" + hashlib.sha256(b"print(1)").hexdigest()

    page = _get(client, tokens.auditor, "/api/v1/namespaces/spark/jobs/clean/versions")
    assert page["totalCount"] == 3
    assert [v["version"] for v in page["versions"]] == ["v3", digest, "release/1.0"]
    v3, source_version, release = page["versions"]
    assert release["id"] == {"namespace": "spark", "name": "clean", "version": "release/1.0"}
    assert release["name"] == "clean" and release["namespace"] == "spark"
    assert release["location"] == f"{GIT}#release/1.0" and release["latestRun"]["id"] == second
    assert release["latestRun"]["jobVersion"]["version"] == "release/1.0"
    assert release["inputs"] == [{"namespace": "pg", "name": "customers"}]
    assert release["outputs"] == [{"namespace": "s3://lake", "name": "clean/customers"}]
    assert source_version["location"] is None and source_version["latestRun"]["id"] == third
    assert source_version["inputs"] == [{"namespace": "pg", "name": "orders"}] and source_version["outputs"] == []
    assert v3["latestRun"] is None and v3["location"] == f"{GIT}#v3"
    assert {d["name"] for d in v3["inputs"]} == {"customers", "orders"}
    assert all(MARQUEZ_TIME.match(v["createdAt"]) for v in page["versions"])
    assert release["createdAt"] <= source_version["createdAt"] <= v3["createdAt"]

    # The job's currentVersion names one of them; each is read by its own URL-encoded segment.
    job_read = _get(client, tokens.auditor, "/api/v1/namespaces/spark/jobs/clean")
    assert job_read["currentVersion"] == "v3"
    for v in page["versions"]:
        one = _get(
            client, tokens.auditor, f"/api/v1/namespaces/spark/jobs/clean/versions/{quote(v['version'], safe='')}"
        )
        assert one == v
    _get(client, tokens.auditor, "/api/v1/namespaces/spark/jobs/clean/versions/nope", 404)
    _get(client, tokens.auditor, "/api/v1/namespaces/spark/jobs/nojob/versions", 404)

    # Paged, the declared version counted first.
    paged = [
        [
            v["version"]
            for v in _get(client, tokens.auditor, f"/api/v1/namespaces/spark/jobs/clean/versions?{q}")["versions"]
        ]
        for q in ("limit=1", "limit=1&offset=1", "limit=2&offset=1", "offset=3")
    ]
    assert paged == [["v3"], [digest], [digest, "release/1.0"], []]
    _get(client, tokens.auditor, "/api/v1/namespaces/spark/jobs/clean/versions?limit=1001", 400)

    # Scope: a pipeline scoped to another namespace reads none of it.
    team = runtime.principals.create("team", roles=["pipeline"], namespaces=["team-a"])[1]
    _get(client, team, "/api/v1/namespaces/spark/jobs/clean/versions", 403)
    _get(client, team, "/api/v1/namespaces/spark/jobs/clean/versions/v3", 403)

    rebuild_all(runtime.projector)
    assert _get(client, tokens.auditor, "/api/v1/namespaces/spark/jobs/clean/versions") == page


def test_run_facets_are_the_runs_and_its_events_job_facets(client, tokens, runtime) -> None:
    run_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    job = {"namespace": "spark", "job": "load"}
    nominal = {"nominalTime": {"nominalStartTime": "2026-11-30T12:00:00Z"}}
    pii = [{"namespace": "pg", "name": "emails", "facets": {"schema": {"fields": [{"name": "email"}]}}}]
    _post(
        client,
        tokens.pipeline,
        run_event(
            event_type="START", run_id=run_id, **job, job_facets={"sql": {"query": "select 1"}}, run_facets=nominal
        ),
    )
    _post(
        client,
        tokens.pipeline,
        run_event(
            run_id=run_id,
            **job,
            job_facets={"sql": {"query": "select 2"}, "documentation": {"description": "loads"}},
            run_facets={"custom": {"a": 1}},
            outputs=pii,
        ),
    )
    _post(client, tokens.pipeline, run_event(run_id=other, **job, job_facets={"sql": {"query": "select 3"}}))
    _classify(client, tokens.security, "pg", "emails")

    for token in (tokens.security, tokens.auditor):  # with and without the pii clearance
        run = _get(client, token, f"/api/v1/jobs/runs/{run_id}")
        facets = _get(client, token, f"/api/v1/jobs/runs/{run_id}/facets?type=run")
        assert facets == {"runId": run_id, "facets": run["facets"]}  # as the run read serves them
        job_facets = _get(client, token, f"/api/v1/jobs/runs/{run_id}/facets?type=JOB")
        assert job_facets["runId"] == run_id
    # The run wrote data classified pii: its facets follow that data's tags (issue 10).
    facets = _get(client, tokens.security, f"/api/v1/jobs/runs/{run_id}/facets?type=run")["facets"]
    assert set(facets) == {"nominalTime", "custom"}
    assert _get(client, tokens.security, f"/api/v1/jobs/runs/{run_id}/facets?type=job")["facets"] == {
        "sql": {"query": "select 2"},
        "documentation": {"description": "loads"},
    }
    withheld = {"facets": ["custom", "nominalTime"], "missing_clearances": ["pii"]}
    run_facets = _get(client, tokens.auditor, f"/api/v1/jobs/runs/{run_id}/facets?type=run")["facets"]
    assert run_facets == {"redacted": withheld}
    assert _get(client, tokens.auditor, f"/api/v1/jobs/runs/{run_id}/facets?type=job")["facets"] == {
        "redacted": {"facets": ["documentation", "sql"], "missing_clearances": ["pii"]}
    }
    # Each run's own job facets, not the job's latest.
    assert _get(client, tokens.auditor, f"/api/v1/jobs/runs/{other}/facets?type=job")["facets"] == {
        "sql": {"query": "select 3"}
    }

    assert _get(client, tokens.auditor, f"/api/v1/jobs/runs/{run_id}/facets", 400)["field"] == "type"
    assert _get(client, tokens.auditor, f"/api/v1/jobs/runs/{run_id}/facets?type=dataset", 400)["field"] == "type"
    _get(client, tokens.auditor, f"/api/v1/jobs/runs/{uuid.uuid4()}/facets?type=run", 404)
    team = runtime.principals.create("team", roles=["pipeline"], namespaces=["team-a"])[1]
    _get(client, team, f"/api/v1/jobs/runs/{run_id}/facets?type=run", 404)  # as /jobs/runs/<id>
    _get(client, team, f"/api/v1/jobs/runs/{run_id}/facets?type=job", 404)


def _chain(client: Any, token: str) -> dict[str, str]:
    """extract (up) writes raw@a1; clean (up) reads raw@a1 and writes down:clean unversioned; report
    (down) reads down:clean and down:lookup, which no run wrote."""
    runs = {k: str(uuid.uuid4()) for k in ("extract", "clean", "report")}
    _post(
        client,
        token,
        run_event(
            run_id=runs["extract"],
            namespace="up",
            job="extract",
            job_facets=_code("git1"),
            outputs=[_io("up", "raw", "a1")],
        ),
    )
    _post(
        client,
        token,
        run_event(
            run_id=runs["clean"],
            namespace="up",
            job="clean",
            inputs=[_io("up", "raw", "a1")],
            outputs=[_io("down", "clean")],
        ),
    )
    _post(
        client,
        token,
        run_event(
            run_id=runs["report"], namespace="down", job="report", inputs=[_io("down", "clean"), _io("down", "lookup")]
        ),
    )
    return runs


def test_run_lineage_upstream_walks_producers(client, tokens, runtime, monkeypatch) -> None:
    runs = _chain(client, tokens.pipeline)
    path = f"/api/v1/runlineage/upstream?runId={runs['report']}"
    lineage = _get(client, tokens.auditor, path)["runs"]
    assert [(r["job"]["namespace"], r["job"]["name"], r["run"]["id"]) for r in lineage] == [
        ("down", "report", runs["report"]),
        ("up", "clean", runs["clean"]),
        ("up", "extract", runs["extract"]),
    ]
    report, clean, extract = lineage
    assert report["inputs"] == [
        {"namespace": "down", "name": "clean", "version": None, "producedByRunId": runs["clean"]},
        {"namespace": "down", "name": "lookup", "version": None, "producedByRunId": None},
    ]
    assert clean["inputs"] == [{"namespace": "up", "name": "raw", "version": "a1", "producedByRunId": runs["extract"]}]
    assert extract["inputs"] == [] and extract["job"]["version"] == "git1" and clean["job"]["version"] is None
    assert extract["run"]["status"] == "COMPLETED" and extract["run"]["start"] is None
    assert MARQUEZ_TIME.match(extract["run"]["end"])

    # depth counts producer hops; the last level still names its producers.
    depth1 = _get(client, tokens.auditor, path + "&depth=1")["runs"]
    assert [r["run"]["id"] for r in depth1] == [runs["report"], runs["clean"]]
    assert depth1[1]["inputs"][0]["producedByRunId"] == runs["extract"]
    assert [r["run"]["id"] for r in _get(client, tokens.auditor, path + "&depth=0")["runs"]] == [runs["report"]]

    assert _get(client, tokens.auditor, path + "&depth=101", 400)["field"] == "depth"  # MAX_DEPTH
    assert _get(client, tokens.auditor, "/api/v1/runlineage/upstream", 400)["field"] == "runId"
    _get(client, tokens.auditor, f"/api/v1/runlineage/upstream?runId={uuid.uuid4()}", 404)
    monkeypatch.setattr(queries, "MAX_UPSTREAM_RUNS", 2)
    assert _get(client, tokens.auditor, path, 400)["field"] == "depth"  # the answer is bounded
    assert len(_get(client, tokens.auditor, path + "&depth=0")["runs"]) == 1

    # Scope: a pipeline scoped to `down` sees its run and datasets, no run of `up`, not even by id.
    down = runtime.principals.create("down-etl", roles=["pipeline"], namespaces=["down"])[1]
    scoped = _get(client, down, path)["runs"]
    assert [r["run"]["id"] for r in scoped] == [runs["report"]]
    assert [i["producedByRunId"] for i in scoped[0]["inputs"]] == [None, None]
    _get(client, down, f"/api/v1/runlineage/upstream?runId={runs['clean']}", 404)
    up = runtime.principals.create("up-etl", roles=["pipeline"], namespaces=["up"])[1]
    clean_up = _get(client, up, f"/api/v1/runlineage/upstream?runId={runs['clean']}")["runs"]
    assert [r["run"]["id"] for r in clean_up] == [runs["clean"], runs["extract"]]


def test_stats_count_events_and_things_per_interval(client, tokens, runtime, monkeypatch) -> None:
    r1, r2 = str(uuid.uuid4()), str(uuid.uuid4())
    old = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    crm = [{"namespace": "pg", "name": "customers", "facets": {"dataSource": {"name": "crm", "uri": "pg://crm"}}}]
    erp = [{"namespace": "pg", "name": "orders", "facets": {"dataSource": {"name": "erp", "uri": "pg://erp"}}}]
    for event in (
        run_event(event_type="START", run_id=r1, namespace="s1", job="a"),
        run_event(event_type="RUNNING", run_id=r1, namespace="s1", job="a"),  # not one of the counted types
        run_event(event_type="COMPLETE", run_id=r1, namespace="s1", job="a", inputs=crm),
        run_event(event_type="START", run_id=r2, namespace="s1", job="b"),
        run_event(event_type="FAIL", run_id=r2, namespace="s1", job="b"),
        run_event(event_type="ABORT", namespace="s1", job="c"),
        run_event(event_type="START", namespace="s1", job="c", event_time=old),
        run_event(event_type="COMPLETE", namespace="s2", job="d", inputs=erp),
    ):
        _post(client, tokens.pipeline, event)
    _classify(client, tokens.security, "pg", "customers")

    def totals(rows: list[dict[str, Any]]) -> dict[str, int]:
        return {k: sum(r[k] for r in rows) for k in ("start", "complete", "fail", "abort")}

    before = datetime.now(UTC)
    day = _get(client, tokens.auditor, "/api/v1/stats/lineage-events?period=DAY")
    assert len(day) == 24 and set(day[0]) == {"startInterval", "endInterval", "fail", "start", "complete", "abort"}
    assert all(MARQUEZ_TIME.match(r["startInterval"]) and MARQUEZ_TIME.match(r["endInterval"]) for r in day)
    assert all(a["endInterval"] == b["startInterval"] for a, b in itertools.pairwise(day))
    assert day[-1]["startInterval"] <= format_time(before) < day[-1]["endInterval"]
    assert day[-1]["startInterval"].endswith(":00:00.000000Z")
    assert totals(day) == {"start": 2, "complete": 2, "fail": 1, "abort": 1}  # three days ago is not today
    week = _get(client, tokens.auditor, "/api/v1/stats/lineage-events?period=WEEK&timezone=Asia/Kathmandu")
    assert len(week) == 7 and totals(week) == {"start": 3, "complete": 2, "fail": 1, "abort": 1}
    assert all(r["startInterval"].endswith("18:15:00.000000Z") for r in week)  # local midnight at +05:45
    assert week[-1]["startInterval"] <= format_time(before) < week[-1]["endInterval"]

    jobs = _get(client, tokens.auditor, "/api/v1/stats/jobs?period=DAY")
    assert len(jobs) == 24 and set(jobs[0]) == {"startInterval", "endInterval", "count"}
    assert jobs[0]["count"] == 0 and jobs[-1]["count"] == 4  # a running total, as Marquez's
    assert _get(client, tokens.auditor, "/api/v1/stats/datasets?period=WEEK&timezone=UTC")[-1]["count"] == 2
    # Sources as /sources lists them: the classified dataset's source is withheld without the clearance.
    assert _get(client, tokens.auditor, "/api/v1/stats/sources?period=DAY")[-1]["count"] == 1
    assert _get(client, tokens.security, "/api/v1/stats/sources?period=DAY")[-1]["count"] == 2

    # Scope: a pipeline scoped to s2 counts only s2.
    team = runtime.principals.create("team", roles=["pipeline"], namespaces=["s2"])[1]
    assert totals(_get(client, team, "/api/v1/stats/lineage-events?period=DAY")) == {
        "start": 0,
        "complete": 1,
        "fail": 0,
        "abort": 0,
    }
    assert _get(client, team, "/api/v1/stats/jobs?period=DAY")[-1]["count"] == 1
    assert _get(client, team, "/api/v1/stats/datasets?period=DAY")[-1]["count"] == 0

    # Two days on, everything was created before the window: each hour's running total is all of it.
    later = datetime.now(UTC) + timedelta(days=2)
    monkeypatch.setattr(runtime.ledger, "clock", lambda: later)
    assert {r["count"] for r in _get(client, tokens.auditor, "/api/v1/stats/jobs?period=DAY")} == {4}
    assert totals(_get(client, tokens.auditor, "/api/v1/stats/lineage-events?period=DAY"))["start"] == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("", "period"),
        ("?period=MONTH", "period"),
        ("?period=WEEK", "timezone"),
        ("?period=WEEK&timezone=Mars/Olympus", "timezone"),
        ("?period=DAY&timezone=../../../etc/passwd", "timezone"),
        ("?period=DAY&timezone=" + "x" * 65, "timezone"),
    ],
)
@pytest.mark.parametrize("kind", ["lineage-events", "jobs", "datasets", "sources"])
def test_stats_periods_are_checked(client, tokens, kind: str, query: str, field: str) -> None:
    assert _get(client, tokens.auditor, f"/api/v1/stats/{kind}{query}", 400)["field"] == field


def test_the_added_reads_are_in_the_openapi_document(client) -> None:
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    for path in (
        "/api/v1/namespaces/{namespace}/jobs/{name}/versions",
        "/api/v1/namespaces/{namespace}/jobs/{name}/versions/{version}",
        "/api/v1/jobs/runs/{run_id}/facets",
        "/api/v1/runlineage/upstream",
        "/api/v1/stats/lineage-events",
        "/api/v1/stats/jobs",
        "/api/v1/stats/datasets",
        "/api/v1/stats/sources",
    ):
        assert "get" in paths[path], path
    assert [p["name"] for p in paths["/api/v1/stats/jobs"]["get"]["parameters"]] == ["period", "timezone"]
