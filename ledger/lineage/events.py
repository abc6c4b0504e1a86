"""OpenLineage event validation (spec 2-0-2 required fields) and classification into entry kinds.

The event is stored exactly as received (DESIGN.md 3.1); validation only decides whether it is
acceptable and what its subject is. Unknown members and facets are kept, as the spec requires.

Invariant: an accepted event can be stored and projected on SQLite and PostgreSQL alike, so the two
backends accept exactly the same events. Hence no U+0000 anywhere (PostgreSQL text and jsonb
cannot hold it, and projections copy facet values such as versions and digests into text columns),
identifiers bounded in UTF-8 bytes (they are index keys), and an `eventTime` in RFC 3339 form.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate

from ledger.errors import InvalidEventError
from ledger.tlog.entry import canonical_json, format_time
from ledger.tlog.errors import InvalidEntryError

EVENT_TYPES = ("START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER")
# Identifiers (namespaces, names, dataset versions) become subjects and unique keys of projections.
# PostgreSQL refuses a b-tree index row over 2704 bytes, so they are bounded in bytes, not characters
# (1024 characters of CJK are 3072 bytes of UTF-8).
MAX_IDENTIFIER_BYTES = 1024


class Utf8Length(validate.Validator):
    """A string of at most `limit` bytes once encoded in UTF-8."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str) and len(value.encode("utf-8", "surrogatepass")) > self.limit:
            raise ValidationError(f"must be at most {self.limit} bytes in UTF-8")
        return value


# No control characters either: PostgreSQL cannot store NUL in text at all (a 500).
_NAME = [
    validate.Length(min=1),
    Utf8Length(MAX_IDENTIFIER_BYTES),
    validate.Regexp(r"^[^\x00-\x1f\x7f]*\Z", error="must not contain control characters"),
]
# OpenLineage 2-0-2: runId is {"format": "uuid"}, the RFC 9562 hyphenated form. `uuid.UUID` would
# also take braces, "urn:uuid:" or no hyphens, and each spelling would give the same run a subject
# of its own.
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")


# RFC 3339 5.6 date-time (also a space for "T", and an offset without its colon, as clients send),
# with at most 9 fractional digits (nanoseconds, what Java clients emit): at most 35 characters.
_RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)\Z")


class _EventTime(fields.AwareDateTime):
    """An RFC 3339 timestamp with an offset. marshmallow alone would also take ISO 8601 forms of
    any length (`,5`, offsets with seconds, dozens of fraction digits) that no projection can hold."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kw: Any) -> Any:
        if isinstance(value, str) and not _RFC3339_RE.match(value):
            raise ValidationError("Not an RFC 3339 date-time with an offset (e.g. 2024-05-01T12:00:00.123Z).")
        return super()._deserialize(value, attr, data, **kw)


def _escape_pointer(name: str) -> str:
    """RFC 6901 3: `~` is written `~0` and `/` is written `~1` in a JSON pointer."""
    return name.replace("~", "~0").replace("/", "~1")


def _find_nul(document: Any) -> str | None:
    """The JSON pointer of the first string or member name holding U+0000 (iteratively: no
    recursion limit), or None."""
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return where or "/"
        elif isinstance(value, dict):
            for name, child in value.items():
                if "\x00" in name:
                    return where or "/"
                stack.append((child, f"{where}/{_escape_pointer(name)}"))
        elif isinstance(value, list):
            stack.extend((child, f"{where}/{i}") for i, child in enumerate(value))
    return None


class _Open(Schema):
    class Meta:
        unknown = INCLUDE


class _Facets(fields.Dict):
    """A facets object: member names map to objects."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(keys=fields.String(), values=fields.Raw(), **kw)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kw: Any) -> Any:
        out = super()._deserialize(value, attr, data, **kw)
        for name, facet in out.items():
            if not isinstance(facet, dict):
                raise ValidationError(f"facet {name!r} must be an object")
        return out


