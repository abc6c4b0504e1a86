"""OpenLineage intake endpoints (DESIGN.md 4): one event, or a batch."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify, url_for
from flask_smorest import Blueprint

from ledger.api.auth import current_principal, requires
from ledger.api.body import json_body
from ledger.api.schemas import BatchResponseSchema, ProblemSchema, ReceiptEnvelopeSchema
from ledger.errors import InvalidRequestError
from ledger.lineage.intake import LineageIntake
from ledger.store.ledger import Receipt

blp = Blueprint("lineage", __name__, url_prefix="/api/v1", description="OpenLineage intake")

MAX_BATCH = 10_000
OPENLINEAGE_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"type": "object", "description": "an OpenLineage event"}}},
}


def _intake() -> LineageIntake:
    return current_app.extensions["ledger.intake"]  # type: ignore[no-any-return]


def receipt_json(receipt: Receipt) -> dict[str, Any]:
    return receipt.to_json(url_for("log.entry", seq=receipt.seq, _external=True))


@blp.route("/lineage", methods=["POST"])
@blp.doc(requestBody=OPENLINEAGE_BODY, security=[{"bearer": []}])
@blp.alt_response(201, schema=ReceiptEnvelopeSchema, description="recorded")
@blp.alt_response(200, schema=ReceiptEnvelopeSchema, description="already recorded: the original receipt")
@blp.alt_response(400, schema=ProblemSchema, description="invalid event")
@requires("pipeline", "admin")
def post_event() -> tuple[Response, int]:
    """Record one OpenLineage RunEvent, DatasetEvent or JobEvent."""
    event = json_body(check_strings=False)  # validate_event refuses them, naming the member
    receipt = _intake().record(event, current_principal())
    return jsonify({"receipt": receipt_json(receipt)}), (200 if receipt.duplicate else 201)


@blp.route("/lineage/batch", methods=["POST"])
@blp.doc(
    requestBody={
        "required": True,
        "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}},
    },
    security=[{"bearer": []}],
)
@blp.alt_response(200, schema=BatchResponseSchema, description="every event recorded or reported")
@requires("pipeline", "admin")
def post_batch() -> tuple[Response, int]:
    """Record a JSON array of OpenLineage events; invalid ones are reported by index."""
    events = json_body(check_strings=False)  # refused per event, reported by index
    if not isinstance(events, list):
        raise InvalidRequestError("a batch must be a JSON array of OpenLineage events", field="/")
    if len(events) > MAX_BATCH:
        raise InvalidRequestError(f"a batch holds at most {MAX_BATCH} events, got {len(events)}", field="/")
    outcome = _intake().record_batch(events, current_principal())
    failed = [
        {"index": i, "reason": e.detail, **({"field": e.extra["field"]} if "field" in e.extra else {})}
        for i, e in sorted(outcome.failures.items())
    ]
    body = {
        "status": "success" if not failed else "partial_success",
        "summary": {"received": outcome.received, "successful": len(outcome.receipts), "failed": len(failed)},
        "failed_events": failed,
        "receipts": [{"index": i, "receipt": receipt_json(r)} for i, r in sorted(outcome.receipts.items())],
    }
    return jsonify(body), 200
