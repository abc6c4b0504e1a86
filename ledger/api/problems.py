"""RFC 9457 problem details for every error the service returns."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, json, request
from werkzeug.exceptions import HTTPException

from ledger.errors import LedgerError

PROBLEM = "application/problem+json"
log = logging.getLogger("ledger.api")


def problem(status: int, title: str, detail: str, **extra: Any) -> Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    if request:
        body.setdefault("instance", request.path)
    resp = Response(json.dumps(body), status=status, mimetype=PROBLEM)
    if "retry_after" in extra:
        resp.headers["Retry-After"] = str(extra["retry_after"])
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="ledger"'
    return resp


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(LedgerError)
    def _ledger_error(e: LedgerError) -> Response:
        if e.status >= 500:
            log.error("internal ledger error: %s", e.detail)
        return problem(e.status, e.title, e.detail, **e.extra)

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> Response:
        status = e.code or 500
        detail = e.description or e.name
        extra: dict[str, Any] = {}
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            detail = f"request body is larger than LEDGER_MAX_BODY_BYTES ({limit} bytes)"
            extra["field"] = "body"
        resp = problem(status, e.name, detail, **extra)
        if status == 405 and e.get_response().headers.get("Allow"):
            resp.headers["Allow"] = e.get_response().headers["Allow"]
        return resp

    @app.errorhandler(Exception)
    def _unexpected(e: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "Internal Server Error", "the server failed to handle this request")
