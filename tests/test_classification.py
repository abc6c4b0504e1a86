"""Classification through lineage (security role), on SQLite and PostgreSQL: tags propagate downstream
to datasets and model versions, stop at a declassified transform output, show in reads, reports and
the policy input, redact content facets for principals without the clearance; incrementally."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from conftest import auth
from events import dataset_event, run_event
from pipeline import registration, validation

from ledger.governance.bundle import WithheldError, verify_bundle
from ledger.security.classification import propagate

BASE = "/api/v1/models/churn/versions"


def _tags(client, token: str, ns: str, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    r = client.get(f"/api/v1/namespaces/{quote(ns, safe='')}/datasets/{quote(name, safe='')}", headers=auth(token))
    assert r.status_code == 200
    return list(r.get_json()["tags"])


def _classify(client, token: str, ns: str, name: str, tags: list[str], declassify: bool = False):  # type: ignore[no-untyped-def]
    return client.post(
        f"/api/v1/datasets/{quote(ns, safe='')}/{quote(name, safe='')}/classification",
        json={"tags": tags, "justification": "holds customer emails", "declassify": declassify},
        headers=auth(token),
    )


def test_tags_propagate_and_stop_at_declassification(client, tokens, runtime, pipeline_runs) -> None:
    r = _classify(client, tokens.security, "s3://raw", "customers", ["pii"])
    assert r.status_code == 201, r.get_json()["decision"]["violations"]
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
    # The auditor is not cleared for pii: the lineage payloads are withheld, and what rests on them
    # is unproven; verify says so and fails unless told to accept it.
    with pytest.raises(WithheldError, match=r"unproven: .*upstream"):
        verify_bundle(bundle, runtime.ledger.signer.verifier.line())
    verify_bundle(bundle, runtime.ledger.signer.verifier.line(), allow_withheld=True)

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
    seen = client.get("/api/v1/namespaces/s3%3A%2F%2Fclean/datasets/customers", headers=auth(uncleared)).get_json()
    assert "schema" not in seen["facets"] and seen["fields"] == []
    assert seen["facets"]["redacted"]["missing_clearances"] == ["pii"]
    full = client.get("/api/v1/namespaces/s3%3A%2F%2Fclean/datasets/customers", headers=auth(cleared)).get_json()
    assert full["fields"][0]["name"] == "email"
    versions = client.get(
        "/api/v1/namespaces/s3%3A%2F%2Fclean/datasets/customers/versions", headers=auth(uncleared)
    ).get_json()
    assert all(v["fields"] == [] for v in versions["versions"])
    graph = client.get(
        "/api/v1/lineage?nodeId=dataset:s3://clean:customers&depth=1", headers=auth(uncleared)
    ).get_json()
    node = next(n for n in graph["graph"] if n["id"] == "dataset:s3://clean:customers")
    assert "schema" not in node["data"]["facets"]


def test_unknown_and_content_facets_are_withheld_structure_facets_shown(client, tokens, runtime, pipeline_runs) -> None:
    """Redaction keeps a short list of structural facets and withholds everything else, custom ones too."""
    _classify(client, tokens.security, "s3://clean", "customers", ["pii"])
    _, uncleared = runtime.principals.create("analyst", roles=["auditor"])
    facets = {
        "schema": {"fields": [{"name": "email", "type": "string"}]},
        "documentation": {"description": "one row per customer, e.g. jane@example.com"},
        "subset": {"inputCondition": {"type": "partition", "partitions": [{"identifier": "jane@example.com"}]}},
        "acme_sampleRows": {"rows": [["jane@example.com"]]},
        "storage": {"storageLayer": "iceberg", "fileFormat": "parquet"},
        "ownership": {"owners": [{"name": "team:crm"}]},
    }
    event = dataset_event("s3://clean", "customers", **facets)
    assert client.post("/api/v1/lineage", json=event, headers=auth(tokens.pipeline)).status_code == 201
    seen = client.get("/api/v1/namespaces/s3%3A%2F%2Fclean/datasets/customers", headers=auth(uncleared)).get_json()
    assert "jane@example.com" not in str(seen)
    assert {"storage", "ownership"} <= set(seen["facets"])
    assert {"schema", "documentation", "subset", "acme_sampleRows"} <= set(seen["facets"]["redacted"]["facets"])


def test_log_payloads_follow_scope_and_clearance(client, tokens, runtime, pipeline_runs) -> None:
    """The raw log is no way around redaction: every header and proof is served to every principal,
    but a payload naming pii data is withheld from the uncleared, and a scoped pipeline reads only
    the payloads of its own namespaces. What is served still verifies; bundles follow the same rule."""
    import json

    from ledger.tlog.entry import EntryHeader, canonical_json, check_payload

    _classify(client, tokens.security, "s3://raw", "customers", ["pii"])  # flows down to the model
    client.post(BASE, json=registration(pipeline_runs["train"]), headers=auth(tokens.pipeline))
    _, uncleared = runtime.principals.create("analyst", roles=["auditor"])
    _, cleared = runtime.principals.create("dpo", roles=["auditor"], clearances=["pii"])
    _, scoped = runtime.principals.create("ml-team", roles=["pipeline"], namespaces=["ml"], clearances=["pii"])

    def page(token: str) -> dict[int, dict[str, Any]]:
        r = client.get("/api/v1/log/entries?limit=1000", headers=auth(token))
        assert r.status_code == 200
        return {e["header"]["seq"]: e for e in r.get_json()["entries"]}

    full, hidden, mine = page(cleared), page(uncleared), page(scoped)
    assert full.keys() == hidden.keys() == mine.keys()  # every header, for everyone
    lineage = [s for s, e in full.items() if e["header"]["kind"].startswith("openlineage.")]
    assert lineage and all(full[s]["payload"] is not None for s in lineage)
    # Uncleared: every lineage event naming a pii dataset is withheld (raw, clean, features, train).
    withheld = {s for s, e in hidden.items() if e.get("withheld")}
    assert withheld and withheld <= set(lineage)
    for s in withheld:
        assert hidden[s]["payload"] is None and hidden[s]["salt"] is None and hidden[s]["erased"] is False
        assert "pii" in hidden[s]["withheld"] and hidden[s]["header"] == full[s]["header"]
    for e in hidden.values():
        if e["payload"] is not None:  # what is served verifies
            check_payload(EntryHeader.from_json(e["header"]), bytes.fromhex(e["salt"]), canonical_json(e["payload"]))
    one = next(iter(withheld))
    assert client.get(f"/api/v1/log/entries/{one}", headers=auth(uncleared)).get_json()["payload"] is None
    assert client.get(f"/api/v1/log/entries/{one}", headers=auth(cleared)).get_json()["payload"] is not None
    # Scoped to `ml`: only the training job's events (namespace ml) keep their payloads.
    served = {s for s in lineage if mine[s]["payload"] is not None}
    assert served and all(mine[s]["payload"]["job"]["namespace"] == "ml" for s in served)
    assert all("namespace" in mine[s]["withheld"] for s in set(lineage) - served)
    # The export behind `ledger verify --url`: withheld payloads read as "-".
    lines = client.get("/api/v1/log/export", headers=auth(uncleared)).get_data().splitlines()
    for line in lines:
        seq = json.loads(line.split(b"\t")[1])["seq"]
        assert (line.split(b"\t")[3] == b"-") == (seq in withheld or full[seq]["erased"])
    # Bundles: withheld entries still prove their headers; the bundle verifies offline.
    bundle = client.get("/api/v1/provenance/models/churn/versions/3/bundle", headers=auth(uncleared)).get_json()
    assert any(e.get("withheld") for e in bundle["entries"])
    with pytest.raises(WithheldError):
        verify_bundle(bundle, runtime.ledger.signer.verifier.line())
    verify_bundle(bundle, runtime.ledger.signer.verifier.line(), allow_withheld=True)
    full_bundle = client.get("/api/v1/provenance/models/churn/versions/3/bundle", headers=auth(cleared)).get_json()
    assert not any(e.get("withheld") for e in full_bundle["entries"])


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
    assert r.status_code == 201, r.get_json()["decision"]["violations"]


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
    rebuild_all(runtime.projector)
    after = {n: _tags(client, tokens.security, *n) for n in before}
    assert (
        after
        == before
        == {("s3://clean", "customers"): ["pii"], ("s3://features", "churn"): [], ("s3://models", "churn"): []}
    )
