"""Marquez compatibility, checked by Marquez's own client (marquez-python 0.50.0) against a real
server process filled by the real openlineage-python client, on SQLite and PostgreSQL.

Every read call of `MarquezClient` is driven; each answer must be what Marquez would give: its run
states (DESIGN.md 8), its timestamps (UTC, `Z`), parents from the `parent` run facet, dataset
versions of runs, column lineage, sources and tags. The same reads respect scope (a pipeline scoped
to a namespace) and classification redaction (an auditor without the `pii` clearance).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
import requests
from conftest import Server
from marquez_client import MarquezClient
from marquez_client.errors import APIError
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import (
    DatasetEvent,
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
    StaticDataset,
)
from openlineage.client.generated import (
    column_lineage_dataset,
    dataset_version_dataset,
    datasource_dataset,
    nominal_time_run,
    parent_run,
    schema_dataset,
    source_code_location_job,
)
from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport

PRODUCER = "https://github.com/OpenLineage/OpenLineage/tree/1.54.0/client/python"
MARQUEZ_TIME = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")

CRM = ("postgres://db:5432", "crm.public.customers")
CLEAN = ("s3://lake", "clean/customers.parquet")
SPARK = ("spark://cluster:7077", "clean orders")  # a job name with a space, a namespace with a port
DAG = ("airflow", "nightly_dag")
CODE = "https://github.com/example/etl/blob/abc123/clean_orders.py"


def _ol(server: Server, token: str) -> OpenLineageClient:
    config = HttpConfig(url=server.url, auth=ApiKeyTokenProvider({"apiKey": token}), timeout=30)
    return OpenLineageClient(transport=HttpTransport(config))


def _marquez(server: Server, token: str) -> MarquezClient:
    # marquez-python keeps its headers in a module global: build the client right before its calls.
    return MarquezClient(url=server.url, api_key=token)


def _at(minutes: int) -> str:
    base = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    return (base + timedelta(minutes=minutes)).isoformat()  # "+00:00": the server answers with "Z"


def _schema(*names: str) -> schema_dataset.SchemaDatasetFacet:
    return schema_dataset.SchemaDatasetFacet(
        fields=[schema_dataset.SchemaDatasetFacetFields(name=n, type="STRING") for n in names]
    )


def _version(v: str) -> dataset_version_dataset.DatasetVersionDatasetFacet:
    return dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=v)


def _emit_run(
    client: OpenLineageClient,
    job: tuple[str, str],
    states: list[RunState],
    *,
    minute: int,
    run_id: str | None = None,
    inputs: list[InputDataset] | None = None,
    outputs: list[OutputDataset] | None = None,
    run_facets: dict[str, Any] | None = None,
    job_facets: dict[str, Any] | None = None,
) -> str:
    run_id = run_id or str(uuid.uuid4())
    for i, state in enumerate(states):
        client.emit(
            RunEvent(
                eventType=state,
                eventTime=_at(minute + i),
                run=Run(runId=run_id, facets=run_facets or {}),
                job=Job(namespace=job[0], name=job[1], facets=job_facets or {}),
                producer=PRODUCER,
                inputs=inputs or [],
                outputs=outputs or [],
            )
        )
    return run_id


def _fill(server: Server, token: str) -> dict[str, str]:
    """A small estate: a declared source, a DAG run parenting a Spark run with column lineage, runs
    that fail, abort or only announce themselves, and a namespace of its own for a scoped pipeline."""
    ol = _ol(server, token)
    ol.emit(
        DatasetEvent(
            eventTime=_at(0),
            producer=PRODUCER,
            dataset=StaticDataset(
                namespace=CRM[0],
                name=CRM[1],
                facets={
                    "dataSource": datasource_dataset.DatasourceDatasetFacet(name="crm", uri="postgres://db:5432/crm"),
                    "schema": _schema("id", "email"),
                    "version": _version("v1"),
                },
            ),
        )
    )
    runs = {"dag": _emit_run(ol, DAG, [RunState.START], minute=1)}
    lineage = column_lineage_dataset.ColumnLineageDatasetFacet(
        fields={
            col: column_lineage_dataset.Fields(
                inputFields=[
                    column_lineage_dataset.InputField(
                        namespace=CRM[0],
                        name=CRM[1],
                        field=col,
                        transformations=[column_lineage_dataset.Transformation(type="DIRECT", subtype="IDENTITY")],
                    )
                ]
            )
            for col in ("id", "email")
        }
    )
    runs["spark"] = _emit_run(
        ol,
        SPARK,
        [RunState.START, RunState.COMPLETE],
        minute=2,
        inputs=[InputDataset(namespace=CRM[0], name=CRM[1], facets={"version": _version("v1")})],
        outputs=[
            OutputDataset(
                namespace=CLEAN[0],
                name=CLEAN[1],
                facets={"version": _version("c1"), "schema": _schema("id", "email"), "columnLineage": lineage},
            )
        ],
        run_facets={
            "parent": parent_run.ParentRunFacet(
                run=parent_run.Run(runId=runs["dag"]), job=parent_run.Job(namespace=DAG[0], name=DAG[1])
            ),
            "nominalTime": nominal_time_run.NominalTimeRunFacet(nominalStartTime=_at(0)),
        },
        job_facets={
            "sourceCodeLocation": source_code_location_job.SourceCodeLocationJobFacet(
                type="git", url=CODE, version="abc123"
            )
        },
    )
    runs["failed"] = _emit_run(ol, ("spark://cluster:7077", "flaky"), [RunState.START, RunState.FAIL], minute=5)
    runs["aborted"] = _emit_run(ol, ("spark://cluster:7077", "stopped"), [RunState.START, RunState.ABORT], minute=7)
    runs["new"] = _emit_run(ol, ("spark://cluster:7077", "announced"), [RunState.OTHER], minute=9)
    runs["team"] = _emit_run(
        ol,
        ("team-a", "own job"),
        [RunState.COMPLETE],
        minute=10,
        inputs=[InputDataset(namespace="team-a", name="raw")],
        outputs=[OutputDataset(namespace="team-a", name="out")],
    )
    return runs


def _times(doc: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every (path, value) of a timestamp member Marquez defines, outside facets (which are the
    producers' own) and events (served as received)."""
    out: list[tuple[str, Any]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k in ("facets", "events"):
                continue
            if (k.endswith("At") or k.endswith("Time")) and v is not None:
                out.append((f"{path}/{k}", v))
            out += _times(v, f"{path}/{k}")
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _times(v, f"{path}/{i}")
    return out


def _get(server: Server, token: str, path: str, **params: Any) -> requests.Response:
    return requests.get(server.url + path, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.fixture
def estate(server: Server) -> dict[str, Any]:
    tokens = {
        "pipeline": server.add_principal("etl", "pipeline"),
        "auditor": server.add_principal("audit", "auditor", extra=("--clearance", "pii")),
        "plain": server.add_principal("plain-audit", "auditor"),
        "team": server.add_principal("team-a", "pipeline", extra=("--namespace", "team-a")),
        "security": server.add_principal("sec", "security", extra=("--clearance", "pii")),
    }
    runs = _fill(server, tokens["pipeline"])
    r = requests.post(
        f"{server.url}/api/v1/datasets/{quote(CRM[0], safe='')}/{quote(CRM[1], safe='')}/classification",
        json={"tags": ["pii"], "justification": "customer emails"},
        headers={"Authorization": f"Bearer {tokens['security']}"},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return {"tokens": tokens, "runs": runs}


def test_every_marquez_client_read(server: Server, estate: dict[str, Any]) -> None:
    runs, token = estate["runs"], estate["tokens"]["auditor"]
    seen: list[Any] = []
    m = _marquez(server, token)

    # Namespaces, one and all.
    names = {n["name"] for n in m.list_namespaces()["namespaces"]}
    assert {CRM[0], CLEAN[0], SPARK[0], DAG[0], "team-a"} <= names
    ns = m.get_namespace(CRM[0])
    assert ns["name"] == CRM[0] and ns["ownerName"] == "etl"
    seen.append(ns)

    # Datasets and their versions.
    listing = m.list_datasets(CLEAN[0])
    assert listing["totalCount"] == 1 and listing["datasets"][0]["id"] == {"namespace": CLEAN[0], "name": CLEAN[1]}
    crm = m.get_dataset(*CRM)
    assert crm["sourceName"] == "crm" and crm["tags"] == ["pii"] and crm["currentVersion"] == "v1"
    assert [f["name"] for f in crm["fields"]] == ["id", "email"]
    versions = m.list_dataset_versions(*CLEAN)
    assert [v["version"] for v in versions["versions"]] == ["c1"]
    version = m.get_dataset_version(*CLEAN, "c1")
    assert version["id"] == {"namespace": CLEAN[0], "name": CLEAN[1], "version": "c1"}
    assert version["createdByRun"]["id"] == runs["spark"] and version["createdByRun"]["state"] == "COMPLETED"
    with pytest.raises(APIError):
        m.get_dataset_version(*CLEAN, "no-such-version")
    seen += [listing, crm, versions, version]

    # Jobs, runs and Marquez's run states; parents from the `parent` run facet.
    jobs = m.list_jobs(SPARK[0])
    assert {j["name"] for j in jobs["jobs"]} == {"clean orders", "flaky", "stopped", "announced"}
    job = m.get_job(*SPARK)
    assert job["parentJobName"] == DAG[1] and job["latestRun"]["state"] == "COMPLETED"
    assert job["inputs"] == [{"namespace": CRM[0], "name": CRM[1]}]
    job_runs = m.list_job_runs(*SPARK)
    assert [r["id"] for r in job_runs["runs"]] == [runs["spark"]]
    run = m.get_job_run(runs["spark"])
    assert run["state"] == "COMPLETED" and run["parentRunId"] == runs["dag"]
    assert run["nominalStartTime"] == "2026-11-30T12:00:00.000000Z"
    assert run["startedAt"] == "2026-11-30T12:02:00.000000Z" and run["durationMs"] == 60_000
    assert [v["datasetVersionId"] for v in run["inputDatasetVersions"]] == [
        {"namespace": CRM[0], "name": CRM[1], "version": "v1"}
    ]
    assert [v["datasetVersionId"] for v in run["outputDatasetVersions"]] == [
        {"namespace": CLEAN[0], "name": CLEAN[1], "version": "c1"}
    ]
    states = {k: m.get_job_run(runs[k])["state"] for k in ("dag", "failed", "aborted", "new")}
    assert states == {"dag": "RUNNING", "failed": "FAILED", "aborted": "ABORTED", "new": "NEW"}
    seen += [jobs, job, job_runs, run]

    # Column lineage, by dataset, field and job.
    by_dataset = m.get_column_lineage_by_dataset(*CLEAN)
    ids = {n["id"] for n in by_dataset["graph"]}
    field = f"datasetField:{CLEAN[0]}:{CLEAN[1]}:email"
    assert ids == {f"datasetField:{d[0]}:{d[1]}:{c}" for d in (CLEAN, CRM) for c in ("id", "email")}
    email = next(n for n in by_dataset["graph"] if n["id"] == field)
    assert email["type"] == "DATASET_FIELD" and email["data"]["fieldType"] == "STRING"
    assert email["data"]["inputFields"][0] | {"transformationType": None} == {
        "namespace": CRM[0],
        "dataset": CRM[1],
        "datasetVersion": None,
        "field": "email",
        "transformationDescription": None,
        "transformationType": None,
    }
    assert email["data"]["inputFields"][0]["transformationType"] == "DIRECT"
    one = m.get_column_lineage_by_dataset_field(*CLEAN, "email")
    assert {n["id"] for n in one["graph"]} == {field, f"datasetField:{CRM[0]}:{CRM[1]}:email"}
    downstream = m.get_column_lineage_by_dataset_field(*CRM, "email", with_downstream=True)
    assert field in {n["id"] for n in downstream["graph"]}
    assert {n["id"] for n in m.get_column_lineage_by_job(*SPARK)["graph"]} == ids

    # Sources and tags.
    sources = m.list_sources()
    assert [s["name"] for s in sources["sources"]] == ["crm"]
    assert m.get_source("crm")["connectionUrl"] == "postgres://db:5432/crm"
    assert {t["name"] for t in m.list_tags()["tags"]} == {"pii"}
    seen += [sources]

    # marquez-python's list_events asks for /api/v1/events[/<namespace>]: the same page as
    # /api/v1/events/lineage, newest first.
    listed = m.list_events()
    assert listed["totalCount"] == 9
    assert listed["events"] == _get(server, token, "/api/v1/events/lineage").json()["events"]
    # (the client puts the namespace into the path unencoded: a plain one here)
    in_ns = m.list_events(namespace="team-a", limit=2)
    assert in_ns["totalCount"] == 1
    assert [e["job"]["namespace"] for e in in_ns["events"]] == ["team-a"]
    assert m.list_events(namespace="nowhere")["totalCount"] == 0
    seen += [listed, in_ns]

    # Reads the client lacks: lineage events and search.
    events = _get(server, token, "/api/v1/events/lineage", sortDirection="asc", limit=3).json()
    assert events["totalCount"] == 9  # run events only, as Marquez
    assert [e["eventType"] for e in events["events"]] == ["START", "START", "COMPLETE"]
    page2 = _get(server, token, "/api/v1/events/lineage", sortDirection="asc", limit=3, offset=3).json()
    assert page2["events"][0]["eventTime"] > events["events"][-1]["eventTime"]
    window = _get(
        server, token, "/api/v1/events/lineage", after="2026-11-30T12:05:00Z", before="2026-11-30T13:08:00+01:00"
    ).json()
    # after <= eventTime < before (12:08 UTC), newest first
    assert [e["eventType"] for e in window["events"]] == ["START", "FAIL", "START"]
    hits = _get(server, token, "/api/v1/search", q="CUSTOMERS").json()
    assert {(h["type"], h["namespace"], h["name"]) for h in hits["results"]} == {("DATASET", *CRM), ("DATASET", *CLEAN)}
    assert _get(server, token, "/api/v1/search", q="orders", filter="JOB").json()["results"][0]["nodeId"] == (
        f"job:{SPARK[0]}:{SPARK[1]}"
    )
    graph = _get(server, token, "/api/v1/lineage", nodeId=f"dataset:{CRM[0]}:{CRM[1]}", depth=2).json()
    assert f"job:{SPARK[0]}:{SPARK[1]}" in {n["id"] for n in graph["graph"]}
    seen += [hits, graph]

    # Reads marquez-python 0.50.0 has no method for: job versions, run facets, upstream run lineage
    # and stats, in Marquez's shapes.
    spark_versions = f"/api/v1/namespaces/{quote(SPARK[0], safe='')}/jobs/{quote(SPARK[1], safe='')}/versions"
    versions = _get(server, token, spark_versions).json()
    assert versions["totalCount"] == 1 and job["currentVersion"] == "abc123"
    job_version = versions["versions"][0]
    assert job_version["id"] == {"namespace": SPARK[0], "name": SPARK[1], "version": "abc123"}
    assert job_version["location"] == CODE and job_version["latestRun"]["id"] == runs["spark"]
    assert job_version["inputs"] == [{"namespace": CRM[0], "name": CRM[1]}]
    assert job_version["outputs"] == [{"namespace": CLEAN[0], "name": CLEAN[1]}]
    assert _get(server, token, f"{spark_versions}/abc123").json() == job_version
    assert _get(server, token, f"{spark_versions}/no-such-version").status_code == 404
    run_facets = _get(server, token, f"/api/v1/jobs/runs/{runs['spark']}/facets", type="run").json()
    assert run_facets == {"runId": runs["spark"], "facets": run["facets"]}
    assert {"parent", "nominalTime"} <= set(run_facets["facets"])
    job_facets = _get(server, token, f"/api/v1/jobs/runs/{runs['spark']}/facets", type="job").json()["facets"]
    assert job_facets["sourceCodeLocation"]["version"] == "abc123"
    upstream = _get(server, token, "/api/v1/runlineage/upstream", runId=runs["spark"], depth=5).json()
    assert upstream == {
        "runs": [
            {
                "job": {"namespace": SPARK[0], "name": SPARK[1], "version": "abc123"},
                "run": {
                    "id": runs["spark"],
                    "start": "2026-11-30T12:02:00.000000Z",
                    "end": "2026-11-30T12:03:00.000000Z",
                    "status": "COMPLETED",
                },
                # declared by a DatasetEvent: no run produced it
                "inputs": [{"namespace": CRM[0], "name": CRM[1], "version": "v1", "producedByRunId": None}],
            }
        ]
    }
    job_stats = _get(server, token, "/api/v1/stats/jobs", period="DAY").json()
    assert len(job_stats) == 24 and job_stats[-1]["count"] == 6
    sources_stats = _get(server, token, "/api/v1/stats/sources", period="WEEK", timezone="Europe/Berlin").json()
    assert len(sources_stats) == 7 and sources_stats[-1]["count"] == 1
    event_stats = _get(server, token, "/api/v1/stats/lineage-events", period="DAY").json()
    assert set(event_stats[0]) == {"startInterval", "endInterval", "fail", "start", "complete", "abort"}
    assert _get(server, token, "/api/v1/stats/lineage-events", period="WEEK").status_code == 400  # as Marquez
    seen += [versions, job_version]

    # One timestamp format everywhere: Marquez's.
    bad = [(p, v) for p, v in _times(seen) if not (isinstance(v, str) and MARQUEZ_TIME.match(v))]
    assert not bad, bad


def test_marquez_reads_follow_scope_and_redaction(server: Server, estate: dict[str, Any]) -> None:
    runs, tokens = estate["runs"], estate["tokens"]

    m = _marquez(server, tokens["team"])  # a pipeline scoped to namespace team-a
    assert [n["name"] for n in m.list_namespaces()["namespaces"]] == ["team-a"]
    assert m.get_job("team-a", "own job")["latestRun"]["id"] == runs["team"]
    for call in (
        lambda: m.get_namespace(SPARK[0]),
        lambda: m.get_dataset(*CRM),
        lambda: m.list_jobs(SPARK[0]),
        lambda: m.get_job_run(runs["spark"]),
        lambda: m.get_column_lineage_by_dataset(*CLEAN),
    ):
        with pytest.raises(APIError):
            call()
    assert m.list_sources()["sources"] == [] and m.list_tags()["tags"] == []
    events = _get(server, tokens["team"], "/api/v1/events/lineage").json()
    assert events["totalCount"] == 1 and events["events"][0]["job"]["namespace"] == "team-a"
    assert _get(server, tokens["team"], "/api/v1/search", q="customers").json()["results"] == []
    spark_versions = f"/api/v1/namespaces/{quote(SPARK[0], safe='')}/jobs/{quote(SPARK[1], safe='')}/versions"
    assert _get(server, tokens["team"], spark_versions).status_code == 403
    for kind in ("run", "job"):  # another namespace's run is absent, as /jobs/runs/<id>
        assert _get(server, tokens["team"], f"/api/v1/jobs/runs/{runs['spark']}/facets", type=kind).status_code == 404
    assert _get(server, tokens["team"], "/api/v1/runlineage/upstream", runId=runs["spark"]).status_code == 404
    own = _get(server, tokens["team"], "/api/v1/runlineage/upstream", runId=runs["team"]).json()["runs"]
    assert [r["run"]["id"] for r in own] == [runs["team"]]
    assert _get(server, tokens["team"], "/api/v1/stats/jobs", period="DAY").json()[-1]["count"] == 1
    assert _get(server, tokens["team"], "/api/v1/stats/sources", period="DAY").json()[-1]["count"] == 0

    m = _marquez(server, tokens["plain"])  # an auditor without the pii clearance
    crm = m.get_dataset(*CRM)
    assert crm["fields"] == [] and crm["facets"]["redacted"]["missing_clearances"] == ["pii"]
    assert crm["sourceName"] == "default"  # the dataSource facet (a connection string) is withheld
    assert m.list_dataset_versions(*CLEAN)["versions"][0]["fields"] == []
    assert m.get_column_lineage_by_dataset(*CLEAN)["graph"] == []
    assert m.list_sources()["sources"] == []
    with pytest.raises(APIError):
        m.get_source("crm")
    assert _get(server, tokens["plain"], "/api/v1/stats/sources", period="DAY").json()[-1]["count"] == 0
    # Run and job facets follow the run and job reads (not withheld there either); the job version
    # names the classified input as the job read does, by identity only.
    spark_run = m.get_job_run(runs["spark"])
    run_facets = _get(server, tokens["plain"], f"/api/v1/jobs/runs/{runs['spark']}/facets", type="run").json()
    assert run_facets["facets"] == spark_run["facets"]
    version = _get(server, tokens["plain"], f"{spark_versions}/abc123").json()
    assert version["inputs"] == m.get_job(*SPARK)["inputs"] == [{"namespace": CRM[0], "name": CRM[1]}]
    events = _get(server, tokens["plain"], "/api/v1/events/lineage", sortDirection="asc").json()
    spark = [e for e in events["events"] if e["run"]["runId"] == runs["spark"]]
    assert len(spark) == 2 and all("pii" in e["withheld"] for e in spark)
    assert all(e["run"]["facets"] == {} and e["outputs"][0]["facets"] == {} for e in spark)
    team = next(e for e in events["events"] if e["run"]["runId"] == runs["team"])
    assert "withheld" not in team  # nothing classified there
    # The log's own payload read withholds the same events.
    entry = _get(server, tokens["plain"], "/api/v1/log/entries", subject=f"run:{runs['spark']}").json()["entries"]
    assert [e["payload"] for e in entry] == [None, None]
