"""Governance endpoints (DESIGN.md 4 and 4.1): model registry, validations, approvals, policy-gated
promotions, deployments, provenance reports, audit bundles, policies."""

from __future__ import annotations

import re
from typing import Any

from flask import Response, current_app, jsonify
from flask_smorest import Blueprint

from ledger.api.auth import current_principal, requires
from ledger.api.body import json_body
from ledger.api.governance_schemas import (
    NAME_RE,
    ApprovalSchema,
    DeploymentSchema,
    EvaluateSchema,
    PromotionSchema,
    RegisterSchema,
    ValidationSchema,
    load,
)
from ledger.api.lineage import receipt_json
from ledger.errors import (
    InvalidRequestError,
    PayloadTooLargeError,
    PolicyError,
    UnprocessableError,
    VerificationError,
)
from ledger.governance.projection import require_version
from ledger.governance.provenance import promotion_input
from ledger.governance.service import GovernanceService, visible_model_versions
from ledger.policy.engine import oversized_list
from ledger.runtime import Runtime
from ledger.security.visibility import withhold_for
from ledger.tlog.entry import format_time

blp = Blueprint("governance", __name__, url_prefix="/api/v1", description="Model governance and provenance")

WRITE = ("pipeline", "admin")
READ = ("auditor", "admin", "pipeline", "approver", "security")
_NAME = re.compile(NAME_RE)


def _rt() -> Runtime:
    return current_app.extensions["ledger.runtime"]  # type: ignore[no-any-return]


def _gov() -> GovernanceService:
    return _rt().governance


def _name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidRequestError(f"model name {name[:80]!r} must be 1-200 of A-Z a-z 0-9 . _ -", field="name")
    return name


def _body(schema: Any) -> dict[str, Any]:
    out = load(schema, json_body())
    for key in ("training_run_id", "run_id"):
        if out.get(key) is not None:
            out[key] = str(out[key])
    return out


BODY = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}


@blp.route("/models/<name:name>/versions", methods=["POST"])
@blp.doc(
    security=[{"bearer": []}],
    requestBody={"required": True, "content": {"application/json": {"schema": RegisterSchema}}},
)
@requires(*WRITE)
def register(name: str) -> tuple[Response, int]:
    """Register a model version trained by a recorded run (409 if the version exists)."""
    rec = _gov().register(_name(name), _body(RegisterSchema()), current_principal())
    return jsonify({"model": rec.body, "receipt": receipt_json(rec.receipt)}), 201


@blp.route("/models/<name:name>/versions/<name:version>/validations", methods=["POST"])
@blp.doc(
    security=[{"bearer": []}],
    requestBody={"required": True, "content": {"application/json": {"schema": ValidationSchema}}},
)
@requires(*WRITE)
def validate(name: str, version: str) -> tuple[Response, int]:
    """Record a validation; `passed` is computed from metrics and thresholds."""
    rec = _gov().add_validation(_name(name), version, _body(ValidationSchema()), current_principal())
    return jsonify({"validation": rec.body, "receipt": receipt_json(rec.receipt)}), 201


@blp.route("/models/<name:name>/versions/<name:version>/approvals", methods=["POST"])
@blp.doc(
    security=[{"bearer": []}],
    requestBody={"required": True, "content": {"application/json": {"schema": ApprovalSchema}}},
)
@requires("approver")
def approve(name: str, version: str) -> tuple[Response, int]:
    """Approve a version for a stage; the approver is the authenticated principal."""
    rec = _gov().approve(_name(name), version, _body(ApprovalSchema()), current_principal())
    return jsonify({"approval": rec.body, "receipt": receipt_json(rec.receipt)}), 201


@blp.route("/models/<name:name>/versions/<name:version>/promotions", methods=["POST"])
@blp.doc(
    security=[{"bearer": []}],
    requestBody={"required": True, "content": {"application/json": {"schema": PromotionSchema}}},
)
@requires("pipeline", "approver", "admin")
def promote(name: str, version: str) -> tuple[Response, int]:
    """Evaluate the promotion policy and record the decision: 201 if allowed, 403 listing every violation."""
    stage = _body(PromotionSchema())["stage"]
    rec = _gov().promote(_name(name), version, stage, current_principal())
    return jsonify({"decision": rec.body, "receipt": receipt_json(rec.receipt)}), 201