class _DatasetFacets(_Facets):
    """Dataset facets, or input/output facets: the version facets the projections key datasets by
    (`version`, `datasetVersion`) must hold a string `datasetVersion` (OpenLineage's
    DatasetVersionDatasetFacet) of bounded size."""

    VERSION_FACETS = ("version", "datasetVersion")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kw: Any) -> Any:
        out = super()._deserialize(value, attr, data, **kw)
        for name in self.VERSION_FACETS:
            version = out.get(name, {}).get("datasetVersion")
            if version is None:
                continue
            problem = "must be a string"
            if isinstance(version, str):
                if len(version.encode("utf-8", "surrogatepass")) <= MAX_IDENTIFIER_BYTES:
                    continue
                problem = f"must be at most {MAX_IDENTIFIER_BYTES} bytes in UTF-8"
            raise ValidationError({name: {"datasetVersion": [problem]}})  # at .../<facet>/datasetVersion
        return out


class RunSchema(_Open):
    runId = fields.String(  # noqa: N815  (OpenLineage's own member names)
        required=True, validate=validate.Regexp(_UUID_RE, error="Not a valid UUID.")
    )
    facets = _Facets()


class JobSchema(_Open):
    namespace = fields.String(required=True, validate=_NAME)
    name = fields.String(required=True, validate=_NAME)
    facets = _Facets()


class DatasetSchema(_Open):
    namespace = fields.String(required=True, validate=_NAME)
    name = fields.String(required=True, validate=_NAME)
    facets = _DatasetFacets()


class InputDatasetSchema(DatasetSchema):
    inputFacets = _DatasetFacets()  # noqa: N815


class OutputDatasetSchema(DatasetSchema):
    outputFacets = _DatasetFacets()  # noqa: N815


class _BaseEventSchema(_Open):
    eventTime = _EventTime(required=True, format="iso")  # noqa: N815
    producer = fields.Url(required=True, require_tld=False, schemes=None)
    schemaURL = fields.Url(required=True, require_tld=False, schemes=None)  # noqa: N815


class RunEventSchema(_BaseEventSchema):
    eventType = fields.String(validate=validate.OneOf(EVENT_TYPES), allow_none=True)  # noqa: N815
    run = fields.Nested(RunSchema, required=True)
    job = fields.Nested(JobSchema, required=True)
    inputs = fields.List(fields.Nested(InputDatasetSchema))
    outputs = fields.List(fields.Nested(OutputDatasetSchema))


class DatasetEventSchema(_BaseEventSchema):
    dataset = fields.Nested(DatasetSchema, required=True)


class JobEventSchema(_BaseEventSchema):
    job = fields.Nested(JobSchema, required=True)
    inputs = fields.List(fields.Nested(InputDatasetSchema))
    outputs = fields.List(fields.Nested(OutputDatasetSchema))


_SCHEMAS = {
    "openlineage.run_event": RunEventSchema(),
    "openlineage.dataset_event": DatasetEventSchema(),
    "openlineage.job_event": JobEventSchema(),
}


LINEAGE_KINDS = frozenset(_SCHEMAS)  # the entry kinds of OpenLineage events


@dataclass(frozen=True)
class ValidatedEvent:
    """An accepted event, its entry kind and subject, and the namespaces it writes to."""

    kind: str
    subject: str
    event: dict[str, Any]
    namespaces: frozenset[str]
    dedup_key: str
    canonical: bytes


