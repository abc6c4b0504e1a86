"""OpenLineage event validation (spec 2-0-2 required fields) and classification into entry kinds.

The event is stored exactly as received (DESIGN.md 3.1); validation only decides whether it is
acceptable and what its subject is. Unknown members and facets are kept, as the spec requires.

Invariant: an accepted event can be stored and projected on SQLite and PostgreSQL alike, so the two
backends accept exactly the same events. Hence no U+0000 anywhere (PostgreSQL text and jsonb
cannot hold it, and projections copy facet values such as versions and digests into text columns),
identifiers bounded in UTF-8 bytes (they are index keys), and an `eventTime` in RFC 3339 form.

Every `eventTime` accepted lies in an `EventTimeWindow` (by default 1970 to one day past the
server's clock) and always within what a policy can parse (`REGO_TIME_MIN`..`REGO_TIME_MAX`): a run's
completion time is promotion input, and one time Rego cannot parse fails the whole decision.

Hot path: an event whose envelope `_proven` shows valid with the schema's own fields is not loaded
by marshmallow at all; anything it cannot show valid is loaded by the schema, which alone words the
errors. So the schema stays the one definition of a valid envelope.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, missing, validate

from ledger.errors import InvalidEventError
from ledger.lineage.names import invisible, nfc
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

    def accepts(self, value: Any) -> bool:
        """True only if `deserialize(value)` certainly succeeds (an object of string-named objects);
        False sends the event through the schema, which words the error. No copy is made."""
        return type(value) is dict and all(type(k) is str and type(f) is dict for k, f in value.items())


class _DatasetFacets(_Facets):
    """Dataset facets, or input/output facets: the version facets the projections key datasets by
    (`version`, `datasetVersion`) must hold a string `datasetVersion` (OpenLineage's
    DatasetVersionDatasetFacet) of bounded size."""

    VERSION_FACETS = ("version", "datasetVersion")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kw: Any) -> Any:
        out = super()._deserialize(value, attr, data, **kw)
        problem = self._version_problem(out)
        if problem is not None:
            name, message = problem
            raise ValidationError({name: {"datasetVersion": [message]}})  # at .../<facet>/datasetVersion
        return out

    def accepts(self, value: Any) -> bool:
        return super().accepts(value) and self._version_problem(value) is None

    def _version_problem(self, facets: dict[str, Any]) -> tuple[str, str] | None:
        """(facet name, problem) of the first version facet whose `datasetVersion` is unusable."""
        for name in self.VERSION_FACETS:
            version = facets.get(name, {}).get("datasetVersion")
            if version is None:
                continue
            if not isinstance(version, str):
                return name, "must be a string"
            if len(version.encode("utf-8", "surrogatepass")) > MAX_IDENTIFIER_BYTES:
                return name, f"must be at most {MAX_IDENTIFIER_BYTES} bytes in UTF-8"
        return None


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


# How `_proven` treats each field of a schema: a leaf is deserialized by its own marshmallow field
# (its validators, its null and type rules); facets by `_Facets.accepts`; nested schemas and lists
# of them by their own plans.
_LEAF, _FACETS, _NESTED, _NESTED_LIST = range(4)
_Plan = tuple[tuple[str, int, fields.Field[Any], Any], ...]


def _plan(schema: Schema) -> _Plan:
    steps: list[tuple[str, int, fields.Field[Any], Any]] = []
    for name, field in schema.load_fields.items():
        if isinstance(field, _Facets):
            steps.append((name, _FACETS, field, None))
        elif isinstance(field, fields.Nested):
            steps.append((name, _NESTED, field, _plan(field.schema)))
        elif isinstance(field, fields.List) and isinstance(field.inner, fields.Nested):
            steps.append((name, _NESTED_LIST, field, _plan(field.inner.schema)))
        elif type(field) in _LEAF_FIELDS or isinstance(field, _EventTime):
            steps.append((name, _LEAF, field, None))
        else:  # a field kind this plan does not know: declare how to prove it first
            raise TypeError(f"no fast-path rule for field {name!r} ({type(field).__name__})")
    return tuple(steps)


_LEAF_FIELDS = (fields.String, fields.Url)
_PLANS = {kind: _plan(schema) for kind, schema in _SCHEMAS.items()}


def _proven(plan: _Plan, data: Any, out: dict[str, Any] | None = None) -> bool:
    """True only if `schema.load(data)` would succeed, shown with the schema's own fields and without
    building its output; `out` receives the top level's deserialized leaves. False is "not shown"
    (the caller then loads with the schema), never a verdict on its own."""
    if type(data) is not dict:
        return False
    for name, how, field, inner in plan:
        value = data.get(name, missing)
        if value is missing:
            if field.required:
                return False
            continue
        if how == _LEAF:
            try:
                loaded = field.deserialize(value, name, data)
            except ValidationError:
                return False
            if out is not None:
                out[name] = loaded
        elif how == _FACETS:
            if not field.accepts(value):  # type: ignore[attr-defined]
                return False
        elif how == _NESTED:
            if not _proven(inner, value):
                return False
        elif type(value) is not list or not all(_proven(inner, item) for item in value):
            return False
    return True


# Rego's time.parse_rfc3339_ns (OPA's and regopy's) holds nanoseconds since 1970 in a signed 64-bit
# integer: only 1677-09-21T00:12:43.145224192Z..2262-04-11T23:47:16.854775807Z parse; anything else
# is "time outside of valid range", and the whole policy query fails. In microseconds, inward.
REGO_TIME_MIN = datetime(1677, 9, 21, 0, 12, 43, 145225, tzinfo=UTC)
REGO_TIME_MAX = datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_AHEAD_LIMIT = timedelta(days=36_525)  # a century; `now + max_ahead` stays far from datetime.max


@dataclass(frozen=True, kw_only=True)
class EventTimeWindow:
    """The `eventTime`s intake accepts: from `earliest` to `max_ahead` past the server's clock, both
    inclusive, and never outside `REGO_TIME_MIN`..`REGO_TIME_MAX`. Default: 1970 to one day ahead.

    Requires `earliest` timezone-aware and not before `REGO_TIME_MIN`, 0 <= `max_ahead` <= a century.
    """

    earliest: datetime = EPOCH
    max_ahead: timedelta = timedelta(days=1)

    def __post_init__(self) -> None:
        if self.earliest.tzinfo is None or self.earliest < REGO_TIME_MIN:
            raise ValueError(f"earliest {self.earliest} must be timezone-aware and not before {REGO_TIME_MIN}")
        if not timedelta(0) <= self.max_ahead <= MAX_AHEAD_LIMIT:
            raise ValueError(f"max_ahead {self.max_ahead} must be between 0 and {MAX_AHEAD_LIMIT}")

    def latest(self, now: datetime) -> datetime:
        return min(now + self.max_ahead, REGO_TIME_MAX)

    def contains(self, moment: datetime, *, now: datetime) -> bool:
        """True if `moment` (timezone-aware) lies in the window at server time `now`."""
        try:
            return self.earliest <= moment <= self.latest(now)
        except OverflowError:  # year 1 or 9999 with an offset: no UTC instant datetime can hold
            return False

    def describe(self, now: datetime) -> str:
        ahead = int(self.max_ahead.total_seconds())
        return (
            f"no earlier than {format_time(self.earliest)} and no later than {ahead} s past the server's "
            f"clock ({format_time(self.latest(now))})"
        )


DEFAULT_EVENT_TIME_WINDOW = EventTimeWindow()
_REGO_TEXT_MIN, _REGO_TEXT_MAX = format_time(REGO_TIME_MIN), format_time(REGO_TIME_MAX)


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


def policy_time(value: Any) -> str | None:
    """A time for policy input: `utc_time`'s form (which Rego parses, unlike a raw `eventTime` with a
    space for `T` or without seconds), or None when absent, malformed, or outside
    `REGO_TIME_MIN`..`REGO_TIME_MAX` (an entry recorded before intake checked the window)."""
    moment = utc_time(value)
    if moment is None or not _REGO_TEXT_MIN <= moment <= _REGO_TEXT_MAX:  # text order is time order
        return None
    return moment


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


def _named(kind: str, event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(JSON pointer, object) of everything an event names: its job or dataset, its inputs, outputs."""
    if kind == "openlineage.dataset_event":
        return [("/dataset", event["dataset"])]
    out = [("/job", event["job"])]
    for key in ("inputs", "outputs"):
        out += [(f"/{key}/{i}", d) for i, d in enumerate(event.get(key) or []) if isinstance(d, dict)]
    return out


