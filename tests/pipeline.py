"""A realistic pipeline for governance tests: raw source -> clean -> features -> train."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from events import dataset_event, run_event

GIT = {"type": "git", "url": "https://git.example/ml/churn", "version": "9c1e4b7"}


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def versioned(namespace: str, name: str, version: str, **facets: Any) -> dict[str, Any]:
    return {
        "namespace": namespace,
        "name": name,
        "facets": {
            "version": {"datasetVersion": version},
            "contentDigest": {"digest": digest(name + version)},
            **facets,
        },
    }


def step(
    post: Any,
    *,
    job: str,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    code: bool = True,
    complete: bool = True,
    namespace: str = "etl",
) -> str:
    run_id = str(uuid.uuid4())
    facets = {"sourceCodeLocation": GIT} if code else {}
    post(
        run_event(
            event_type="START",
            run_id=run_id,
            namespace=namespace,
            job=job,
            inputs=inputs,
            outputs=outputs,
            job_facets=facets,
        )
    )
    if complete:
        post(
            run_event(
                event_type="COMPLETE",
                run_id=run_id,
                namespace=namespace,
                job=job,
                inputs=inputs,
                outputs=outputs,
                job_facets=facets,
            )
        )
    return run_id


def build_pipeline(post: Any, *, pin_training_input: bool = True, code: bool = True) -> dict[str, str]:
    """Posts the whole pipeline through `post(event)`; returns the run ids."""
    post(
        dataset_event(
            "s3://raw",
            "customers",
            dataSource={"name": "crm", "uri": "postgres://crm/customers"},
            version={"datasetVersion": "2026-11-01"},
        )
    )
    clean = step(
        post,
        job="clean_customers",
        inputs=[versioned("s3://raw", "customers", "2026-11-01")],
        outputs=[versioned("s3://clean", "customers", "c-17")],
    )
    features = step(
        post,
        job="build_features",
        inputs=[versioned("s3://clean", "customers", "c-17")],
        outputs=[versioned("s3://features", "churn", "f-5")],
    )
    train_input = (
        versioned("s3://features", "churn", "f-5")
        if pin_training_input
        else {"namespace": "s3://features", "name": "churn", "facets": {}}
    )
    train = step(
        post,
        job="train_churn",
        namespace="ml",
        inputs=[train_input],
        outputs=[{"namespace": "s3://models", "name": "churn", "facets": {}}],
        code=code,
    )
    return {"clean": clean, "features": features, "train": train}


def registration(train_run: str, version: str = "3") -> dict[str, Any]:
    return {
        "version": version,
        "artifact": {"uri": f"s3://models/churn/{version}", "digest": digest("model" + version)},
        "training_run_id": train_run,
        "model_card": {
            "intended_use": "churn scoring",
            "limitations": "EU customers only",
            "owner": "ml-team",
            "risk_tier": "high",
        },
    }


def validation(kind: str, *, auc: float = 0.91, minimum: float = 0.85) -> dict[str, Any]:
    metric = "auc" if kind == "performance" else "demographic_parity_gap"
    if kind == "performance":
        return {
            "type": kind,
            "metrics": {metric: auc},
            "thresholds": {metric: {"min": minimum}},
            "report": {"uri": f"s3://reports/{kind}.html", "digest": digest(kind)},
            "datasets": [{"namespace": "s3://features", "name": "churn"}],
        }
    return {
        "type": kind,
        "metrics": {metric: 0.02},
        "thresholds": {metric: {"max": 0.05}},
        "report": {"uri": f"s3://reports/{kind}.html", "digest": digest(kind)},
        "datasets": [{"namespace": "s3://features", "name": "churn"}],
    }
