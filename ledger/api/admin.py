"""Principal management over HTTP (role admin): what `ledger principals add|revoke|rotate` do, remotely."""

from __future__ import annotations

from flask import Response, current_app, jsonify
from flask_smorest import Blueprint
from marshmallow import RAISE, Schema, fields, validate

from ledger.api.auth import requires
from ledger.api.body import json_body
from ledger.api.governance_schemas import load
from ledger.security.principals import ROLES, PrincipalStore

blp = Blueprint("admin", __name__, url_prefix="/api/v1", description="Principals (admin)")


class PrincipalSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Regexp(r"\A[A-Za-z0-9][A-Za-z0-9._@-]{0,199}\Z"))
    roles = fields.List(
        fields.String(validate=validate.OneOf(sorted(ROLES))), required=True, validate=validate.Length(min=1)
    )
    namespaces = fields.List(fields.String(validate=validate.Length(min=1, max=1024)), load_default=list)
    clearances = fields.List(fields.String(validate=validate.Length(min=1, max=64)), load_default=list)


@blp.route("/principals", methods=["POST"])
@blp.doc(
    security=[{"bearer": []}],
    requestBody={"required": True, "content": {"application/json": {"schema": PrincipalSchema}}},
)
@requires("admin")
def create_principal() -> tuple[Response, int]:
    """Create a principal; the response holds its token, shown this once."""
    body = load(PrincipalSchema(), json_body())
    store: PrincipalStore = current_app.extensions["ledger.principals"]
    p, token = store.create(
        body["name"], roles=body["roles"], namespaces=body["namespaces"], clearances=body["clearances"]
    )
    return jsonify(
        {
            "principal": {
                "name": p.name,
                "roles": sorted(p.roles),
                "namespaces": sorted(p.namespaces),
                "clearances": sorted(p.clearances),
            },
            "token": token,
        }
    ), 201


@blp.route("/principals/<name:name>/revocation", methods=["POST"])
@blp.doc(security=[{"bearer": []}])
@requires("admin")
def revoke_principal(name: str) -> Response:
    """Revoke a principal's token: it answers 401 from the next request on, on every worker and host."""
    store: PrincipalStore = current_app.extensions["ledger.principals"]
    store.revoke(name)
    return jsonify({"principal": {"name": name, "revoked": True}})


@blp.route("/principals/<name:name>/rotation", methods=["POST"])
@blp.doc(security=[{"bearer": []}])
@requires("admin")
def rotate_principal(name: str) -> tuple[Response, int]:
    """Give a principal a new token (shown this once); the old one answers 401 from the next request on."""
    store: PrincipalStore = current_app.extensions["ledger.principals"]
    token = store.rotate(name)
    return jsonify({"principal": {"name": name, "revoked": False}, "token": token}), 201
