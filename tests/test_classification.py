"""Classification through lineage (security role), on SQLite and PostgreSQL: tags propagate downstream
to datasets and model versions, stop at a declassified transform output, show in reads, reports and
the policy input, redact content facets for principals without the clearance; incrementally."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import auth
from events import dataset_event, run_event
from pipeline import build_pipeline, registration, validation

from ledger.governance.bundle import verify_bundle
from ledger.security.classification import propagate

BASE = "/api/v1/models/churn/versions"


@pytest.fixture
def pipeline_runs(client, tokens) -> dict[str, str]:  # type: ignore[no-untyped-def]
    def post(event: dict[str, Any]) -> None:
        assert client.post("/api/v1/lineage", json=event, headers=auth(tokens.pipeline)).status_code == 201

    return build_pipeline(post)


def _tags(client, token: str, ns: str, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    r = client.get(f"/api/v1/namespaces/{ns}/datasets/{name}", headers=auth(token))
    assert r.status_code == 200
    return list(r.get_json()["tags"])


def _classify(client, token: str, ns: str, name: str, tags: list[str], declassify: bool = False):  # type: ignore[no-untyped-def]
    return client.post(
        f"/api/v1/datasets/{ns}/{name}/classification",
        json={"tags": tags, "justification": "holds customer emails", "declassify": declassify},
        headers=auth(token),
    )


def test_tags_propagate_and_stop_at_declassification(client, tokens, runtime, pipeline_runs) -> None:
    r = _classify(client, tokens.security, "s3://raw", "customers", ["pii"])
    assert r.status_code == 201, r.get_json()
    assert runtime.ledger.entry(r.get_json()["receipt"]["seq"]).header.kind == "dataset.classification"
    for ns, name in (
        ("s3://raw", "customers"),
        ("s3://clean", "customers"),
        ("s3://features", "churn"),
        ("s3://models", "churn"),
    ):
        assert _tags(client, tokens.security, ns, name) == ["pii"], (ns, name)

    report = client.get(f"{BASE}/3", headers=auth(tokens.auditor))
    assert report.status_code == 404  # not registered yet
    client.post(BASE, json=registration(pipeline_runs["train"]), headers=auth(tokens.pipeline))
    report = client.get("/api/v1/provenance/models/churn/versions/3", headers=auth(tokens.auditor)).get_json()
    assert report["model"]["tags"] == ["pii"]
    cls = {(c["namespace"], c["name"]): c for c in report["classifications"]}
    assert cls[("s3://raw", "customers")]["entries"] == [r.get_json()["receipt"]["seq"]]
    assert r.get_json()["receipt"]["seq"] in report["entries"]
    bundle = client.get("/api/v1/provenance/models/churn/versions/3/bundle", headers=auth(tokens.auditor)).get_json()
    verify_bundle(bundle, runtime.ledger.signer.verifier.line())

    # A security principal declassifies the feature job's output: pii stops there.
    assert _classify(client, tokens.security, "s3://features", "churn", ["pii"], declassify=True).status_code == 201
    assert _tags(client, tokens.security, "s3://features", "churn") == []
    assert _tags(client, tokens.security, "s3://models", "churn") == []
    assert _tags(client, tokens.security, "s3://clean", "customers") == ["pii"]
    report = client.get("/api/v1/provenance/models/churn/versions/3", headers=auth(tokens.auditor)).get_json()
    assert report["model"]["tags"] == ["pii"]  # the closure still reaches the raw pii source


def test_new_lineage_edges_carry_tags_incrementally(client, tokens, runtime, pipeline_runs) -> None:
    _classify(client, tokens.security, "s3://raw", "customers", ["pii", "confidential"])
    # A new job reads the clean data and writes a report: the report inherits both tags.
    client.post(
        "/api/v1/lineage",
        json=run_event(
            job="report",
            inputs=[{"namespace": "s3://clean", "name": "customers"}],
            outputs=[{"namespace": "s3://bi", "name": "weekly"}],
        ),
        headers=auth(tokens.pipeline),
    )
    assert _tags(client, tokens.security, "s3://bi", "weekly") == ["confidential", "pii"]
    # Recomputing from the raw source touches only what lies downstream of it.
    with runtime.db.write() as s:
        raw = s.execute(
            __import__("sqlalchemy").text("SELECT id FROM lineage_datasets WHERE namespace = 's3://raw'")
        ).scalar_one()
        assert propagate(s, [raw]) == 1  # unchanged: stops at the start


def test_redaction_for_principals_without_clearance(client, tokens, runtime, pipeline_runs) -> None:
    _classify(client, tokens.security, "s3://clean", "customers", ["pii"])
    _, uncleared = runtime.principals.create("analyst", roles=["auditor"])
    _, cleared = runtime.principals.create("dpo", roles=["auditor"], clearances=["pii"])
    client.post(
        "/api/v1/lineage",
        json=dataset_event("s3://clean", "customers", schema={"fields": [{"name": "email", "type": "string"}]}),
        headers=auth(tokens.pipeline),
    )
    seen = client.get("/api/v1/namespaces/s3://clean/datasets/customers", headers=auth(uncleared)).get_json()
    assert "schema" not in seen["facets"] and seen["fields"] == []
    assert seen["facets"]["redacted"]["missing_clearances"] == ["pii"]
    full = client.get("/api/v1/namespaces/s3://clean/datasets/customers", headers=auth(cleared)).get_json()
    assert full["fields"][0]["name"] == "email"
    versions = client.get(
        "/api/v1/namespaces/s3://clean/datasets/customers/versions", headers=auth(uncleared)
    ).get_json()
    assert all(v["fields"] == [] for v in versions["versions"])
    graph = client.get(
        "/api/v1/lineage?nodeId=dataset:s3://clean:customers&depth=1", headers=auth(uncleared)
    ).get_json()
    node = next(n for n in graph["graph"] if n["id"] == "dataset:s3://clean:customers")
    assert "schema" not in node["data"]["facets"]


def test_pipeline_declared_pii_needs_an_approved_classification(client, tokens, runtime, pipeline_runs) -> None:
    # The pipeline itself tags the raw data as pii (OpenLineage `tags` facet): not yet reviewed.
    client.post(
        "/api/v1/lineage",
        json=dataset_event("s3://raw", "customers", tags={"tags": [{"key": "pii", "value": "true"}]}),
        headers=auth(tokens.pipeline),
    )
    assert _tags(client, tokens.security, "s3://features", "churn") == ["pii"]
    client.post(BASE, json=registration(pipeline_runs["train"]), headers=auth(tokens.pipeline))
    for kind in ("performance", "bias"):
        client.post(f"{BASE}/3/validations", json=validation(kind), headers=auth(tokens.pipeline))
    client.post(f"{BASE}/3/approvals", json={"stage": "production"}, headers=auth(tokens.approver))
    r = client.post(f"{BASE}/3/promotions", json={"stage": "production"}, headers=auth(tokens.pipeline))
    assert r.status_code == 403
    assert any("pii" in v and "classification" in v for v in r.get_json()["decision"]["violations"])
    # Security reviews and classifies the source: promotion is allowed.
    assert _classify(client, tokens.security, "s3://raw", "customers", ["pii"]).status_code == 201
    r = client.post(f"{BASE}/3/promotions", json={"stage": "production"}, headers=auth(tokens.pipeline))
    assert r.status_code == 201, r.get_json()


def test_classification_requests_are_checked(client, tokens, runtime, pipeline_runs) -> None:
    size = runtime.ledger.size()
    assert _classify(client, tokens.pipeline, "s3://raw", "customers", ["pii"]).status_code == 403
    assert _classify(client, tokens.auditor, "s3://raw", "customers", ["pii"]).status_code == 403
    assert _classify(client, tokens.security, "s3://raw", "nope", ["pii"]).status_code == 404
    assert _classify(client, tokens.security, "s3://raw", "customers", ["PII!"]).status_code == 400
    assert _classify(client, tokens.security, "s3://raw", "customers", []).status_code == 400
    assert runtime.ledger.size() == size


def test_rebuild_reproduces_classification(client, tokens, runtime, pipeline_runs) -> None:
    from ledger.projections import rebuild_all

    _classify(client, tokens.security, "s3://raw", "customers", ["pii"])
    _classify(client, tokens.security, "s3://features", "churn", ["pii"], declassify=True)
    before = {
        n: _tags(client, tokens.security, *n)
        for n in (("s3://clean", "customers"), ("s3://features", "churn"), ("s3://models", "churn"))
    }
    rebuild_all(runtime.db)
    after = {n: _tags(client, tokens.security, *n) for n in before}
    assert (
        after
        == before
        == {("s3://clean", "customers"): ["pii"], ("s3://features", "churn"): [], ("s3://models", "churn"): []}
    )
