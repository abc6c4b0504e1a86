"""OpenLineage events for tests, shaped as the real clients send them (spec 2-0-2)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

PRODUCER = "https://github.com/OpenLineage/OpenLineage/tree/1.54.0/client/python"
SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json"


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def dataset(namespace: str, name: str, **facets: Any) -> dict[str, Any]:
    return {"namespace": namespace, "name": name, "facets": facets}


def run_event(
    *,
    event_type: str = "COMPLETE",
    run_id: str | None = None,
    namespace: str = "etl",
    job: str = "clean_customers",
    inputs: list[dict[str, Any]] | None = None,
    outputs: list[dict[str, Any]] | None = None,
    job_facets: dict[str, Any] | None = None,
    run_facets: dict[str, Any] | None = None,
    event_time: str | None = None,
) -> dict[str, Any]:
    return {
        "eventType": event_type,
        "eventTime": event_time or now(),
        "producer": PRODUCER,
        "schemaURL": f"{SCHEMA}#/definitions/RunEvent",
        "run": {"runId": run_id or str(uuid.uuid4()), "facets": run_facets or {}},
        "job": {"namespace": namespace, "name": job, "facets": job_facets or {}},
        "inputs": inputs or [],
        "outputs": outputs or [],
    }


def dataset_event(namespace: str = "s3://raw", name: str = "customers", **facets: Any) -> dict[str, Any]:
    return {
        "eventTime": now(),
        "producer": PRODUCER,
        "schemaURL": f"{SCHEMA}#/definitions/DatasetEvent",
        "dataset": dataset(namespace, name, **facets),
    }


def job_event(namespace: str = "etl", name: str = "clean_customers") -> dict[str, Any]:
    return {
        "eventTime": now(),
        "producer": PRODUCER,
        "schemaURL": f"{SCHEMA}#/definitions/JobEvent",
        "job": {"namespace": namespace, "name": name, "facets": {}},
        "inputs": [],
        "outputs": [],
    }