def _normalise_names(kind: str, event: dict[str, Any]) -> None:
    """Refuses a namespace or name holding a bidi control or zero-width character (400 naming it);
    rewrites the others to NFC in place, so the stored payload, its subject and every projection
    key hold one spelling (ledger.lineage.names)."""
    for pointer, obj in _named(kind, event):
        for key in ("namespace", "name"):
            value = obj.get(key)
            if not isinstance(value, str):
                continue
            bad = invisible(value)
            if bad is not None:
                field = f"{pointer}/{key}"
                message = f"{field}: holds {bad}; bidirectional controls and zero-width characters are not accepted"
                raise InvalidEventError(message, field=field, errors=[{"field": field, "message": message}])
            obj[key] = nfc(value)


def validate_event(
    event: Any, *, now: datetime | None = None, window: EventTimeWindow = DEFAULT_EVENT_TIME_WINDOW
) -> ValidatedEvent:
    """Validates one event; raises `InvalidEventError` naming every offending field.

    `now` is the server's clock (timezone-aware; the current UTC time when omitted): the `eventTime`
    must lie in `window` at `now`. A batch passes one `now` for all its events.
    """
    kind = classify(event)
    if "eventType" in event and event["eventType"] is not None and kind == "openlineage.run_event":
        et = event["eventType"]
        if not isinstance(et, str) or et not in EVENT_TYPES:
            raise InvalidEventError(
                f"unknown eventType {et!r}; expected one of {', '.join(EVENT_TYPES)}", field="/eventType"
            )
    # (1) The envelope, every facet once: shown valid by the plan, or loaded by the schema.
    leaves: dict[str, Any] = {}
    if not _proven(_PLANS[kind], event, leaves):
        try:
            leaves = _SCHEMAS[kind].load(event)
        except ValidationError as e:
            problems = _pointer(e.messages)
            field, first = problems[0]
            raise InvalidEventError(
                f"{field}: {first}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                field=field,
                errors=[{"field": f, "message": m} for f, m in problems],
            ) from e
    # (2) The time window, at the server's clock.
    at = now if now is not None else datetime.now(UTC)
    if not window.contains(leaves["eventTime"], now=at):
        message = f"/eventTime: {event['eventTime']!r} is outside the accepted window: {window.describe(at)}"
        raise InvalidEventError(message, field="/eventTime", errors=[{"field": "/eventTime", "message": message}])
    # (2b) Names: one spelling each (NFC), none holding bidi controls or zero-width characters.
    _normalise_names(kind, event)
    # (3) RFC 8785 bytes, once: they are the dedup key's input and the stored payload.
    try:
        canonical = canonical_json(event)
    except InvalidEntryError as e:  # e.g. a lone surrogate, or an integer beyond 2**53
        raise InvalidEventError(f"event cannot be canonicalised (RFC 8785): {e.detail}", field="/") from e
    # (4) No U+0000: JSON writes it `\u0000`, so bytes without that sequence hold none, and only the
    # rare event with it (or with a literal backslash-u0000 in a string) is walked for its pointer.
    nul = _find_nul(event) if b"\\u0000" in canonical else None
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
