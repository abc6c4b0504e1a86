"""Marshmallow schemas of the HTTP API's bodies (used for the OpenAPI document and responses)."""

from __future__ import annotations

from marshmallow import Schema, fields


class ReceiptSchema(Schema):
    seq = fields.Integer(required=True)
    leaf_hash = fields.String(required=True)
    integrated_time = fields.String(required=True)
    entry_url = fields.String(required=True)
    checkpoint = fields.String(required=True)
    inclusion_proof = fields.List(fields.String(), required=True)


class ReceiptEnvelopeSchema(Schema):
    receipt = fields.Nested(ReceiptSchema, required=True)


class BatchFailureSchema(Schema):
    index = fields.Integer(required=True)
    reason = fields.String(required=True)
    field = fields.String()


class BatchReceiptSchema(Schema):
    index = fields.Integer(required=True)
    receipt = fields.Nested(ReceiptSchema, required=True)


class BatchSummarySchema(Schema):
    received = fields.Integer(required=True)
    successful = fields.Integer(required=True)
    failed = fields.Integer(required=True)


class BatchResponseSchema(Schema):
    status = fields.String(required=True)
    summary = fields.Nested(BatchSummarySchema, required=True)
    failed_events = fields.List(fields.Nested(BatchFailureSchema), required=True)
    receipts = fields.List(fields.Nested(BatchReceiptSchema), required=True)


class HeaderSchema(Schema):
    format = fields.String(required=True)
    seq = fields.Integer(required=True)
    kind = fields.String(required=True)
    subject = fields.String(required=True)
    integrated_time = fields.String(required=True)
    principal = fields.String(required=True)
    payload_digest = fields.String(required=True)


class EntrySchema(Schema):
    header = fields.Nested(HeaderSchema, required=True)
    payload = fields.Raw(allow_none=True, required=True)
    salt = fields.String(allow_none=True, required=True)
    leaf_hash = fields.String(required=True)
    erased = fields.Boolean(required=True)
    erasure_seq = fields.Integer(metadata={"description": "when erased: the seq of its payload.erasure entry"})
    missing = fields.String(metadata={"description": "the payload is absent and no payload.erasure entry names it"})
    withheld = fields.String(metadata={"description": "why the payload is not served to this principal"})


class EntryPageSchema(Schema):
    entries = fields.List(fields.Nested(EntrySchema), required=True)
    next_after = fields.Integer(allow_none=True, required=True)


class EntryQuerySchema(Schema):
    kind = fields.String()
    subject = fields.String()
    after = fields.Integer(strict=False)
    limit = fields.Integer(strict=False)


class InclusionQuerySchema(Schema):
    seq = fields.Integer(required=True)
    tree_size = fields.Integer(required=True)


class InclusionProofSchema(Schema):
    seq = fields.Integer(required=True)
    tree_size = fields.Integer(required=True)
    leaf_hash = fields.String(required=True)
    hashes = fields.List(fields.String(), required=True)


class ConsistencyQuerySchema(Schema):
    first = fields.Integer(required=True)
    second = fields.Integer(required=True)


class ConsistencyProofSchema(Schema):
    first = fields.Integer(required=True)
    second = fields.Integer(required=True)
    hashes = fields.List(fields.String(), required=True)


class KeySchema(Schema):
    key_id = fields.String(required=True)
    name = fields.String(required=True)
    verifier_key = fields.String(required=True)
    valid_from = fields.String(required=True)
    valid_until = fields.String(allow_none=True, required=True)
    current = fields.Boolean(required=True)


class KeysSchema(Schema):
    origin = fields.String(required=True)
    keys = fields.List(fields.Nested(KeySchema), required=True)


class ProblemSchema(Schema):
    type = fields.String()
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    field = fields.String()
    instance = fields.String()
