"""Governance rules on SQLite and PostgreSQL: bad input writes nothing, segregation of duties,
policy bundle recording and fail-closed loading, dry runs, and `ledger rebuild`."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, auth, make_settings
from pipeline import build_pipeline, registration, validation
from sqlalchemy import text

from ledger.errors import PolicyError
from ledger.runtime import build_runtime, initialise

BASE = "/api/v1/models/churn/versions"


def _problem(r, status: int, field: str | None = None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.get_json()
    assert r.mimetype == "application/problem+json"
    body = r.get_json()
    if field is not None:
        assert field in (body.get("field") or "") or field in body["detail"], body
    return body


def test_bad_governance_input_is_refused_and_writes_nothing(client, tokens, runtime, pipeline_runs) -> None:
    size = runtime.ledger.size()
    # Unknown training run: 404.
    _problem(
        client.post(BASE, json=registration(str(uuid.uuid4())), headers=auth(tokens.pipeline)), 404, "training_run_id"
    )
    # Malformed digest: 400 naming the field.
    bad = registration(pipeline_runs["train"])
    bad["artifact"]["digest"] = "md5:abc"
    _problem(client.post(BASE, json=bad, headers=auth(tokens.pipeline)), 400, "/artifact/digest")
    # Unknown member, wrong type, bad version string: 400.
    _problem(
        client.post(BASE, json={**registration(pipeline_runs["train"]), "extra": 1}, headers=auth(tokens.pipeline)),
        400,
        "extra",
    )
    _problem(
        client.post(BASE, json={**registration(pipeline_runs["train"]), "version": 3}, headers=auth(tokens.pipeline)),
        400,
        "version",
    )
    _problem(
        client.post(
            "/api/v1/models/bad%20name/versions",
            json=registration(pipeline_runs["train"]),
            headers=auth(tokens.pipeline),
        ),
        400,
        "name",
    )
    # Unknown model or version: 404 for validations, approvals, promotions, deployments, reads.
    for path, body, token in (
        (f"{BASE}/9/validations", validation("performance"), tokens.pipeline),
        (f"{BASE}/9/approvals", {"stage": "production"}, tokens.approver),
        (f"{BASE}/9/promotions", {"stage": "production"}, tokens.pipeline),
        (f"{BASE}/9/deployments", {"stage": "production", "environment": "prod"}, tokens.pipeline),
    ):
        _problem(client.post(path, json=body, headers=auth(token)), 404, "version")
    _problem(client.get(f"{BASE}/9", headers=auth(tokens.auditor)), 404)
    _problem(client.get("/api/v1/provenance/models/nope/versions/1/bundle", headers=auth(tokens.auditor)), 404)
    assert runtime.ledger.size() == size

    assert (
        client.post(BASE, json=registration(pipeline_runs["train"]), headers=auth(tokens.pipeline)).status_code == 201
    )
    size = runtime.ledger.size()
    # Registered twice: 409.
    _problem(
        client.post(BASE, json=registration(pipeline_runs["train"]), headers=auth(tokens.pipeline)), 409, "version"
    )
    # A validation contradicting its thresholds: 422.
    contradicting = {**validation("performance", auc=0.70), "passed": True}
    body = _problem(
        client.post(f"{BASE}/3/validations", json=contradicting, headers=auth(tokens.pipeline)), 422, "passed"
    )
    assert "auc=0.7 is below min 0.85" in body["detail"]
    # Neither thresholds nor passed: 422; NaN metric: 400.
    _problem(
        client.post(
            f"{BASE}/3/validations", json={"type": "drift", "metrics": {"psi": 0.1}}, headers=auth(tokens.pipeline)
        ),
        422,
        "passed",
    )
    _problem(
        client.post(
            f"{BASE}/3/validations",
            data='{"type": "drift", "metrics": {"psi": NaN}, "passed": true}',
            content_type="application/json",
            headers=auth(tokens.pipeline),
        ),
        400,
    )
    assert runtime.ledger.size() == size

    # passed is computed: a failing metric records passed=false even when the client says nothing.
    r = client.post(f"{BASE}/3/validations", json=validation("performance", auc=0.70), headers=auth(tokens.pipeline))
    assert r.status_code == 201 and r.get_json()["validation"]["passed"] is False


def test_segregation_of_duties(client, tokens, runtime, pipeline_runs) -> None:
    """An approver who registered the model, or trained it, does not count."""
    _, both = runtime.principals.create("registrar-approver", roles=["pipeline", "approver"])
    assert client.post(BASE, json=registration(pipeline_runs["train"]), headers=auth(both)).status_code == 201
    for kind in ("performance", "bias"):
        assert (
            client.post(f"{BASE}/3/validations", json=validation(kind), headers=auth(tokens.pipeline)).status_code
            == 201
        )
    assert client.post(f"{BASE}/3/approvals", json={"stage": "production"}, headers=auth(both)).status_code == 201
    r = client.post(f"{BASE}/3/promotions", json={"stage": "production"}, headers=auth(tokens.pipeline))
    violations = " ".join(r.get_json()["decision"]["violations"])
    assert r.status_code == 403 and "segregation of duties" in violations

    # An independent approver counts.
    assert (
        client.post(f"{BASE}/3/approvals", json={"stage": "production"}, headers=auth(tokens.approver)).status_code
        == 201
    )
    r = client.post(f"{BASE}/3/promotions", json={"stage": "production"}, headers=auth(tokens.pipeline))
    assert r.status_code == 201, r.get_json()
    # Every decision, denied or allowed, is an entry.
    decisions = runtime.ledger.entries(kind="promotion.decision", limit=10)
    assert [d.payload["allowed"] for d in decisions] == [False, True]


def test_trainer_cannot_approve(client, runtime, tokens) -> None:
    _, trainer = runtime.principals.create("trainer", roles=["pipeline", "approver"])

    def post(event: dict[str, Any]) -> None:
        assert client.post("/api/v1/lineage", json=event, headers=auth(trainer)).status_code == 201

    runs = build_pipeline(post)
    assert client.post(BASE, json=registration(runs["train"]), headers=auth(tokens.pipeline)).status_code == 201
    for kind in ("performance", "bias"):
        client.post(f"{BASE}/3/validations", json=validation(kind), headers=auth(tokens.pipeline))
    client.post(f"{BASE}/3/approvals", json={"stage": "production"}, headers=auth(trainer))
    r = client.post(f"{BASE}/3/promotions", json={"stage": "production"}, headers=auth(tokens.pipeline))
    assert r.status_code == 403
    assert any("segregation of duties" in v for v in r.get_json()["decision"]["violations"])


def test_unreproducible_model_is_denied_with_what_is_missing(client, tokens, runtime) -> None:
    def post(event: dict[str, Any]) -> None:
        assert client.post("/api/v1/lineage", json=event, headers=auth(tokens.pipeline)).status_code == 201

    runs = build_pipeline(post, pin_training_input=False, code=False)
    assert client.post(BASE, json=registration(runs["train"]), headers=auth(tokens.pipeline)).status_code == 201
    report = client.get("/api/v1/provenance/models/churn/versions/3", headers=auth(tokens.auditor)).get_json()
    missing = report["verdicts"]["reproducible"]["missing"]
    assert any("records no code version" in m for m in missing)
    assert any("s3://features:churn" in m and "not pinned" in m for m in missing)
    assert report["verdicts"]["verifiable"]["ok"] is False
    r = client.post(f"{BASE}/3/promotions", json={"stage": "production"}, headers=auth(tokens.pipeline))
    assert r.status_code == 403
    assert any("code version" in v for v in r.get_json()["decision"]["violations"])


def test_policy_dry_run_records_nothing(client, tokens, runtime, pipeline_runs) -> None:
    client.post(BASE, json=registration(pipeline_runs["train"]), headers=auth(tokens.pipeline))
    size = runtime.ledger.size()
    r = client.post(
        "/api/v1/policies/evaluate",
        json={"model": "churn", "version": "3", "stage": "production"},
        headers=auth(tokens.security),
    )
    assert r.status_code == 200
    assert r.get_json()["decision"]["allowed"] is False and r.get_json()["decision"]["recorded"] is False
    r = client.post(
        "/api/v1/policies/evaluate",
        json={
            "package": "ledger.access",
            "input": {
                "principal": {"name": "x", "roles": ["auditor"], "clearances": []},
                "dataset": {"namespace": "s3://raw", "name": "customers", "tags": ["pii"]},
                "action": "read",
                "purpose": "analytics",
                "config": {"allowed_purposes": {"pii": ["fraud"]}},
            },
        },
        headers=auth(tokens.security),
    )
    assert r.status_code == 200 and r.get_json()["decision"]["allowed"] is False
    assert runtime.ledger.size() == size
    listing = client.get("/api/v1/policies", headers=auth(tokens.security)).get_json()
    assert listing["digest"] == runtime.policy.bundle.digest
    assert {f["name"] for f in listing["files"]} >= {"promotion.rego", "access.rego"}
    assert client.get("/api/v1/policies", headers=auth(tokens.pipeline)).status_code == 403


def test_policy_bundle_is_recorded_when_it_changes(tmp_path: Path, database_url: str) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    settings = make_settings(tmp_path, database_url, LEDGER_POLICY_DIR=str(policies))
    initialise(settings)
    initialise(settings)  # unchanged: not recorded again
    rt = build_runtime(settings)
    try:
        first = rt.ledger.entries(kind="policy.bundle")
        assert len(first) == 1 and first[0].payload["digest"] == rt.policy.bundle.digest
        assert set(first[0].payload["files"]) >= {"promotion.rego", "access.rego"}
    finally:
        rt.close()
    with (policies / "promotion.rego").open("a") as f:
        f.write("\n# a comment changes the digest\n")
    initialise(settings)
    rt = build_runtime(settings)
    try:
        entries = rt.ledger.entries(kind="policy.bundle")
        assert len(entries) == 2 and entries[1].payload["digest"] == rt.policy.bundle.digest
        assert entries[1].header.subject == f"policy:{rt.policy.bundle.digest}"
    finally:
        rt.close()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("package ledger.promotion\nimport rego.v1\ndeny contains msg if {\n  msg := \n}\n", "promotion.rego"),
        ('package ledger.promotion\ndeny[msg] { msg := "x" }\n', "promotion.rego"),
    ],
)
def test_a_broken_policy_stops_start_up(tmp_path: Path, source: str, message: str) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "promotion.rego").write_text(source)
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'l.db'}", LEDGER_POLICY_DIR=str(policies))
    with pytest.raises(PolicyError) as err:
        initialise(settings)
    assert message in err.value.detail
    import subprocess
    import sys

    env = {**__import__("os").environ, "LEDGER_DATA_DIR": str(tmp_path / "d"), "LEDGER_POLICY_DIR": str(policies)}
    r = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "init"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and "promotion.rego" in r.stderr and "Traceback" not in r.stderr


def test_rebuild_reproduces_every_projection(client, tokens, runtime, pipeline_runs) -> None:
    from conftest import projection_snapshot

    from ledger.projections import rebuild_all

    client.post(BASE, json=registration(pipeline_runs["train"]), headers=auth(tokens.pipeline))
    client.post(f"{BASE}/3/validations", json=validation("performance"), headers=auth(tokens.pipeline))
    client.post(f"{BASE}/3/approvals", json={"stage": "production"}, headers=auth(tokens.approver))
    client.post(f"{BASE}/3/promotions", json={"stage": "production"}, headers=auth(tokens.pipeline))

    before = projection_snapshot(runtime)
    assert before["lineage_runs"] and before["gov_decisions"]
    with runtime.db.engine.begin() as c:  # damage a projection: rebuild must repair it
        c.execute(text("DELETE FROM lineage_job_datasets"))
        c.execute(text("UPDATE gov_model_versions SET artifact_uri = 'tampered'"))
    assert projection_snapshot(runtime) != before
    counts = rebuild_all(runtime.projector)
    assert counts["entries replayed"] == runtime.ledger.size()
    after = projection_snapshot(runtime)
    for table in before:
        assert after[table] == before[table], table
