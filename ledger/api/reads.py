"""Marquez-compatible lineage reads (DESIGN.md 4: provenance reads; 8: names in paths, run states).

Each view parses its parameters, calls the read service (ledger.reads.lineage, which applies
scope and redaction) and presents Marquez's shape (ledger.api.marquez). Names in paths are one
URL-encoded segment each (`<name:...>`, ledger.api.names).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Response, current_app, jsonify, request
from flask_smorest import Blueprint

from ledger.api import marquez
from ledger.api.auth import current_principal, requires
from ledger.api.params import int_arg, str_arg
from ledger.errors import InvalidRequestError
from ledger.lineage.events import utc_time
from ledger.lineage.nodeid import NodeId
from ledger.lineage.stats import PERIODS, Interval, intervals, time_zone
from ledger.reads.lineage import MAX_DEPTH, MAX_PAGE, LineageReader
from ledger.store.db import Database
from ledger.store.ledger import Ledger

blp = Blueprint("lineage_reads", __name__, url_prefix="/api/v1", description="Marquez-compatible lineage reads")

READ_ROLES = ("auditor", "admin", "pipeline", "approver", "security")
BEARER = [{"bearer": []}]
PAGE = [
    {"in": "query", "name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
    {"in": "query", "name": "offset", "schema": {"type": "integer", "minimum": 0}},
]
# Marquez's defaults for GET /events/lineage.
EVENTS_AFTER = "1970-01-01T00:00:00.000000Z"
EVENTS_BEFORE = "2030-01-01T00:00:00.000000Z"


@contextmanager
def _reader() -> Iterator[LineageReader]:
    db: Database = current_app.extensions["ledger.ledger"].db
    with db.read() as session:
        yield LineageReader(session, current_principal())


def _page(default: int = 100) -> tuple[int, int]:
    return int_arg("limit", default=default, minimum=1, maximum=MAX_PAGE), int_arg("offset", default=0)


def _node() -> NodeId:
    node = str_arg("nodeId")
    if not node:
        raise InvalidRequestError("query parameter 'nodeId' is required", field="nodeId")
    return NodeId.parse(node)


def _time_arg(name: str, default: str | None) -> str | None:
    raw = str_arg(name, max_length=64)
    if raw is None or raw == "":
        return default
    value = utc_time(raw)
    if value is None:
        raise InvalidRequestError(f"query parameter {name!r} must be an ISO 8601 time with an offset", field=name)
    return value


def _choice(name: str, allowed: dict[str, str], default: str | None) -> str | None:
    raw = str_arg(name, max_length=32)
    if raw is None or raw == "":
        return default
    if raw.lower() not in allowed:
        raise InvalidRequestError(f"query parameter {name!r} must be one of {', '.join(sorted(allowed))}", field=name)
    return allowed[raw.lower()]


def _bool_arg(name: str) -> bool:
    return _choice(name, {"true": "true", "false": "false"}, "false") == "true"


@blp.route("/namespaces", methods=["GET"])
@blp.doc(security=BEARER, parameters=PAGE)
@requires(*READ_ROLES)
def namespaces() -> Response:
    """Every namespace this principal may read."""
    limit, offset = _page()
    with _reader() as r:
        total, rows = r.namespaces(limit=limit, offset=offset)
        return jsonify({"totalCount": total, "namespaces": [marquez.namespace_json(n) for n in rows]})


@blp.route("/namespaces/<name:namespace>", methods=["GET"])
@blp.doc(security=BEARER)
@requires(*READ_ROLES)
def namespace(namespace: str) -> Response:
    with _reader() as r:
        return jsonify(marquez.namespace_json(r.namespace(namespace)))


@blp.route("/namespaces/<name:namespace>/datasets", methods=["GET"])
@blp.doc(security=BEARER, parameters=PAGE)
@requires(*READ_ROLES)
def datasets(namespace: str) -> Response:
    limit, offset = _page()
    with _reader() as r:
        total, rows = r.datasets(namespace, limit=limit, offset=offset)
        return jsonify({"totalCount": total, "datasets": [marquez.dataset_json(v) for v in rows]})


@blp.route("/namespaces/<name:namespace>/datasets/<name:name>", methods=["GET"])
@blp.doc(security=BEARER)
@requires(*READ_ROLES)
def dataset(namespace: str, name: str) -> Response:
    with _reader() as r:
        return jsonify(marquez.dataset_json(r.dataset(namespace, name)))


@blp.route("/namespaces/<name:namespace>/datasets/<name:name>/versions", methods=["GET"])
@blp.doc(security=BEARER, parameters=PAGE)
@requires(*READ_ROLES)
def dataset_versions(namespace: str, name: str) -> Response:
    limit, offset = _page()
    with _reader() as r:
        total, rows = r.dataset_versions(namespace, name, limit=limit, offset=offset)
        return jsonify({"totalCount": total, "versions": [marquez.version_json(v) for v in rows]})


@blp.route("/namespaces/<name:namespace>/datasets/<name:name>/versions/<name:version>", methods=["GET"])
@blp.doc(security=BEARER)
@requires(*READ_ROLES)
def dataset_version(namespace: str, name: str, version: str) -> Response:
    with _reader() as r:
        return jsonify(marquez.version_json(r.dataset_version(namespace, name, version)))


@blp.route("/namespaces/<name:namespace>/jobs", methods=["GET"])
@blp.doc(security=BEARER, parameters=PAGE)
@requires(*READ_ROLES)
def jobs(namespace: str) -> Response:
    limit, offset = _page()
    with _reader() as r:
        total, rows = r.jobs(namespace, limit=limit, offset=offset)
        return jsonify({"totalCount": total, "jobs": [marquez.job_json(v) for v in rows]})


@blp.route("/namespaces/<name:namespace>/jobs/<name:name>", methods=["GET"])
@blp.doc(security=BEARER)
@requires(*READ_ROLES)
def job(namespace: str, name: str) -> Response:
    with _reader() as r:
        return jsonify(marquez.job_json(r.job(namespace, name)))


@blp.route("/namespaces/<name:namespace>/jobs/<name:name>/runs", methods=["GET"])
@blp.doc(security=BEARER, parameters=PAGE)
@requires(*READ_ROLES)
def job_runs(namespace: str, name: str) -> Response:
    limit, offset = _page()
    with _reader() as r:
        total, rows = r.runs(namespace, name, limit=limit, offset=offset)
        return jsonify({"totalCount": total, "runs": [marquez.run_json(v) for v in rows]})


@blp.route("/namespaces/<name:namespace>/jobs/<name:name>/versions", methods=["GET"])
@blp.doc(security=BEARER, parameters=PAGE)
@requires(*READ_ROLES)
def job_versions(namespace: str, name: str) -> Response:
    """Marquez's job versions, newest first: one per code version the job's runs recorded."""
    limit, offset = _page()
    with _reader() as r:
        total, rows = r.job_versions(namespace, name, limit=limit, offset=offset)
        return jsonify({"totalCount": total, "versions": [marquez.job_version_json(v) for v in rows]})


@blp.route("/namespaces/<name:namespace>/jobs/<name:name>/versions/<name:version>", methods=["GET"])
@blp.doc(security=BEARER)
@requires(*READ_ROLES)
def job_version(namespace: str, name: str, version: str) -> Response:
    with _reader() as r:
        return jsonify(marquez.job_version_json(r.job_version(namespace, name, version)))


@blp.route("/jobs/runs/<name:run_id>", methods=["GET"])
@blp.doc(security=BEARER)
@requires(*READ_ROLES)
def run(run_id: str) -> Response:
    with _reader() as r:
        return jsonify(marquez.run_json(r.run(run_id)))


@blp.route("/jobs/runs/<name:run_id>/facets", methods=["GET"])
@blp.doc(
    security=BEARER,
    parameters=[
        {"in": "query", "name": "type", "required": True, "schema": {"type": "string", "enum": ["run", "job"]}},
    ],
)
@requires(*READ_ROLES)
def run_facets(run_id: str) -> Response:
    """Marquez's `FacetsResult`: the run's facets, or the job facets its events carried."""
    kind = _choice("type", {"run": "run", "job": "job"}, None)
    if kind is None:
        raise InvalidRequestError("query parameter 'type' is required (run or job)", field="type")
    with _reader() as r:
        rid, facets = r.run_facets(run_id, kind)
        return jsonify({"runId": rid, "facets": facets})


@blp.route("/runlineage/upstream", methods=["GET"])
@blp.doc(
    security=BEARER,
    parameters=[
        {"in": "query", "name": "runId", "required": True, "schema": {"type": "string"}},
        {"in": "query", "name": "depth", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_DEPTH}},
    ],
)
@requires(*READ_ROLES)
def run_upstream() -> Response:
    """Marquez's upstream run lineage: the run and the runs that produced what it read, `depth` hops."""
    run_id = str_arg("runId", max_length=64)
    if not run_id:
        raise InvalidRequestError("query parameter 'runId' is required", field="runId")
    depth = int_arg("depth", default=20, maximum=MAX_DEPTH)
    with _reader() as r:
        return jsonify(marquez.run_upstream_json(r.run_upstream(run_id, depth=depth)))


