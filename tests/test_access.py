"""Access decisions and intake violations, on SQLite and PostgreSQL."""

from __future__ import annotations

from urllib.parse import quote

from conftest import auth
from events import run_event
from pipeline import registration, validation

BASE = "/api/v1/models/churn/versions"


def _classify(client, tokens, ns: str, name: str) -> None:  # type: ignore[no-untyped-def]
    r = client.post(
        f"/api/v1/datasets/{quote(ns, safe='')}/{quote(name, safe='')}/classification",
        json={"tags": ["pii"], "justification": "customer emails"},
        headers=auth(tokens.security),
    )
    assert r.status_code == 201


def _decide(client, tokens, principal: str, purpose: str):  # type: ignore[no-untyped-def]
    return client.post(
        "/api/v1/access/decisions",
        headers=auth(tokens.security),
        json={
            "principal": principal,
            "dataset": {"namespace": "s3://clean", "name": "customers"},
            "action": "read",
            "purpose": purpose,
        },
    )


def test_access_decisions_follow_the_policy_and_are_recorded(client, tokens, runtime, pipeline_runs) -> None:
    _classify(client, tokens, "s3://raw", "customers")
    runtime.principals.create("dpo", roles=["auditor"], clearances=["pii"])
    runtime.principals.create("analyst", roles=["auditor"])
    r = _decide(client, tokens, "dpo", "fraud-investigation")
    assert r.status_code == 200, r.get_json()
    d = r.get_json()["decision"]
    assert d["allowed"] is True and d["tags"] == ["pii"] and d["policy_digest"] == runtime.policy.bundle.digest
    entry = runtime.ledger.entry(d["seq"])
    assert entry.header.kind == "access.decision" and entry.header.subject == "dataset:s3://clean:customers"
    denied = _decide(client, tokens, "analyst", "fraud-investigation").get_json()["decision"]
    assert denied["allowed"] is False and any("pii" in reason for reason in denied["reasons"])
    wrong_purpose = _decide(client, tokens, "dpo", "marketing").get_json()["decision"]
    assert wrong_purpose["allowed"] is False and any("marketing" in reason for reason in wrong_purpose["reasons"])
    size = runtime.ledger.size()
    assert _decide(client, tokens, "nobody", "audit").status_code == 404
    assert (
        client.post(
            "/api/v1/access/decisions",
            headers=auth(tokens.auditor),
            json={
                "principal": "dpo",
                "dataset": {"namespace": "s3://clean", "name": "customers"},
                "action": "read",
                "purpose": "x",
            },
        ).status_code
        == 403
    )
    assert runtime.ledger.size() == size


def test_intake_violation_is_recorded_listed_and_blocks_promotion_until_resolved(
    client, tokens, runtime, pipeline_runs
) -> None:
    _classify(client, tokens, "s3://raw", "customers")
    # etl-nightly (no pii clearance) runs a job reading the pii data: recorded, and a violation.
    before = runtime.ledger.size()
    event = run_event(
        job="retrain",
        namespace="ml",
        inputs=[{"namespace": "s3://features", "name": "churn"}],
        outputs=[{"namespace": "s3://models", "name": "churn"}],
        job_facets={"sourceCodeLocation": {"type": "git", "url": "https://g", "version": "1"}},
    )
    r = client.post("/api/v1/lineage", json=event, headers=auth(tokens.pipeline))
    assert r.status_code == 201
    runtime.projector.sync_to_head()  # the screen follows the log: it has seen the event once this returns
    assert runtime.ledger.size() == before + 2  # the event, and the denied access decision
    listed = client.get("/api/v1/violations", headers=auth(tokens.security)).get_json()["violations"]
    assert len(listed) == 1 and listed[0]["dataset"] == "s3://features:churn"
    assert listed[0]["run_id"] == event["run"]["runId"] and listed[0]["principal"] == "etl-nightly"
    # The same event again: stored once, and no second violation.
    assert client.post("/api/v1/lineage", json=event, headers=auth(tokens.pipeline)).status_code == 200
    assert len(client.get("/api/v1/violations", headers=auth(tokens.security)).get_json()["violations"]) == 1
    assert client.get("/api/v1/violations", headers=auth(tokens.pipeline)).status_code == 403

    # A model trained by that run is denied production while the violation is open.
    base = "/api/v1/models/churn/versions"
    assert (
        client.post(
            base, json=registration(event["run"]["runId"], version="4"), headers=auth(tokens.pipeline)
        ).status_code
        == 201
    )
    for kind in ("performance", "bias"):
        client.post(f"{base}/4/validations", json=validation(kind), headers=auth(tokens.pipeline))
    client.post(f"{base}/4/approvals", json={"stage": "production"}, headers=auth(tokens.approver))
    r = client.post(f"{base}/4/promotions", json={"stage": "production"}, headers=auth(tokens.pipeline))
    assert r.status_code == 403
    assert any(str(listed[0]["seq"]) in v or "violation" in v for v in r.get_json()["decision"]["violations"])

    r = client.post(
        f"/api/v1/violations/{listed[0]['seq']}/resolution",
        json={"reason": "DPO approved, ticket 7"},
        headers=auth(tokens.security),
    )
    assert r.status_code == 201
    assert client.get("/api/v1/violations", headers=auth(tokens.security)).get_json()["violations"] == []
    assert (
        client.post(
            f"/api/v1/violations/{listed[0]['seq']}/resolution", json={"reason": "again"}, headers=auth(tokens.security)
        ).status_code
        == 409
    )
    r = client.post(f"{base}/4/promotions", json={"stage": "production"}, headers=auth(tokens.pipeline))
    assert not any("violation" in v for v in r.get_json()["decision"]["violations"]), r.get_json()


def test_cleared_pipeline_reads_without_violation(client, tokens, runtime, pipeline_runs) -> None:
    _classify(client, tokens, "s3://raw", "customers")
    _, cleared = runtime.principals.create("etl-pii", roles=["pipeline"], clearances=["pii"])
    r = client.post(
        "/api/v1/lineage",
        json=run_event(inputs=[{"namespace": "s3://raw", "name": "customers"}]),
        headers=auth(cleared),
    )
    assert r.status_code == 201
    assert client.get("/api/v1/violations", headers=auth(tokens.security)).get_json()["violations"] == []
