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

from ledger.api.problems import problem
from ledger.store.faults import fault_of, is_transient

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
            if request.method not in READS or not is_transient(e):
                raise
            log.info("retrying %s %s once: the database connection was lost", request.method, request.path)
            leave_replica()  # a read the replica failed is tried on the primary
            return view(*args, **kwargs)

    return wrapper


def leave_replica() -> None:
    """This request's reads go to the primary from now on; the replica is marked down if they were its."""
    rt = current_app.extensions["ledger.runtime"]
    if rt.db.reads_from_replica:
        rt.replica.failed()
        rt.db.route_to_replica(False)


def install(app: Flask) -> None:
    """Call after every blueprint is registered: wraps every view, and answers faults 503."""
    for endpoint, view in list(app.view_functions.items()):
        app.view_functions[endpoint] = _retrying(view)
    for scope, hooks in app.before_request_funcs.items():  # they read too (reads wait for projections)
        app.before_request_funcs[scope] = [_retrying(h) for h in hooks]
    app.register_error_handler(SQLAlchemyError, _answer)
    app.register_error_handler(OSError, _answer)
