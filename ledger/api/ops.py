"""Operations endpoints: liveness, readiness, Prometheus metrics, OpenAPI (served by flask-smorest)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from sqlalchemy import text

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


PROJECTION_LAG = Gauge(
    "ledger_projection_lag_entries", "Log entries a projection (or follower) has not applied yet", ["projection"]
)


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    rt = current_app.extensions["ledger.runtime"]
    try:
        with rt.db.read() as session:
            session.execute(text("SELECT 1 FROM log_entries LIMIT 1"))
        lag = rt.projector.lag()
    except Exception as e:  # any failure means not ready; say why
        return jsonify({"status": "unavailable", "reason": type(e).__name__}), 503
    bound = rt.settings.max_projection_lag
    behind = {name: n for name, n in lag.items() if n > bound}
    if behind:
        reason = f"projections behind the log by more than {bound} entries: {behind}"
        return jsonify({"status": "unavailable", "reason": reason, "projection_lag": lag}), 503
    return jsonify({"status": "ready", "projection_lag": lag}), 200


@bp.get("/metrics")
def metrics() -> Response:
    try:
        for name, n in current_app.extensions["ledger.runtime"].projector.lag().items():
            PROJECTION_LAG.labels(name).set(n)
    except Exception:  # noqa: S110  (the other metrics are still worth serving)
        pass
    return Response(generate_latest(), content_type=CONTENT_TYPE_LATEST)  # it names its charset already