@blp.route("/lineage", methods=["GET"])
@blp.doc(
    security=BEARER,
    parameters=[
        {"in": "query", "name": "nodeId", "required": True, "schema": {"type": "string"}},
        {"in": "query", "name": "depth", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_DEPTH}},
        {"in": "query", "name": "direction", "schema": {"type": "string", "enum": ["both", "upstream", "downstream"]}},
    ],
)
@requires(*READ_ROLES)
def lineage() -> Response:
    """Marquez's lineage graph around a node, upstream and downstream, to `depth` job hops."""
    node = _node()
    depth = int_arg("depth", default=20, maximum=MAX_DEPTH)
    direction = str_arg("direction") or "both"
    with _reader() as r:
        return jsonify(marquez.graph_json(r.graph(node, depth=depth, direction=direction)))


@blp.route("/column-lineage", methods=["GET"])
@blp.doc(
    security=BEARER,
    parameters=[
        {"in": "query", "name": "nodeId", "required": True, "schema": {"type": "string"}},
        {"in": "query", "name": "depth", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_DEPTH}},
        {"in": "query", "name": "withDownstream", "schema": {"type": "boolean"}},
    ],
)
@requires(*READ_ROLES)
def column_lineage() -> Response:
    """Marquez's column lineage, from the datasets' `columnLineage` facets."""
    node = _node()
    depth = int_arg("depth", default=20, maximum=MAX_DEPTH)
    with_downstream = _bool_arg("withDownstream")
    with _reader() as r:
        return jsonify(
            marquez.column_lineage_json(r.column_lineage(node, depth=depth, with_downstream=with_downstream))
        )


