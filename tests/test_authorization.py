"""Every endpoint against every role (DESIGN.md 6): 401 without a valid token, 403 with the wrong
role, and neither for an allowed role. The table is checked against the app's own URL map, so an
endpoint added without an entry here fails the suite."""

from __future__ import annotations

import uuid
from typing import Any

from conftest import auth
from events import run_event

ALL = ("pipeline", "auditor", "approver", "security", "admin")
READ = ("pipeline", "auditor", "approver", "security", "admin")
PUBLIC = "public"
RUN = str(uuid.uuid4())

# endpoint -> (method, path, body, roles allowed)
TABLE: dict[str, tuple[str, str, Any, Any]] = {
    "lineage.post_event": ("POST", "/api/v1/lineage", run_event(run_id=RUN), ("pipeline", "admin")),
    "lineage.post_batch": ("POST", "/api/v1/lineage/batch", [run_event()], ("pipeline", "admin")),
    "log.checkpoint": ("GET", "/api/v1/log/checkpoint", None, PUBLIC),
    "log.cosigned_checkpoint": ("GET", "/api/v1/log/checkpoint/cosigned", None, PUBLIC),
    "log.keys": ("GET", "/api/v1/log/keys", None, PUBLIC),
    "log.entries": ("GET", "/api/v1/log/entries", None, ALL),
    "log.entry": ("GET", "/api/v1/log/entries/0", None, ALL),
    "log.receipt": ("GET", "/api/v1/log/entries/0/receipt", None, ALL),
    "log.export": ("GET", "/api/v1/log/export", None, ALL),
    "log.inclusion": ("GET", "/api/v1/log/proof/inclusion?seq=0&tree_size=1", None, ALL),
    "log.consistency": ("GET", "/api/v1/log/proof/consistency?first=1&second=1", None, ALL),
    "security.erase": ("POST", "/api/v1/log/entries/0/erasure", {"reason": "test"}, ("security",)),
    "security.classification": (
        "POST",
        "/api/v1/datasets/s3%3A%2F%2Fraw/customers/classification",
        {"tags": ["pii"], "justification": "j"},
        ("security",),
    ),
    "security.access_decision": (
        "POST",
        "/api/v1/access/decisions",
        {
            "principal": "audit",
            "dataset": {"namespace": "s3://raw", "name": "customers"},
            "action": "read",
            "purpose": "audit",
        },
        ("security",),
    ),
    "security.violations": ("GET", "/api/v1/violations", None, ("security", "auditor", "admin")),
    "security.resolve_violation": ("POST", "/api/v1/violations/0/resolution", {"reason": "r"}, ("security",)),
    "lineage_reads.namespaces": ("GET", "/api/v1/namespaces", None, READ),
    "lineage_reads.datasets": ("GET", "/api/v1/namespaces/etl/datasets", None, READ),
    "lineage_reads.dataset": ("GET", "/api/v1/namespaces/etl/datasets/x", None, READ),
    "lineage_reads.dataset_versions": ("GET", "/api/v1/namespaces/etl/datasets/x/versions", None, READ),
    "lineage_reads.jobs": ("GET", "/api/v1/namespaces/etl/jobs", None, READ),
    "lineage_reads.job": ("GET", "/api/v1/namespaces/etl/jobs/clean_customers", None, READ),
    "lineage_reads.job_runs": ("GET", "/api/v1/namespaces/etl/jobs/clean_customers/runs", None, READ),
    "lineage_reads.run": ("GET", f"/api/v1/jobs/runs/{RUN}", None, READ),
    "lineage_reads.lineage": ("GET", "/api/v1/lineage?nodeId=job:etl:clean_customers&depth=2", None, READ),
    "lineage_reads.namespace": ("GET", "/api/v1/namespaces/etl", None, READ),
    "lineage_reads.dataset_version": ("GET", "/api/v1/namespaces/etl/datasets/x/versions/1", None, READ),
    "lineage_reads.column_lineage": ("GET", "/api/v1/column-lineage?nodeId=dataset:etl:x", None, READ),
    "lineage_reads.lineage_events": ("GET", "/api/v1/events/lineage", None, READ),
    "lineage_reads.sources": ("GET", "/api/v1/sources", None, READ),
    "lineage_reads.source": ("GET", "/api/v1/sources/crm", None, READ),
    "lineage_reads.tags": ("GET", "/api/v1/tags", None, READ),
    "lineage_reads.search": ("GET", "/api/v1/search?q=clean", None, READ),
    "lineage_reads.events": ("GET", "/api/v1/events", None, READ),
    "lineage_reads.namespace_events": ("GET", "/api/v1/events/etl", None, READ),
    "lineage_reads.job_versions": ("GET", "/api/v1/namespaces/etl/jobs/clean_customers/versions", None, READ),
    "lineage_reads.job_version": ("GET", "/api/v1/namespaces/etl/jobs/clean_customers/versions/1", None, READ),
    "lineage_reads.run_upstream": ("GET", f"/api/v1/runlineage/upstream?runId={RUN}", None, READ),
    "lineage_reads.run_facets": ("GET", f"/api/v1/jobs/runs/{RUN}/facets?type=run", None, READ),
    "lineage_reads.lineage_event_stats": ("GET", "/api/v1/stats/lineage-events?period=DAY", None, READ),
    "lineage_reads.job_stats": ("GET", "/api/v1/stats/jobs?period=DAY", None, READ),
    "lineage_reads.dataset_stats": ("GET", "/api/v1/stats/datasets?period=DAY", None, READ),
    "lineage_reads.source_stats": ("GET", "/api/v1/stats/sources?period=DAY", None, READ),
    "governance.models": ("GET", "/api/v1/models", None, READ),
    "governance.register": ("POST", "/api/v1/models/m/versions", {}, ("pipeline", "admin")),
    "governance.model_version": ("GET", "/api/v1/models/m/versions/1", None, READ),
    "governance.validate": ("POST", "/api/v1/models/m/versions/1/validations", {}, ("pipeline", "admin")),
    "governance.approve": ("POST", "/api/v1/models/m/versions/1/approvals", {}, ("approver",)),
    "governance.promote": ("POST", "/api/v1/models/m/versions/1/promotions", {}, ("pipeline", "approver", "admin")),
    "governance.deploy": ("POST", "/api/v1/models/m/versions/1/deployments", {}, ("pipeline", "admin")),
    "governance.provenance": ("GET", "/api/v1/provenance/models/m/versions/1", None, READ),
    "governance.bundle": ("GET", "/api/v1/provenance/models/m/versions/1/bundle", None, READ),
    "governance.policies": ("GET", "/api/v1/policies", None, ("security", "admin", "auditor", "approver")),
    "governance.evaluate": (
        "POST",
        "/api/v1/policies/evaluate",
        {"input": {}},
        ("security", "admin", "auditor", "approver"),
    ),
    "admin.create_principal": (
        "POST",
        "/api/v1/principals",
        {"name": f"p-{uuid.uuid4().hex[:6]}", "roles": ["auditor"]},
        ("admin",),
    ),
    # A principal no test token belongs to (404 for the admin): revoking one would end the table.
    "admin.revoke_principal": ("POST", "/api/v1/principals/nobody-here/revocation", None, ("admin",)),
    "admin.rotate_principal": ("POST", "/api/v1/principals/nobody-here/rotation", None, ("admin",)),
    "openapi_json": ("GET", "/api/v1/openapi.json", None, PUBLIC),
    "ops.healthz": ("GET", "/healthz", None, PUBLIC),
    "ops.readyz": ("GET", "/readyz", None, PUBLIC),
    "ops.metrics": ("GET", "/metrics", None, PUBLIC),
    # The console's page and assets are public: its data comes through the API with the Bearer token.
    "console.index": ("GET", "/console/log", None, PUBLIC),
    "console.assets": ("GET", "/console/assets/console.js", None, PUBLIC),
}


