"""Storage faults over HTTP: 503 problem+json with `Retry-After`, and one retry of a read.

A fault (`ledger.store.faults`) is the storage's, not the request's: the answer is 503 and the client
may try again; nothing was half-written, as every write is one transaction. A read (GET, HEAD) whose
connection was lost while in use is tried once more inside the request, on a new connection: reads
change nothing, so that is always safe. Appends retry on their own, where it is safe
(`GroupCommit._commit_group`); other writes answer 503 and leave the retry to the client.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, request
from sqlalchemy.exc import SQLAlchemyError

from ledger.api.consistency import REPLICA_FALLBACKS
from ledger.api.problems import problem
from ledger.store.faults import CONNECTION, fault_of, is_transient

log = logging.getLogger("ledger.api")
READS = ("GET", "HEAD")


def _answer(e: Exception) -> Response:
    fault = fault_of(e)
    if fault is None:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "Internal Server Error", "the server failed to handle this request")
    log.warning("storage fault on %s %s: %s", request.method, request.path, fault.detail)
    err = fault.error()
    return problem(err.status, err.title, err.detail, **err.extra)


def _retrying(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except SQLAlchemyError as e:
            if request.method not in READS:
                raise
            if _left_replica(e):  # whatever the replica's error (a lost connection, a recovery conflict)
                log.info("retrying %s %s once on the primary: the replica failed it", request.method, request.path)
                return view(*args, **kwargs)
            if not is_transient(e):
                raise
            log.info("retrying %s %s once: the database connection was lost", request.method, request.path)
            return view(*args, **kwargs)

    return wrapper


def _left_replica(e: SQLAlchemyError) -> bool:
    """True when this request's reads were the replica's: they go to the primary from now on (and
    the replica counts as down when its connection failed)."""
    rt = current_app.extensions["ledger.runtime"]
    if not rt.db.reads_from_replica:
        return False
    fault = fault_of(e)
    if fault is not None and fault.kind == CONNECTION:
        rt.replica.failed()
    rt.db.route_to_replica(False)
    REPLICA_FALLBACKS.labels("failed").inc()
    return True


def install(app: Flask) -> None:
    """Call after every blueprint is registered: wraps every view, and answers faults 503."""
    for endpoint, view in list(app.view_functions.items()):
        app.view_functions[endpoint] = _retrying(view)
    for scope, hooks in app.before_request_funcs.items():  # they read too (reads wait for projections)
        app.before_request_funcs[scope] = [_retrying(h) for h in hooks]
    app.register_error_handler(SQLAlchemyError, _answer)
    app.register_error_handler(OSError, _answer)
