"""Marshmallow schemas of the governance request bodies (DESIGN.md 4.1, normative)."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from ledger.errors import InvalidRequestError

DIGEST = validate.Regexp(r"\Asha256:[0-9a-f]{64}\Z", error="must be sha256:<64 lowercase hex>")
VERSION = validate.Regexp(r"\A[A-Za-z0-9][A-Za-z0-9._+-]{0,99}\Z", error="must be 1-100 of A-Z a-z 0-9 . _ + -")
NAME_RE = r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,199}\Z"
STAGE = validate.Regexp(r"\A[a-z][a-z0-9_-]{0,63}\Z", error="must be a lowercase stage name such as production")
TEXT = validate.Length(max=10_000)


class ArtifactSchema(Schema):
    class Meta:
        unknown = RAISE

    uri = fields.String(required=True, validate=validate.Length(min=1, max=2048))
    digest = fields.String(required=True, validate=DIGEST)


class ModelCardSchema(Schema):
    class Meta:
        unknown = RAISE

    intended_use = fields.String(validate=TEXT)
    limitations = fields.String(validate=TEXT)
    owner = fields.String(validate=validate.Length(max=200))
    risk_tier = fields.String(validate=validate.OneOf(["high", "medium", "low"]))


class RegisterSchema(Schema):
    class Meta:
        unknown = RAISE

    version = fields.String(required=True, validate=VERSION)
    artifact = fields.Nested(ArtifactSchema, required=True)
    training_run_id = fields.UUID(required=True)
    model_card = fields.Nested(ModelCardSchema, load_default=dict)


class ThresholdSchema(Schema):
    class Meta:
        unknown = RAISE

    min = fields.Float(allow_nan=False)
    max = fields.Float(allow_nan=False)


class ReportSchema(Schema):
    class Meta:
        unknown = RAISE

    uri = fields.String(required=True, validate=validate.Length(min=1, max=2048))
    digest = fields.String(required=True, validate=DIGEST)


class DatasetRefSchema(Schema):
    class Meta:
        unknown = RAISE

    namespace = fields.String(required=True, validate=validate.Length(min=1, max=1024))
    name = fields.String(required=True, validate=validate.Length(min=1, max=1024))


class ValidationSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.Regexp(r"\A[a-z][a-z0-9_-]{0,63}\Z"))
    metrics = fields.Dict(
        keys=fields.String(validate=validate.Length(max=200)), values=fields.Float(allow_nan=False), load_default=dict
    )
    thresholds = fields.Dict(
        keys=fields.String(validate=validate.Length(max=200)), values=fields.Nested(ThresholdSchema), load_default=dict
    )
    report = fields.Nested(ReportSchema, allow_none=True, load_default=None)
    datasets = fields.List(fields.Nested(DatasetRefSchema), load_default=list)
    run_id = fields.UUID(allow_none=True, load_default=None)
    passed = fields.Boolean(allow_none=True, load_default=None)


class ApprovalSchema(Schema):
    class Meta:
        unknown = RAISE

    stage = fields.String(required=True, validate=STAGE)
    comment = fields.String(load_default="", validate=TEXT)


class PromotionSchema(Schema):
    class Meta:
        unknown = RAISE

    stage = fields.String(required=True, validate=STAGE)


class DeploymentSchema(Schema):
    class Meta:
        unknown = RAISE

    stage = fields.String(required=True, validate=STAGE)
    environment = fields.String(required=True, validate=validate.Regexp(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z"))
    endpoint = fields.Url(allow_none=True, load_default=None, require_tld=False)


class EvaluateSchema(Schema):
    class Meta:
        unknown = RAISE

    package = fields.String(
        load_default="ledger.promotion", validate=validate.OneOf(["ledger.promotion", "ledger.access"])
    )
    input = fields.Dict(allow_none=True, load_default=None)
    model = fields.String(allow_none=True, load_default=None)
    version = fields.String(allow_none=True, load_default=None)
    stage = fields.String(load_default="production", validate=STAGE)


def _first(messages: Any, prefix: str = "") -> tuple[str, str]:
    if isinstance(messages, dict):
        key, val = next(iter(messages.items()))
        return _first(val, f"{prefix}/{key}")
    if isinstance(messages, list) and messages:
        head = messages[0]
        if isinstance(head, dict | list):
            return _first(head, prefix)
        return prefix or "/", str(head)
    return prefix or "/", str(messages)


def load(schema: Schema, body: Any) -> dict[str, Any]:
    """Validates a request body; the problem names the first offending field as a JSON pointer."""
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object", field="/")
    try:
        out: dict[str, Any] = schema.load(body)
    except ValidationError as e:
        field, msg = _first(e.messages)
        raise InvalidRequestError(f"{field}: {msg}", field=field, errors=e.messages) from e
    return out