def test_the_table_covers_every_endpoint(app) -> None:
    endpoints = {r.endpoint for r in app.url_map.iter_rules()} - {"static"}
    assert endpoints == set(TABLE), f"missing: {endpoints - set(TABLE)}, stale: {set(TABLE) - endpoints}"


def _call(client, method: str, path: str, body: Any, headers: dict[str, str], addr: str = "127.0.0.1"):  # type: ignore[no-untyped-def]
    env = {"REMOTE_ADDR": addr}  # failed attempts are rate-limited per client: one client per endpoint
    if method == "GET":
        r = client.get(path, headers=headers, environ_base=env)
    else:
        r = client.post(path, json=body, headers=headers, environ_base=env)
    r.get_data()  # drain streamed bodies (export) before the next request
    r.close()
    return r


def test_every_endpoint_against_every_role(client, tokens) -> None:
    failures: list[str] = []
    for i, endpoint in enumerate(sorted(TABLE)):
        failures += _check(endpoint, client, tokens, f"127.0.{i // 250}.{i % 250 + 1}")
    assert not failures, "\n".join(failures)


def _check(endpoint: str, client, tokens, addr: str) -> list[str]:  # type: ignore[no-untyped-def]
    method, path, body, allowed = TABLE[endpoint]
    bad: list[str] = []
    for name, headers in (
        ("no token", {}),
        ("bad token", auth("lgr_not-a-token")),
        ("malformed", {"Authorization": "Basic abc"}),
    ):
        r = _call(client, method, path, body, headers, addr)
        if allowed == PUBLIC:
            if r.status_code in (401, 403):
                bad.append(f"{endpoint} {name}: {r.status_code}, expected public")
        elif r.status_code != 401 or r.mimetype != "application/problem+json":
            bad.append(f"{endpoint} {name}: {r.status_code} {r.mimetype}, expected 401 problem+json")
    for role in ALL:
        r = _call(client, method, path, body, auth(getattr(tokens, role)), addr)
        if allowed == PUBLIC or role in allowed:
            if r.status_code in (401, 403) or r.status_code >= 500:
                bad.append(f"{endpoint} as {role}: {r.status_code} {r.get_data(as_text=True)[:200]}")
        elif r.status_code != 403 or r.mimetype != "application/problem+json":
            bad.append(f"{endpoint} as {role}: {r.status_code}, expected 403 problem+json")
    return bad
