"""Marquez-compatible lineage reads (DESIGN.md 4: provenance reads)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Response, current_app, jsonify
from flask_smorest import Blueprint

from ledger.api.auth import current_principal, requires
from ledger.api.params import int_arg, str_arg
from ledger.errors import InvalidRequestError, PermissionDeniedError
from ledger.lineage.queries import MAX_DEPTH, LineageReader, dataset_json, job_json, namespace_json, redacted, run_json
from ledger.store.db import Database

blp = Blueprint("lineage_reads", __name__, url_prefix="/api/v1", description="Marquez-compatible lineage reads")

READ_ROLES = ("auditor", "admin", "pipeline", "approver", "security")


@contextmanager
def _reader() -> Iterator[LineageReader]:
    db: Database = current_app.extensions["ledger.ledger"].db
    with db.read() as session:
        yield LineageReader(session)


def _may_read(namespace: str) -> None:
    p = current_principal()
    if not p.may_read_namespace(namespace):
        raise PermissionDeniedError(f"principal {p.name!r} may not read namespace {namespace!r}", field="namespace")


def _page() -> tuple[int, int]:
    return int_arg("limit", default=100, minimum=1, maximum=1000), int_arg("offset", default=0)


@blp.route("/namespaces", methods=["GET"])
@blp.doc(security=[{"bearer": []}])
@requires(*READ_ROLES)
def namespaces() -> Response:
    """Every namespace this principal may read."""
    p = current_principal()
    with _reader() as r:
        rows = [namespace_json(n) for n in r.namespaces() if p.may_read_namespace(n.name)]
    return jsonify({"namespaces": rows})


@blp.route("/namespaces/<path:namespace>/datasets", methods=["GET"])
@blp.doc(security=[{"bearer": []}])
@requires(*READ_ROLES)
def datasets(namespace: str) -> Response:
    _may_read(namespace)
    limit, offset = _page()
    with _reader() as r:
        total, rows = r.datasets(namespace, limit=limit, offset=offset)
        tags = r.tags([d.id for d in rows])
        cleared = current_principal().clearances
        body = {
            "totalCount": total,
            "datasets": [dataset_json(d, tags=tags.get(d.id), clearances=cleared) for d in rows],
        }
    return jsonify(body)


@blp.route("/namespaces/<path:namespace>/datasets/<path:name>/versions", methods=["GET"])
@blp.doc(security=[{"bearer": []}])
@requires(*READ_ROLES)
def dataset_versions(namespace: str, name: str) -> Response:
    _may_read(namespace)
    with _reader() as r:
        d = r.dataset(namespace, name)
        tags = r.tags([d.id]).get(d.id)
        hidden = "redacted" in redacted(
            {"schema": {}}, list(tags.effective) if tags else [], current_principal().clearances
        )
        versions = []
        for v in r.dataset_versions(d):
            producer = None
            if v.produced_by_run:
                run = r.run(v.produced_by_run)
                producer = run_json(run, r.job_by_id(run.job_id))
            versions.append(
                {
                    "id": {"namespace": d.namespace, "name": d.name, "version": v.version},
                    "type": "DB_TABLE",
                    "name": d.name,
                    "physicalName": d.name,
                    "createdAt": v.created_at,
                    "version": v.version,
                    "namespace": d.namespace,
                    "sourceName": d.namespace,
                    "fields": []
                    if hidden
                    else [
                        {"name": f.get("name"), "type": f.get("type"), "tags": [], "description": f.get("description")}
                        for f in (v.schema_fields or [])
                        if isinstance(f, dict)
                    ],
                    "tags": [],
                    "description": None,
                    "digest": v.digest,
                    "createdByRun": producer,
                    "facets": {},
                    "entry": v.seq,
                }
            )
    return jsonify({"totalCount": len(versions), "versions": versions})


@blp.route("/namespaces/<path:namespace>/datasets/<path:name>", methods=["GET"])
@blp.doc(security=[{"bearer": []}])
@requires(*READ_ROLES)
def dataset(namespace: str, name: str) -> Response:
    _may_read(namespace)
    with _reader() as r:
        d = r.dataset(namespace, name)
        body = dataset_json(d, tags=r.tags([d.id]).get(d.id), clearances=current_principal().clearances)
    return jsonify(body)


@blp.route("/namespaces/<path:namespace>/jobs", methods=["GET"])
@blp.doc(security=[{"bearer": []}])
@requires(*READ_ROLES)
def jobs(namespace: str) -> Response:
    _may_read(namespace)
    limit, offset = _page()
    with _reader() as r:
        total, rows = r.jobs(namespace, limit=limit, offset=offset)
        body = {
            "totalCount": total,
            "jobs": [job_json(j, r.job_edges(j), r.run(j.latest_run_id) if j.latest_run_id else None) for j in rows],
        }
    return jsonify(body)


@blp.route("/namespaces/<path:namespace>/jobs/<path:name>/runs", methods=["GET"])
@blp.doc(security=[{"bearer": []}])
@requires(*READ_ROLES)
def job_runs(namespace: str, name: str) -> Response:
    _may_read(namespace)
    limit, offset = _page()
    with _reader() as r:
        j = r.job(namespace, name)
        total, rows = r.runs(j, limit=limit, offset=offset)
        body = {"totalCount": total, "runs": [run_json(x, j, r.run_io(x.run_id)) for x in rows]}
    return jsonify(body)


@blp.route("/namespaces/<path:namespace>/jobs/<path:name>", methods=["GET"])
@blp.doc(security=[{"bearer": []}])
@requires(*READ_ROLES)
def job(namespace: str, name: str) -> Response:
    _may_read(namespace)
    with _reader() as r:
        j = r.job(namespace, name)
        body = job_json(j, r.job_edges(j), r.run(j.latest_run_id) if j.latest_run_id else None)
    return jsonify(body)


@blp.route("/jobs/runs/<run_id>", methods=["GET"])
@blp.doc(security=[{"bearer": []}])
@requires(*READ_ROLES)
def run(run_id: str) -> Response:
    with _reader() as r:
        x = r.run(run_id)
        j = r.job_by_id(x.job_id)
        if j is not None:
            _may_read(j.namespace)
        body = run_json(x, j, r.run_io(x.run_id))
    return jsonify(body)


@blp.route("/lineage", methods=["GET"])
@blp.doc(
    security=[{"bearer": []}],
    parameters=[
        {"in": "query", "name": "nodeId", "required": True, "schema": {"type": "string"}},
        {"in": "query", "name": "depth", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_DEPTH}},
        {"in": "query", "name": "direction", "schema": {"type": "string", "enum": ["both", "upstream", "downstream"]}},
    ],
)
@requires(*READ_ROLES)
def lineage() -> Response:
    """Marquez's lineage graph around a node, upstream and downstream, to `depth` job hops."""
    node = str_arg("nodeId")
    if not node:
        raise InvalidRequestError("query parameter 'nodeId' is required", field="nodeId")
    depth = int_arg("depth", default=20, maximum=MAX_DEPTH)
    direction = str_arg("direction") or "both"
    p = current_principal()
    with _reader() as r:
        graph = r.graph(node, depth=depth, direction=direction, clearances=p.clearances)
    if p.namespaces and not p.has_any("auditor", "admin", "security", "approver"):
        graph = [n for n in graph if p.may_read_namespace(n["data"]["namespace"])]
    return jsonify({"graph": graph})
