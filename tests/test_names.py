"""Names in paths (DESIGN.md 8, normative): any name intake accepts works on every route, as one
URL-encoded path segment (`/` as `%2F`), the way Marquez and its client encode it. On SQLite and
PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import pytest
from conftest import auth
from events import run_event
from pipeline import digest, registration

from ledger.api.names import path_info_from_raw
from ledger.lineage.nodeid import NodeId

# (namespace, name) as Spark, Hive, Flink, dbt, S3 and JDBC integrations emit them.
DATASETS = [
    ("file", "/tmp/warehouse/orders"),  # Spark on a local path: a leading and embedded '/'
    ("s3://bucket", "raw/customers.csv"),
    ("hive://metastore:9083", "default.orders"),
    ("postgres://db:5432", "analytics.public.orders"),
    ("kafka://broker:9092", "orders topic: 100% done"),  # spaces, ':' and '%'
    ("bigquery", "projet.données.commandes_été"),  # non-ASCII
    ("s3://bucket", "a%2Fb"),  # a literal "%2F" in a name is not a '/'
    ("file", "/data//double/"),  # '//' inside and a trailing '/'
]
JOBS = [
    ("spark://cluster", "/jobs/etl orders.execute_insert_into_hadoop_fs_relation_command"),
    ("dbt", "model.jaffle_shop.orders"),
    ("flink://jm:8081", "Flink Job: orders → sink"),
]


def seg(name: str) -> str:
    return quote(name, safe="")


def _post(client: Any, token: str, event: dict[str, Any]) -> None:
    r = client.post("/api/v1/lineage", json=event, headers=auth(token))
    assert r.status_code == 201, r.get_json()


@pytest.fixture
def named(client: Any, tokens: Any) -> dict[str, str]:
    """One run per job reading the first half of the datasets and writing the rest, all versioned."""
    runs = {}
    half = len(DATASETS) // 2
    for i, (ns, job) in enumerate(JOBS):
        run_id = str(uuid.uuid4())
        ins = DATASETS[:half] if i == 0 else DATASETS[half:]
        outs = DATASETS[half:] if i == 0 else [("s3://out", f"report {i}")]

        def io(pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
            return [{"namespace": n, "name": d, "facets": {"version": {"datasetVersion": f"v/{d}"}}} for n, d in pairs]

        job_facets = {"sourceCodeLocation": {"type": "git", "url": "https://git.example/x", "version": "abc"}}
        for event_type in ("START", "COMPLETE"):
            _post(
                client,
                tokens.pipeline,
                run_event(
                    event_type=event_type,
                    run_id=run_id,
                    namespace=ns,
                    job=job,
                    inputs=io(ins),
                    outputs=io(outs),
                    job_facets=job_facets,
                ),
            )
        runs[job] = run_id
    return runs


def test_every_dataset_route_takes_any_name(client, tokens, named) -> None:
    for ns, name in DATASETS:
        base = f"/api/v1/namespaces/{seg(ns)}/datasets/{seg(name)}"
        r = client.get(base, headers=auth(tokens.auditor))
        assert r.status_code == 200, (ns, name, r.status_code)
        assert r.get_json()["id"] == {"namespace": ns, "name": name}
        versions = client.get(base + "/versions", headers=auth(tokens.auditor)).get_json()
        assert [v["version"] for v in versions["versions"]] == [f"v/{name}"]
        one = client.get(f"{base}/versions/{seg('v/' + name)}", headers=auth(tokens.auditor))
        assert one.status_code == 200 and one.get_json()["id"] == {
            "namespace": ns,
            "name": name,
            "version": f"v/{name}",
        }
        listing = client.get(f"/api/v1/namespaces/{seg(ns)}/datasets?limit=100", headers=auth(tokens.auditor))
        assert name in {d["name"] for d in listing.get_json()["datasets"]}
        assert client.get(f"/api/v1/namespaces/{seg(ns)}", headers=auth(tokens.auditor)).get_json()["name"] == ns
        g = client.get(f"/api/v1/lineage?nodeId={seg(f'dataset:{ns}:{name}')}&depth=1", headers=auth(tokens.auditor))
        assert g.status_code == 200, (ns, name, g.get_json())
        assert f"dataset:{ns}:{name}" in {n["id"] for n in g.get_json()["graph"]}


def test_classification_takes_any_name(client, tokens, named) -> None:
    for ns, name in DATASETS:
        r = client.post(
            f"/api/v1/datasets/{seg(ns)}/{seg(name)}/classification",
            json={"tags": ["pii"], "justification": "customer data"},
            headers=auth(tokens.security),
        )
        assert r.status_code == 201, (ns, name, r.get_json())
        c = r.get_json()["classification"]
        assert c["dataset"] == {"namespace": ns, "name": name}
        d = client.get(f"/api/v1/namespaces/{seg(ns)}/datasets/{seg(name)}", headers=auth(tokens.security)).get_json()
        assert "pii" in d["tags"]


def test_every_job_route_takes_any_name(client, tokens, named) -> None:
    for ns, name in JOBS:
        base = f"/api/v1/namespaces/{seg(ns)}/jobs/{seg(name)}"
        j = client.get(base, headers=auth(tokens.auditor))
        assert j.status_code == 200, (ns, name)
        assert j.get_json()["id"] == {"namespace": ns, "name": name}
        runs = client.get(base + "/runs", headers=auth(tokens.auditor)).get_json()
        assert [r["id"] for r in runs["runs"]] == [named[name]] and runs["runs"][0]["state"] == "COMPLETED"
        assert client.get(f"/api/v1/namespaces/{seg(ns)}/jobs", headers=auth(tokens.auditor)).get_json()["totalCount"]
        g = client.get(f"/api/v1/lineage?nodeId={seg(f'job:{ns}:{name}')}&depth=1", headers=auth(tokens.auditor))
        assert g.status_code == 200 and f"job:{ns}:{name}" in {n["id"] for n in g.get_json()["graph"]}
        run = client.get(f"/api/v1/jobs/runs/{named[name]}", headers=auth(tokens.auditor)).get_json()
        assert run["jobVersion"]["name"] == name
        versions = {
            (v["datasetVersionId"]["namespace"], v["datasetVersionId"]["name"]) for v in run["inputDatasetVersions"]
        }
        assert versions  # every run read something


def test_provenance_routes_take_encoded_names(client, tokens, named) -> None:
    train = named["model.jaffle_shop.orders"]
    r = client.post(
        "/api/v1/models/orders-model/versions", json=registration(train, "1.0"), headers=auth(tokens.pipeline)
    )
    assert r.status_code == 201, r.get_json()
    for path in (
        "/api/v1/models/orders-model/versions/1.0",
        "/api/v1/provenance/models/orders-model/versions/1.0",
        f"/api/v1/provenance/models/{seg('orders-model')}/versions/{seg('1.0')}",
    ):
        assert client.get(path, headers=auth(tokens.auditor)).status_code == 200, path
    report = client.get("/api/v1/provenance/models/orders-model/versions/1.0", headers=auth(tokens.auditor)).get_json()
    upstream = {(d["namespace"], d["name"]) for d in report["upstream"]["datasets"]}
    assert set(DATASETS[len(DATASETS) // 2 :]) <= upstream  # names with '/', ':', '%' reach the report
    # A model name holding an encoded '/' reaches the name check (400 naming it), not a 404 or 308.
    bad = client.get(f"/api/v1/models/{seg('team/churn')}/versions/1", headers=auth(tokens.auditor))
    assert bad.status_code == 400 and bad.get_json()["field"] == "name"
    r = client.post(
        f"/api/v1/models/{seg('team/churn')}/versions",
        json={**registration(train, "2"), "artifact": {"uri": "s3://m/2", "digest": digest("2")}},
        headers=auth(tokens.pipeline),
    )
    assert r.status_code == 400 and r.get_json()["field"] == "name"


def test_regression_leading_slash_and_unencoded_slashes(client, tokens, named) -> None:
    """Names starting with '/' used to get a 308 (merged slashes) and then 404; an unencoded '/' is
    a path separator, never part of a name, so the unencoded form does not match."""
    r = client.get(f"/api/v1/namespaces/file/datasets/{seg('/tmp/warehouse/orders')}", headers=auth(tokens.auditor))
    assert r.status_code == 200
    r = client.get("/api/v1/namespaces/file/datasets//tmp/warehouse/orders", headers=auth(tokens.auditor))
    assert r.status_code == 404
    r = client.get("/api/v1/namespaces/s3://bucket/datasets/x", headers=auth(tokens.auditor))
    assert r.status_code == 404
    assert client.get("/api/v1/namespaces//datasets", headers=auth(tokens.auditor)).status_code == 404


def test_path_info_from_raw_uri() -> None:
    # Each segment decoded on its own; '%' and '/' inside a segment stay escaped.
    assert path_info_from_raw("/a/%2Fb%20c/%25x?q=1", "", "/a//b c/%x") == "/a/%2Fb c/%25x"
    # Absolute-form request target (a proxy may send one).
    assert path_info_from_raw("http://h:1/a%2Fb", "", "/a/b") == "/a%2Fb"
    # UTF-8 travels as latin-1 over bytes, as in WSGI.
    assert path_info_from_raw("/%C3%A9", "", "/\xc3\xa9") == "/\xc3\xa9"
    # No raw URI, or one that disagrees with PATH_INFO: trust the server's PATH_INFO (escape '%').
    assert path_info_from_raw("", "", "/a/100%") == "/a/100%25"
    assert path_info_from_raw("/other", "", "/a") == "/a"
    # Mounted under a script name.
    assert path_info_from_raw("/app/x%2Fy", "/app", "/x/y") == "/x%2Fy"


@pytest.mark.parametrize(
    ("node", "namespace", "name"),
    [
        ("dataset:hive://metastore:9083:default.orders", "hive://metastore:9083", "default.orders"),
        ("dataset:postgres://db:5432:analytics.public.orders", "postgres://db:5432", "analytics.public.orders"),
        ("dataset:s3://bucket:raw/customers.csv", "s3://bucket", "raw/customers.csv"),
        ("dataset:file:/tmp/warehouse/orders", "file", "/tmp/warehouse/orders"),
        ("job:dbt:model.jaffle_shop.orders", "dbt", "model.jaffle_shop.orders"),
        ("dataset:ns:a:b", "ns", "a:b"),  # Marquez: the name keeps the colons after the namespace
    ],
)
def test_node_ids_parse_as_marquez_does(node: str, namespace: str, name: str) -> None:
    ref = next(NodeId.parse(node).candidates())
    assert (ref.namespace, ref.name) == (namespace, name)


def test_node_ids_marquez_cannot_split_still_resolve(client, tokens, runtime) -> None:
    """Marquez's rule reads `dataset:team:a:x` as namespace `team`; a namespace `team:a` is found by
    trying the other splits."""
    _post(
        client, tokens.pipeline, run_event(namespace="team:a", job="j", outputs=[{"namespace": "team:a", "name": "x"}])
    )
    g = client.get(f"/api/v1/lineage?nodeId={seg('dataset:team:a:x')}", headers=auth(tokens.auditor))
    assert g.status_code == 200 and "job:team:a:j" in {n["id"] for n in g.get_json()["graph"]}
    assert NodeId.parse("dataset:wh:d3#v1").marquez_parts() == ["dataset", "wh", "d3#v1"]
    bad = client.get("/api/v1/lineage?nodeId=table:x:y", headers=auth(tokens.auditor))
    assert bad.status_code == 400 and bad.get_json()["field"] == "nodeId"
