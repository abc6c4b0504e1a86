"""Governance end to end through the HTTP API, on SQLite and PostgreSQL: register, validate,
approve, policy-gated promotion, deployment, provenance verdicts and the offline-verified bundle."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import auth
from pipeline import build_pipeline, registration, validation

from ledger.governance.bundle import BundleError, verify_bundle


@pytest.fixture
def flow(client, tokens, runtime):  # type: ignore[no-untyped-def]
    registrar = runtime.principals.create("ml-registrar", roles=["pipeline"])[1]

    def post(event: dict[str, Any]) -> None:
        r = client.post("/api/v1/lineage", json=event, headers=auth(tokens.pipeline))
        assert r.status_code == 201, r.get_json()

    runs = build_pipeline(post)
    return {"runs": runs, "registrar": registrar}


def _post(client, path: str, body: Any, token: str):  # type: ignore[no-untyped-def]
    return client.post(path, json=body, headers=auth(token))


def test_promotion_denied_then_allowed_and_bundle_verifies(client, tokens, runtime, flow) -> None:
    base = "/api/v1/models/churn/versions"
    r = _post(client, base, registration(flow["runs"]["train"]), flow["registrar"])
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["model"]["registered_by"] == "ml-registrar"
    assert _post(client, base, registration(flow["runs"]["train"]), flow["registrar"]).status_code == 409

    r = _post(client, f"{base}/3/validations", validation("performance"), tokens.pipeline)
    assert r.status_code == 201 and r.get_json()["validation"]["passed"] is True

    r = _post(client, f"{base}/3/promotions", {"stage": "production"}, tokens.pipeline)
    assert r.status_code == 403
    assert r.mimetype == "application/problem+json"
    denied = r.get_json()["decision"]
    assert denied["allowed"] is False
    text = " ".join(denied["violations"])
    assert "bias" in text and "approv" in text
    assert denied["policy_digest"].startswith("sha256:")

    # An approval by the registrant would not count; an independent approver does.
    assert (
        _post(client, f"{base}/3/approvals", {"stage": "production", "comment": "ok"}, tokens.approver).status_code
        == 201
    )
    assert _post(client, f"{base}/3/validations", validation("bias"), tokens.pipeline).status_code == 201

    # Deployment before an allowed promotion: refused and the refusal recorded.
    r = _post(
        client,
        f"{base}/3/deployments",
        {"stage": "production", "environment": "prod-eu", "endpoint": "https://ml.example/churn"},
        tokens.pipeline,
    )
    assert r.status_code == 403
    refused_seq = r.get_json()["deployment"]["seq"]
    assert runtime.ledger.entry(refused_seq).payload["refused"] is True

    r = _post(client, f"{base}/3/promotions", {"stage": "production"}, tokens.pipeline)
    assert r.status_code == 201, r.get_json()
    decision = r.get_json()["decision"]
    assert decision["allowed"] is True and decision["violations"] == []
    entry = runtime.ledger.entry(decision["seq"])
    assert entry.header.kind == "promotion.decision" and entry.payload["allowed"] is True

    r = _post(
        client,
        f"{base}/3/deployments",
        {"stage": "production", "environment": "prod-eu", "endpoint": "https://ml.example/churn"},
        tokens.pipeline,
    )
    assert r.status_code == 201
    assert r.get_json()["deployment"]["decision_seq"] == decision["seq"]

    model = client.get(f"{base}/3", headers=auth(tokens.auditor)).get_json()["model"]
    assert model["current_stage"]["prod-eu"]["stage"] == "production"

    report = client.get("/api/v1/provenance/models/churn/versions/3", headers=auth(tokens.auditor)).get_json()
    assert all(v["ok"] for v in report["verdicts"].values()), report["verdicts"]
    names = {(d["namespace"], d["name"]) for d in report["upstream"]["datasets"]}
    assert names == {("s3://raw", "customers"), ("s3://clean", "customers"), ("s3://features", "churn")}
    assert {j["name"] for j in report["upstream"]["jobs"]} == {"clean_customers", "build_features", "train_churn"}

    bundle = client.get("/api/v1/provenance/models/churn/versions/3/bundle", headers=auth(tokens.auditor)).get_json()
    vkey = runtime.ledger.signer.verifier.line()
    assert "3 entries" not in verify_bundle(bundle, vkey)
    assert sorted(e["header"]["seq"] for e in bundle["entries"]) == report["entries"]


def _tampered(bundle: dict[str, Any], mutate) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    b = copy.deepcopy(bundle)
    mutate(b)
    return b


def test_altered_bundles_are_caught(client, tokens, runtime, flow) -> None:
    base = "/api/v1/models/churn/versions"
    _post(client, base, registration(flow["runs"]["train"]), flow["registrar"])
    _post(client, f"{base}/3/validations", validation("performance"), tokens.pipeline)
    bundle = client.get("/api/v1/provenance/models/churn/versions/3/bundle", headers=auth(tokens.auditor)).get_json()
    vkey = runtime.ledger.signer.verifier.line()
    verify_bundle(bundle, vkey)

    def payload_byte(b: dict[str, Any]) -> None:
        e = next(e for e in b["entries"] if e["header"]["kind"] == "validation.result")
        e["payload"]["metrics"]["auc"] = 0.99

    def proof_hash(b: dict[str, Any]) -> None:
        e = b["entries"][1]
        h = bytearray(bytes.fromhex(e["inclusion_proof"][0]))
        h[0] ^= 1
        e["inclusion_proof"][0] = h.hex()

    def header_field(b: dict[str, Any]) -> None:
        b["entries"][0]["header"]["principal"] = "mallory"

    def checkpoint(b: dict[str, Any]) -> None:
        lines = b["checkpoint"].split("\n")
        lines[1] = str(int(lines[1]) + 1)
        b["checkpoint"] = "\n".join(lines)

    def report_fact(b: dict[str, Any]) -> None:
        b["report"]["validations"][0]["passed"] = not b["report"]["validations"][0]["passed"]

    def dropped_entry(b: dict[str, Any]) -> None:
        b["entries"].pop()

    cases = {
        payload_byte: "payload does not match",
        proof_hash: "inclusion proof does not verify",
        header_field: "header does not hash to its leaf_hash",
        checkpoint: "checkpoint",
        report_fact: "report.validations[0].passed differs",
        dropped_entry: "report cites entries the bundle lacks",
    }
    for mutate, message in cases.items():
        with pytest.raises(BundleError) as err:
            verify_bundle(_tampered(bundle, mutate), vkey)
        assert message in err.value.detail, (mutate.__name__, err.value.detail)
    json.dumps(bundle)


def _validator(name: str):  # type: ignore[no-untyped-def]
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    root = Path(__file__).resolve().parent.parent / "schemas"
    docs = {p.name: json.loads(p.read_text()) for p in root.glob("*.json")}
    registry = Registry().with_resources(
        (f"https://ledger.local/schemas/{n}", Resource.from_contents(d)) for n, d in docs.items()
    )
    return Draft202012Validator(docs[name], registry=registry)


def test_bundle_entries_and_receipts_match_the_published_schemas(client, tokens, runtime, flow) -> None:
    base = "/api/v1/models/churn/versions"
    r = _post(client, base, registration(flow["runs"]["train"]), flow["registrar"])
    _validator("receipt.schema.json").validate(r.get_json()["receipt"])
    _post(client, f"{base}/3/validations", validation("performance"), tokens.pipeline)
    bundle = client.get("/api/v1/provenance/models/churn/versions/3/bundle", headers=auth(tokens.auditor)).get_json()
    _validator("bundle.schema.json").validate(bundle)
    seq = bundle["entries"][0]["header"]["seq"]
    _validator("entry.schema.json").validate(
        client.get(f"/api/v1/log/entries/{seq}", headers=auth(tokens.auditor)).get_json()
    )
    broken = copy.deepcopy(bundle)
    broken["entries"][0]["header"]["seq"] = -1
    assert not _validator("bundle.schema.json").is_valid(broken)
