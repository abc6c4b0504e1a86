"""Operations endpoints: liveness, readiness, Prometheus metrics, OpenAPI (served by flask-smorest)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from ledger.api.consistency import REPLICA_UP
from ledger.errors import LedgerError
from ledger.store.faults import fault_of
from ledger.store.health import checkpoint_age, write_blockers

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


PROJECTION_LAG = Gauge(
    "ledger_projection_lag_entries", "Log entries a projection (or follower) has not applied yet", ["projection"]
)


CHECKPOINT_AGE = Gauge(
    "ledger_checkpoint_age_seconds",
    "Seconds since a signed checkpoint of the whole log was last stored or confirmed by the checkpoint job",
)
WRITE_FAULT_SECONDS = 60  # an append that failed on a full disk or read-only database counts this long


def _not_ready(rt: Any) -> tuple[list[str], dict[str, int]]:
    """Every reason writes cannot succeed now (DESIGN.md 7 operations), and the projection lag."""
    reasons: list[str] = []
    try:
        reasons += write_blockers(rt.db)
        with rt.db.read() as session:
            rt.ledger.require_current_key(session, rt.ledger.signer.verifier.key_id.hex())
    except LedgerError as e:  # the key is stale (a rotation this host has not seen)
        reasons.append(e.detail)
    except Exception as e:  # the database cannot be reached: say why, in one line
        fault = fault_of(e)
        reasons.append(fault.detail if fault is not None else f"the database failed: {type(e).__name__}")
        return reasons, {}
    fault = rt.ledger.write_fault
    if fault is not None and time.monotonic() - fault[0] < WRITE_FAULT_SECONDS:
        reasons.append(f"the last append failed: {fault[1]}")
    lag = rt.projector.lag()
    bound = rt.settings.max_projection_lag
    behind = {name: n for name, n in lag.items() if n > bound}
    if behind:
        reasons.append(f"projections behind the log by more than {bound} entries: {behind}")
    age = checkpoint_age(rt.db)
    interval = rt.settings.checkpoint_interval
    if age is not None and age > 2 * interval:
        reasons.append(f"the newest checkpoint is {age:.0f} s old, past twice the interval ({interval} s)")
    return reasons, lag


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """200 when writes can succeed; 503 with every reason they cannot."""
    reasons, lag = _not_ready(current_app.extensions["ledger.runtime"])
    if reasons:
        body = {"status": "unavailable", "reason": "; ".join(reasons), "reasons": reasons, "projection_lag": lag}
        return jsonify(body), 503
    return jsonify({"status": "ready", "projection_lag": lag}), 200


WITNESS_COSIGNED = Gauge(
    "ledger_witness_cosigned_size", "The largest checkpoint size each witness (LEDGER_WITNESSES) cosigned", ["witness"]
)
WITNESS_BEHIND = Gauge(
    "ledger_witness_behind_entries",
    "Entries the largest stored checkpoint holds beyond the last one each witness cosigned",
    ["witness"],
)


@bp.get("/metrics")
def metrics() -> Response:
    rt = current_app.extensions["ledger.runtime"]
    if rt.replica is not None:
        REPLICA_UP.set(1 if rt.replica.probe() else 0)
    try:
        for name, n in rt.projector.lag().items():
            PROJECTION_LAG.labels(name).set(n)
        age = checkpoint_age(rt.db)
        CHECKPOINT_AGE.set(age if age is not None else float("nan"))
    except Exception:  # noqa: S110  (the other metrics are still worth serving)
        pass
    with contextlib.suppress(Exception):  # as above
        _witness_metrics(rt)
    return Response(generate_latest(), content_type=CONTENT_TYPE_LATEST)  # it names its charset already


def _witness_metrics(rt: Any) -> None:
    from ledger.tlog.cosignature import WitnessVerifier

    if not rt.settings.witnesses:
        return
    latest = rt.ledger.latest_stored()
    size = latest[0] if latest else 0
    held = rt.ledger.cosigned_sizes()
    for _, vkey in rt.settings.witnesses:
        w = WitnessVerifier.parse(vkey)
        cosigned = held.get(w.key_id.hex(), 0)
        WITNESS_COSIGNED.labels(w.name).set(cosigned)
        WITNESS_BEHIND.labels(w.name).set(max(0, size - cosigned))