@blp.route("/models/<name:name>/versions/<name:version>/deployments", methods=["POST"])
@blp.doc(
    security=[{"bearer": []}],
    requestBody={"required": True, "content": {"application/json": {"schema": DeploymentSchema}}},
)
@requires(*WRITE)
def deploy(name: str, version: str) -> tuple[Response, int]:
    """Record a deployment; refused (403, and the refusal recorded) without an allowed promotion."""
    rec = _gov().deploy(_name(name), version, _body(DeploymentSchema()), current_principal())
    return jsonify({"deployment": rec.body, "receipt": receipt_json(rec.receipt)}), 201


@blp.route("/models", methods=["GET"])
@blp.doc(security=[{"bearer": []}])
@requires(*READ)
def models() -> Response:
    with _rt().db.read() as s:
        by_name: dict[str, list[str]] = {}
        for mv in visible_model_versions(s, current_principal()):  # a model is its training run's namespace's
            by_name.setdefault(mv.name, []).append(mv.version)
    out = [{"name": n, "versions": v, "version_count": len(v)} for n, v in sorted(by_name.items())]
    return jsonify({"models": out})


@blp.route("/models/<name:name>/versions/<name:version>", methods=["GET"])
@blp.doc(security=[{"bearer": []}])
@requires(*READ)
def model_version(name: str, version: str) -> Response:
    """A model version with its current stage per environment and its verdicts."""
    return jsonify({"model": _gov().model(_name(name), version, current_principal())})


@blp.route("/provenance/models/<name:name>/versions/<name:version>", methods=["GET"])
@blp.doc(security=[{"bearer": []}])
@requires(*READ)
def provenance(name: str, version: str) -> Response:
    """The upstream closure, validations, approvals, decisions, deployments and the three verdicts."""
    return jsonify(_gov().report(_name(name), version, current_principal()))


@blp.route("/provenance/models/<name:name>/versions/<name:version>/bundle", methods=["GET"])
@blp.doc(security=[{"bearer": []}])
@requires(*READ)
def bundle(name: str, version: str) -> Response:
    """A self-contained audit bundle; `ledger verify BUNDLE --key VKEY` checks it offline."""
    doc = _gov().bundle(_name(name), version, current_principal())
    withhold_for(current_principal(), _rt().db, doc["entries"])
    return jsonify(doc)


@blp.route("/policies", methods=["GET"])
@blp.doc(security=[{"bearer": []}])
@requires("security", "admin", "auditor", "approver")
def policies() -> Response:
    """The policy bundle in force: its digest, and each file with its SHA-256 and source."""
    b = _rt().policy.bundle
    return jsonify(
        {
            "digest": b.digest,
            "files": [{"name": n, "sha256": b.files[n], "source": b.sources.get(n)} for n in sorted(b.files)],
        }
    )


@blp.route("/policies/evaluate", methods=["POST"])
@blp.doc(
    security=[{"bearer": []}],
    requestBody={"required": True, "content": {"application/json": {"schema": EvaluateSchema}}},
)
@requires("security", "admin", "auditor", "approver")
def evaluate() -> Response:
    """Dry run: evaluate a policy on a given input, or on the input the log gives a model version.

    The same bounds as a promotion (LEDGER_POLICY_MAX_ITEMS, LEDGER_POLICY_BUDGET_SECONDS): past
    them the answer is the denial a promotion would record. A body with a longer list is refused (413).
    """
    rt = _rt()
    raw = json_body()
    max_items = rt.policy.limits.max_items
    oversized = oversized_list(raw, max_items)
    if oversized is not None:
        path, size = oversized
        raise PayloadTooLargeError(
            f"{path} has {size} items, at most {max_items} (LEDGER_POLICY_MAX_ITEMS)", field=path
        )
    body = load(EvaluateSchema(), raw)
    doc = body.get("input")
    if doc is None:
        if not body.get("model") or not body.get("version"):
            raise InvalidRequestError("give `input`, or `model` and `version` to build it from the log", field="input")
        p = current_principal()
        with rt.db.read() as s:
            mv = require_version(s, _name(body["model"]), body["version"])
            doc = promotion_input(
                s,
                mv,
                stage=body["stage"],
                requester={"name": p.name, "roles": sorted(p.roles)},
                now=format_time(rt.ledger.clock()),
                config=rt.governance.config,
                roles_of=rt.governance.roles_of,
            )
    try:
        result = rt.policy.evaluate(body["package"], doc)
    except (PolicyError, VerificationError) as e:  # the caller's own input: a 422, not a server fault
        raise UnprocessableError(f"the policy cannot evaluate this input: {e.detail}", field="input") from e
    return jsonify(
        {
            "decision": {
                "allowed": result.allowed,
                "violations": list(result.violations),
                "warnings": list(result.warnings),
                "policy_digest": result.policy_digest,
                "input_digest": result.input_digest,
                "recorded": False,
            },
            "input": doc,
        }
    )
