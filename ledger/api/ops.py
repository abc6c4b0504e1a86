"""Operations endpoints: liveness, readiness, Prometheus metrics, OpenAPI (served by flask-smorest)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    try:
        with current_app.extensions["ledger.ledger"].db.read() as session:
            session.execute(text("SELECT 1 FROM log_entries LIMIT 1"))
    except Exception as e:  # any failure means not ready; say why
        return jsonify({"status": "unavailable", "reason": type(e).__name__}), 503
    return jsonify({"status": "ready"}), 200


@bp.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(), content_type=CONTENT_TYPE_LATEST)  # it names its charset already
