"""Flask application factory."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flask import Flask, Response, g, request
from flask_smorest import Api
from prometheus_client import Counter, Histogram

from ledger.api import admin, faults, governance, lineage, log, names, ops, reads, security
from ledger.api.consistency import end_request, wait_for_projections
from ledger.api.problems import register_error_handlers
from ledger.config import Settings
from ledger.console import bp as console_bp
from ledger.errors import InvalidRequestError
from ledger.logs import REQUEST_ID_HEADER, new_request_id, request_id
from ledger.runtime import Runtime, build_runtime

REQUESTS = Counter("ledger_http_requests_total", "HTTP requests", ["method", "endpoint", "status"])
ACCESS = logging.getLogger("ledger.access")  # one line per request (ledger/logs.py says what is in it)
LATENCY = Histogram("ledger_http_request_seconds", "HTTP request latency", ["endpoint"])


PROBLEM_RESPONSE = {
    "description": "an RFC 9457 problem; `field` names the offending member or parameter",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


def openapi_document(api: Api) -> dict[str, Any]:
    """flask-smorest's document, with every error answered as application/problem+json: each
    operation gets a `default` problem response, and documented error responses use that type."""
    doc: dict[str, Any] = api.spec.to_dict()
    doc.setdefault("components", {}).setdefault("schemas", {})["Problem"] = {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "field": {"type": "string"},
            "instance": {"type": "string"},
        },
        "required": ["title", "status", "detail"],
    }
    for path in doc.get("paths", {}).values():
        for method, op in path.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = op.setdefault("responses", {})
            for code in list(responses):
                if code == "default" or code.startswith(("4", "5")):
                    responses[code] = PROBLEM_RESPONSE
            responses["default"] = PROBLEM_RESPONSE
            if not any(code.startswith("2") for code in responses):
                for kind in ("200", "201") if method == "post" else ("200",):
                    responses[kind] = {"description": "success", "content": {"application/json": {"schema": {}}}}
    return doc


def create_app(
    settings: Settings | None = None, *, runtime: Runtime | None = None, start_applier: bool = True
) -> Flask:
    """Builds the app; the database must already be migrated (`ledger init`). `start_applier`: run
    the projections' background applier in this process (`ledger serve` runs one process for it
    instead: ledger/applier.py)."""
    rt = runtime or build_runtime(settings or Settings.from_env())
    app = Flask("ledger")
    app.config.update(
        MAX_CONTENT_LENGTH=rt.settings.max_body_bytes,
        API_TITLE="Provenance ledger",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX=None,  # served by `openapi_document` below, with problem+json errors
        JSON_SORT_KEYS=False,
        API_SPEC_OPTIONS={
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        },
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["ledger.runtime"] = rt
    app.extensions["ledger.ledger"] = rt.ledger
    app.extensions["ledger.principals"] = rt.principals
    app.extensions["ledger.keyring"] = rt.keyring
    app.extensions["ledger.intake"] = rt.intake

    api = Api(app)
    names.install(app, api)  # before any rule exists: every route takes names as one segment
    api.register_blueprint(lineage.blp)
    api.register_blueprint(log.blp)
    api.register_blueprint(reads.blp)
    api.register_blueprint(governance.blp)
    api.register_blueprint(admin.blp)
    api.register_blueprint(security.blp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(console_bp)  # the auditor's console at /console/, its data through the API
    register_error_handlers(app)  # after Api(): ours replace flask-smorest's JSON errors
    if start_applier:
        rt.projector.start()  # this process's applier; `rt.close()` stops it

    @app.get("/api/v1/openapi.json")
    def openapi_json() -> Response:
        """The OpenAPI document (public)."""
        return app.response_class(json.dumps(openapi_document(api)), mimetype="application/json")

    @app.before_request
    def _start() -> None:
        g.t0 = time.perf_counter()
        g.request_id = new_request_id(request.headers.get(REQUEST_ID_HEADER))
        request_id.set(g.request_id)  # every log line of this request carries it
        if "\x00" in request.path:  # no database can store it, and no name holds it
            raise InvalidRequestError("the path holds a NUL character", field="path")

    app.before_request(wait_for_projections)  # after `_start`: reads wait for their writes

    @app.after_request
    def _count(resp: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        REQUESTS.labels(request.method, endpoint, str(resp.status_code)).inc()
        if "t0" in g:
            elapsed = time.perf_counter() - g.t0
            LATENCY.labels(endpoint).observe(elapsed)
            principal = g.principal.name if "principal" in g else None
            ACCESS.info(
                "%s %s %d %.1f ms principal=%s",
                request.method,
                request.path,
                resp.status_code,
                elapsed * 1000,
                principal or "-",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": resp.status_code,
                    "duration_ms": round(elapsed * 1000, 2),
                    "principal": principal,
                },
            )
        if "request_id" in g:
            resp.headers[REQUEST_ID_HEADER] = g.request_id
        return resp

    @app.teardown_request
    def _forget_request_id(_exc: BaseException | None) -> None:
        # Not ContextVar.reset: a streamed response ends in another context than the one it began in.
        request_id.set("-")
        end_request()  # and its reads go back to the primary

    faults.install(app)  # last: every view is registered by now
    return app
