"""Security endpoints (DESIGN.md 4, role security): erasure, classification, access decisions."""

from __future__ import annotations

from flask import Response, current_app, jsonify
from flask_smorest import Blueprint
from marshmallow import RAISE, Schema, fields, validate

from ledger.api.auth import current_principal, requires
from ledger.api.body import json_body
from ledger.api.governance_schemas import DatasetRefSchema, load
from ledger.api.lineage import receipt_json
from ledger.api.params import MAX_INT
from ledger.errors import InvalidRequestError
from ledger.projections import erase as erase_payload
from ledger.security.classification import classify

blp = Blueprint("security", __name__, url_prefix="/api/v1", description="Security: classification, erasure")


def _check_seq(seq: int) -> None:
    if not 0 <= seq <= MAX_INT:
        raise InvalidRequestError(f"seq must be between 0 and {MAX_INT}", field="seq")


class ErasureSchema(Schema):
    class Meta:
        unknown = RAISE

    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))


class ClassificationSchema(Schema):
    class Meta:
        unknown = RAISE

    tags = fields.List(
        fields.String(validate=validate.Regexp(r"\A[a-z][a-z0-9_-]{0,63}\Z", error="tags are lowercase words")),
        required=True,
        validate=validate.Length(min=1, max=32),
    )
    justification = fields.String(required=True, validate=validate.Length(min=1, max=4000))
    declassify = fields.Boolean(load_default=False)


@blp.route("/datasets/<name:namespace>/<name:name>/classification", methods=["POST"])
@blp.doc(
    security=[{"bearer": []}],
    requestBody={"required": True, "content": {"application/json": {"schema": ClassificationSchema}}},
)
@requires("security")
def classification(namespace: str, name: str) -> tuple[Response, int]:
    """Classify a dataset (tags such as pii), or declassify a transform's output; propagates downstream."""
    body = load(ClassificationSchema(), json_body())
    rt = current_app.extensions["ledger.runtime"]
    result, receipt = classify(
        rt.ledger,
        rt.projector,
        namespace=namespace,
        name=name,
        tags=body["tags"],
        justification=body["justification"],
        declassify=body["declassify"],
        principal=current_principal().name,
    )
    return jsonify({"classification": result, "receipt": receipt_json(receipt)}), 201


@blp.route("/log/entries/<int:seq>/erasure", methods=["POST"])
@blp.doc(
    security=[{"bearer": []}],
    requestBody={"required": True, "content": {"application/json": {"schema": ErasureSchema}}},
)
@requires("security")
def erase(seq: int) -> tuple[Response, int]:
    """Erase an entry's payload and salt (GDPR, legal hold release); proofs keep holding."""
    _check_seq(seq)
    body = load(ErasureSchema(), json_body())
    rt = current_app.extensions["ledger.runtime"]
    receipt = erase_payload(rt.ledger, rt.projector, seq, reason=body["reason"], principal=current_principal().name)
    return jsonify({"receipt": receipt_json(receipt), "erased": seq}), 201


class AccessRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    principal = fields.String(required=True, validate=validate.Length(min=1, max=200))
    dataset = fields.Nested(DatasetRefSchema, required=True)
    action = fields.String(required=True, validate=validate.Length(min=1, max=64))
    purpose = fields.String(required=True, validate=validate.Length(min=1, max=200))


class ResolutionSchema(Schema):
    class Meta:
        unknown = RAISE

    reason = fields.String(required=True, validate=validate.Length(min=1, max=4000))


@blp.route("/access/decisions", methods=["POST"])
@blp.doc(
    security=[{"bearer": []}],
    requestBody={"required": True, "content": {"application/json": {"schema": AccessRequestSchema}}},
)
@requires("security")
def access_decision() -> tuple[Response, int]:
    """Decide whether a principal may read a dataset for a purpose (policies/access.rego); recorded."""
    body = load(AccessRequestSchema(), json_body())
    rt = current_app.extensions["ledger.runtime"]
    decision, receipt = rt.access.decide(
        principal=body["principal"],
        namespace=body["dataset"]["namespace"],
        name=body["dataset"]["name"],
        action=body["action"],
        purpose=body["purpose"],
        requested_by=current_principal(),
    )
    return jsonify({"decision": decision, "receipt": receipt_json(receipt)}), 200


@blp.route("/violations", methods=["GET"])
@blp.doc(security=[{"bearer": []}])
@requires("security", "auditor", "admin")
def violations() -> Response:
    """Open intake violations: runs that read classified data beyond their principal's clearance."""
    from ledger.security.access import open_violations

    with current_app.extensions["ledger.runtime"].db.read() as s:
        return jsonify({"violations": open_violations(s)})


@blp.route("/violations/<int:seq>/resolution", methods=["POST"])
@blp.doc(
    security=[{"bearer": []}],
    requestBody={"required": True, "content": {"application/json": {"schema": ResolutionSchema}}},
)
@requires("security")
def resolve_violation(seq: int) -> tuple[Response, int]:
    """Resolve a violation (recorded as an allowed access decision naming it)."""
    _check_seq(seq)
    body = load(ResolutionSchema(), json_body())
    rt = current_app.extensions["ledger.runtime"]
    decision, receipt = rt.access.resolve(seq, reason=body["reason"], by=current_principal())
    return jsonify({"decision": decision, "receipt": receipt_json(receipt)}), 201
