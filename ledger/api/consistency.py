"""Read your writes (DESIGN.md 8, normative): reads wait, bounded, for the projections.

A read that names an entry (`?min_seq=N` or the header `Ledger-Min-Seq: N`) is served once every
projection has applied entry N. A read that names none is served once they have applied every entry
the log held when the request arrived, so a client that has a receipt always reads its own write.
Past the bound the answer is 503 problem+json with `Retry-After`. The log's own reads (checkpoint,
proofs, keys, export) do not depend on projections and never wait.
"""

from __future__ import annotations

from flask import current_app, request

from ledger.api.params import int_value
from ledger.errors import InvalidRequestError
from ledger.store.projector import Projector

HEADER = "Ledger-Min-Seq"
READ_WAIT_SECONDS = 5.0
_LOG_ONLY = ("/api/v1/log/checkpoint", "/api/v1/log/keys", "/api/v1/log/proof/", "/api/v1/log/export")


def wait_for_projections() -> None:
    """A `before_request` hook: waits until the projections serve what this read must see."""
    dry_run = request.method == "POST" and request.path == "/api/v1/policies/evaluate"  # a read, by POST
    if (request.method != "GET" and not dry_run) or not request.path.startswith("/api/v1/"):
        return
    if request.path.startswith(_LOG_ONLY):
        return
    if request.path == "/api/v1/openapi.json":
        return
    projector: Projector = current_app.extensions["ledger.runtime"].projector
    raw = request.args.get("min_seq")
    field = "min_seq"
    if raw is None and HEADER in request.headers:
        raw, field = request.headers[HEADER], HEADER
    if raw is None:
        projector.sync_to_head(timeout=READ_WAIT_SECONDS)
        return
    seq = int_value(field, raw, what="query parameter" if field == "min_seq" else "header", maximum=2**62)
    size, applied = projector.positions()
    if seq >= size:  # a receipt is given only after its entry commits: no client waits for one
        raise InvalidRequestError(f"entry {seq} is not in the log (its size is {size})", field=field)
    if applied <= seq:
        projector.sync(seq + 1, timeout=READ_WAIT_SECONDS)