@blp.route("/events/lineage", methods=["GET"])
@blp.doc(
    security=BEARER,
    parameters=[
        {"in": "query", "name": "before", "schema": {"type": "string", "format": "date-time"}},
        {"in": "query", "name": "after", "schema": {"type": "string", "format": "date-time"}},
        {"in": "query", "name": "sortDirection", "schema": {"type": "string", "enum": ["asc", "desc"]}},
        *PAGE,
    ],
)
@requires(*READ_ROLES)
def lineage_events() -> Response:
    """Marquez's OpenLineage RunEvents with `after <= eventTime < before`, newest first by default."""
    return _events_page(None)


# marquez-python's `list_events([namespace])` asks for these paths (Marquez's server answers them with
# 404 today); they serve the same page as /events/lineage, the second one within one namespace.
@blp.route("/events", methods=["GET"], endpoint="events")
@blp.route("/events/<name:namespace>", methods=["GET"], endpoint="namespace_events")
@blp.doc(security=BEARER, parameters=PAGE)
@requires(*READ_ROLES)
def events(namespace: str | None = None) -> Response:
    """The same as /events/lineage (marquez-python's `list_events`), optionally for one namespace."""
    return _events_page(namespace)


def _events_page(namespace: str | None) -> Response:
    before = _time_arg("before", EVENTS_BEFORE)
    after = _time_arg("after", EVENTS_AFTER)
    ascending = _choice("sortDirection", {"asc": "asc", "desc": "desc"}, "desc") == "asc"
    limit, offset = _page()
    with _reader() as r:
        page = r.run_events(
            before=before or EVENTS_BEFORE,
            after=after or EVENTS_AFTER,
            ascending=ascending,
            limit=limit,
            offset=offset,
            namespace=namespace,
        )
        return jsonify({"events": page.events, "totalCount": page.total})


STATS = [
    {"in": "query", "name": "period", "required": True, "schema": {"type": "string", "enum": list(PERIODS)}},
    {"in": "query", "name": "timezone", "schema": {"type": "string"}},
]


def _intervals() -> list[Interval]:
    """The intervals of `period` (DAY or WEEK) in `timezone` (an IANA name; required for WEEK, as
    Marquez requires it), ending with the one holding the log's clock now."""
    period = _choice("period", {p.lower(): p for p in PERIODS}, None)
    if period is None:
        raise InvalidRequestError("query parameter 'period' is required (DAY or WEEK)", field="period")
    name = str_arg("timezone", max_length=64) or ""
    if not name and period == "WEEK":
        raise InvalidRequestError("query parameter 'timezone' is required for period WEEK", field="timezone")
    zone = time_zone(name or "UTC")
    if zone is None:
        raise InvalidRequestError("query parameter 'timezone' must be an IANA time zone name", field="timezone")
    ledger: Ledger = current_app.extensions["ledger.ledger"]
    return intervals(period, zone, ledger.clock())


