"""Read your writes (DESIGN.md 8, normative): reads wait, bounded, for the projections.

A read that names an entry (`?min_seq=N` or the header `Ledger-Min-Seq: N`) is served once every
projection has applied entry N. A read that names none is served once they have applied every entry
the log held when the request arrived, so a client that has a receipt always reads its own write.
Past the bound the answer is 503 problem+json with `Retry-After`. The log's own reads (checkpoint,
proofs, keys, export) do not depend on projections and never wait.

With a read replica (`LEDGER_READ_DATABASE_URL`), a GET of the log, lineage or provenance reads is
served by the replica once the replica itself shows the same: its log holds the entries the read must
see and, but for the log's own reads, its projections' watermarks have passed them. The projections
are applied on the primary first, as without a replica. A replica that cannot be reached, or that has
not replayed that far within REPLICA_WAIT_SECONDS, leaves the read to the primary (counted in
`/metrics`).
"""

from __future__ import annotations

from flask import current_app, request
from prometheus_client import Counter, Gauge
from sqlalchemy.exc import SQLAlchemyError

from ledger.api.params import int_value
from ledger.errors import InvalidRequestError
from ledger.runtime import Runtime

HEADER = "Ledger-Min-Seq"
READ_WAIT_SECONDS = 5.0
_LOG_ONLY = ("/api/v1/log/checkpoint", "/api/v1/log/keys", "/api/v1/log/proof/", "/api/v1/log/export")
# The blueprints whose GET routes only read: the log and its proofs, the lineage reads, governance and
# provenance reads. A replica serves them; every other route reads the primary.
REPLICA_BLUEPRINTS = frozenset({"log", "lineage_reads", "governance"})
REPLICA_WAIT_SECONDS = 1.0  # a replica further behind than this leaves the read to the primary

REPLICA_UP = Gauge("ledger_read_replica_up", "1 while the read replica answers, 0 when reads fall back to the primary")
REPLICA_READS = Counter("ledger_read_replica_reads_total", "Reads served by the read replica")
REPLICA_FALLBACKS = Counter(
    "ledger_read_replica_fallbacks_total",
    "Reads a replica would serve that the primary served: the replica unreachable, behind, or failing the read",
    ["reason"],
)


def wait_for_projections() -> None:
    """A `before_request` hook: waits until the projections serve what this read must see, and
    chooses where the read is served."""
    dry_run = request.method == "POST" and request.path == "/api/v1/policies/evaluate"  # a read, by POST
    if (request.method != "GET" and not dry_run) or not request.path.startswith("/api/v1/"):
        return
    if request.path == "/api/v1/openapi.json":
        return
    rt: Runtime = current_app.extensions["ledger.runtime"]
    replica = rt.replica if request.method == "GET" and request.blueprint in REPLICA_BLUEPRINTS else None
    if request.path.startswith(_LOG_ONLY):
        if replica is not None:
            _choose_replica(rt, rt.ledger.size(), projections=False)  # the primary's size
        return
    projector = rt.projector
    raw = request.args.get("min_seq")
    field = "min_seq"
    if raw is None and HEADER in request.headers:
        raw, field = request.headers[HEADER], HEADER
    size, applied = projector.positions()
    if raw is None:
        target = size
    else:
        seq = int_value(field, raw, what="query parameter" if field == "min_seq" else "header", maximum=2**62)
        if seq >= size:  # a receipt is given only after its entry commits: no client waits for one
            raise InvalidRequestError(f"entry {seq} is not in the log (its size is {size})", field=field)
        target = seq + 1
    if applied < target:
        projector.sync(target, timeout=READ_WAIT_SECONDS)
    if replica is not None:
        _choose_replica(rt, target, projections=True)


def _choose_replica(rt: Runtime, size: int, *, projections: bool) -> None:
    """Routes this request's reads to the replica if it has replayed `size` entries (and, with
    `projections`, applied them); else they stay on the primary."""
    replica = rt.replica
    assert replica is not None
    if not replica.worth_trying():
        REPLICA_FALLBACKS.labels("unreachable").inc()
        return
    try:
        ready = replica.caught_up(size, projections=projections, timeout=REPLICA_WAIT_SECONDS)
    except SQLAlchemyError:
        REPLICA_UP.set(0)
        REPLICA_FALLBACKS.labels("unreachable").inc()
        return
    REPLICA_UP.set(1)
    if not ready:
        REPLICA_FALLBACKS.labels("behind").inc()
        return
    rt.db.route_to_replica(True)
    REPLICA_READS.inc()


def end_request() -> None:
    """A `teardown_request` hook: the next request on this thread reads the primary until it chooses."""
    rt: Runtime = current_app.extensions["ledger.runtime"]
    rt.db.route_to_replica(False)