def _pointer(errors: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Flattens marshmallow's nested error dict into (JSON pointer, message) pairs."""
    out: list[tuple[str, str]] = []
    if isinstance(errors, dict):
        for key, val in errors.items():
            out.extend(_pointer(val, f"{prefix}/{key}"))
    elif isinstance(errors, list):
        for msg in errors:
            if isinstance(msg, dict | list):
                out.extend(_pointer(msg, prefix))
            else:
                out.append((prefix or "/", str(msg)))
    else:
        out.append((prefix or "/", str(errors)))
    return out


# The definition a `schemaURL` fragment names (`...OpenLineage.json#/$defs/RunEvent`, or
# `#/definitions/RunEvent` before spec 2-0-2) and the entry kind it stands for.
_DEFINITIONS = {
    "RunEvent": "openlineage.run_event",
    "DatasetEvent": "openlineage.dataset_event",
    "JobEvent": "openlineage.job_event",
}


def classify(event: Any) -> str:
    """The entry kind of an OpenLineage event (2-0-2).

    The event's own `schemaURL` decides when its fragment names one of the three definitions;
    otherwise its shape does: RunEvent if it has `run` or `eventType` (only RunEvents carry one),
    DatasetEvent if `dataset`, JobEvent if only `job`. So a RunEvent that lost its `run` is refused
    for the missing `run`, not recorded as a JobEvent.
    """
    if not isinstance(event, dict):
        raise InvalidEventError(f"an OpenLineage event must be a JSON object, not {type(event).__name__}", field="/")
    schema_url = event.get("schemaURL")
    if isinstance(schema_url, str) and "#" in schema_url:
        named = _DEFINITIONS.get(schema_url.rpartition("#")[2].rpartition("/")[2])
        if named is not None:
            return named
    if "run" in event or "eventType" in event:
        return "openlineage.run_event"
    if "dataset" in event:
        return "openlineage.dataset_event"
    if "job" in event:
        return "openlineage.job_event"
    raise InvalidEventError(
        "not an OpenLineage event: needs `run` and `job` (RunEvent), `dataset` (DatasetEvent) or `job` (JobEvent)",
        field="/run",
    )


_FRACTION = re.compile(r"(\.\d{6})\d+")


def utc_time(value: Any) -> str | None:
    """An RFC 3339 time as UTC with 6 fractional digits and `Z` (Marquez's form, and text order is
    time order), or None when absent or not a time. Digits past microseconds are dropped."""
    if not isinstance(value, str) or not value:
        return None
    text = _FRACTION.sub(r"\1", value.replace(" ", "T", 1)).replace("Z", "+00:00").replace("z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return format_time(moment)
    except (ValueError, OverflowError):  # malformed, or outside datetime's range once in UTC
        return None


def written_namespaces(kind: str, event: dict[str, Any]) -> frozenset[str]:
    """The namespaces an event writes to: its job's (run and job events) or its dataset's."""
    owner = event.get("dataset") if kind == "openlineage.dataset_event" else event.get("job")
    ns = owner.get("namespace") if isinstance(owner, dict) else None
    return frozenset({ns}) if isinstance(ns, str) else frozenset()


def mentioned_datasets(kind: str, event: dict[str, Any]) -> set[tuple[str, str]]:
    """Every dataset (namespace, name) an event names: inputs, outputs, or its one dataset."""
    refs = (
        [event.get("dataset")]
        if kind == "openlineage.dataset_event"
        else [
            *(event.get("inputs") or []),
            *(event.get("outputs") or []),
        ]
    )
    return {
        (d["namespace"], d["name"])
        for d in refs
        if isinstance(d, dict) and isinstance(d.get("namespace"), str) and isinstance(d.get("name"), str)
    }


def validate_event(event: Any) -> ValidatedEvent:
    """Validates one event; raises `InvalidEventError` naming every offending field."""
    kind = classify(event)
    if "eventType" in event and event["eventType"] is not None and kind == "openlineage.run_event":
        et = event["eventType"]
        if not isinstance(et, str) or et not in EVENT_TYPES:
            raise InvalidEventError(
                f"unknown eventType {et!r}; expected one of {', '.join(EVENT_TYPES)}", field="/eventType"
            )
    try:
        _SCHEMAS[kind].load(event)
    except ValidationError as e:
        problems = _pointer(e.messages)
        field, first = problems[0]
        raise InvalidEventError(
            f"{field}: {first}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            field=field,
            errors=[{"field": f, "message": m} for f, m in problems],
        ) from e
    try:
        canonical = canonical_json(event)
    except InvalidEntryError as e:  # e.g. a lone surrogate, or an integer beyond 2**53
        raise InvalidEventError(f"event cannot be canonicalised (RFC 8785): {e.detail}", field="/") from e
    nul = _find_nul(event)
    if nul is not None:
        raise InvalidEventError(f"{nul}: the character U+0000 is not accepted in events", field=nul)
    if kind == "openlineage.run_event":
        subject = f"run:{str(event['run']['runId']).lower()}"
    elif kind == "openlineage.dataset_event":
        ds = event["dataset"]
        subject = f"dataset:{ds['namespace']}:{ds['name']}"
    else:
        subject = f"job:{event['job']['namespace']}:{event['job']['name']}"
    return ValidatedEvent(
        kind=kind,
        subject=subject,
        event=event,
        namespaces=written_namespaces(kind, event),
        dedup_key="sha256:" + hashlib.sha256(canonical).hexdigest(),
        canonical=canonical,
    )