@blp.route("/stats/lineage-events", methods=["GET"])
@blp.doc(security=BEARER, parameters=STATS)
@requires(*READ_ROLES)
def lineage_event_stats() -> Response:
    """Marquez's run events per type, per hour (DAY) or day (WEEK)."""
    buckets = _intervals()
    with _reader() as r:
        return jsonify(marquez.lineage_metrics_json(r.lineage_event_stats(buckets)))


@blp.route("/stats/jobs", methods=["GET"], endpoint="job_stats", defaults={"kind": "jobs"})
@blp.route("/stats/datasets", methods=["GET"], endpoint="dataset_stats", defaults={"kind": "datasets"})
@blp.route("/stats/sources", methods=["GET"], endpoint="source_stats", defaults={"kind": "sources"})
@blp.doc(security=BEARER, parameters=STATS)
@requires(*READ_ROLES)
def created_stats(kind: str) -> Response:
    """Marquez's running totals of jobs, datasets or sources, per hour (DAY) or day (WEEK)."""
    buckets = _intervals()
    with _reader() as r:
        return jsonify(marquez.interval_metrics_json(r.created_stats(kind, buckets)))


@blp.route("/sources", methods=["GET"])
@blp.doc(security=BEARER, parameters=PAGE)
@requires(*READ_ROLES)
def sources() -> Response:
    """Marquez's sources: the `dataSource` facets of the datasets this principal may see."""
    limit, offset = _page()
    with _reader() as r:
        total, rows = r.sources(limit=limit, offset=offset)
        return jsonify({"totalCount": total, "sources": [marquez.source_json(s) for s in rows]})


@blp.route("/sources/<name:name>", methods=["GET"])
@blp.doc(security=BEARER)
@requires(*READ_ROLES)
def source(name: str) -> Response:
    with _reader() as r:
        return jsonify(marquez.source_json(r.source(name)))


@blp.route("/tags", methods=["GET"])
@blp.doc(security=BEARER, parameters=PAGE)
@requires(*READ_ROLES)
def tags() -> Response:
    """Marquez's tags: every tag on a dataset this principal may read."""
    limit, offset = _page()
    with _reader() as r:
        total, names = r.tags(limit=limit, offset=offset)
        return jsonify({"totalCount": total, "tags": [{"name": n, "description": None} for n in names]})


@blp.route("/search", methods=["GET"])
@blp.doc(
    security=BEARER,
    parameters=[
        {"in": "query", "name": "q", "required": True, "schema": {"type": "string"}},
        {"in": "query", "name": "filter", "schema": {"type": "string", "enum": ["DATASET", "JOB"]}},
        {"in": "query", "name": "sort", "schema": {"type": "string", "enum": ["NAME", "UPDATE_AT"]}},
        {"in": "query", "name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
        {"in": "query", "name": "namespace", "schema": {"type": "string"}},
        {"in": "query", "name": "before", "schema": {"type": "string", "format": "date"}},
        {"in": "query", "name": "after", "schema": {"type": "string", "format": "date"}},
    ],
)
@requires(*READ_ROLES)
def search() -> Response:
    """Marquez's search over the names of jobs and datasets this principal may read."""
    q = (str_arg("q", max_length=1024) or "").strip()
    if not q:
        raise InvalidRequestError("query parameter 'q' is required", field="q")
    kind = _choice("filter", {"dataset": "DATASET", "job": "JOB"}, None)
    sort = _choice("sort", {"name": "name", "update_at": "updated_at", "updated_at": "updated_at"}, "name")
    limit = int_arg("limit", default=10, minimum=1, maximum=MAX_PAGE)
    dates = {k: _date_arg(k) for k in ("before", "after")}
    with _reader() as r:
        hits = r.search(q, kind=kind, sort=sort or "name", limit=limit, namespace=str_arg("namespace"), **dates)
        return jsonify(marquez.search_json(hits))


def _date_arg(name: str) -> str | None:
    """Marquez's YYYY-MM-DD bound, as the UTC midnight that starts the day."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    value = utc_time(f"{raw}T00:00:00Z") if len(raw) == 10 else None
    if value is None:
        raise InvalidRequestError(f"query parameter {name!r} must be a date YYYY-MM-DD", field=name)
    return value
