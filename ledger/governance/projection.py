"""Projects governance entries (model versions, validations, approvals, decisions, deployments)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from ledger.errors import NotFoundError
from ledger.governance.models import Approval, Deployment, ModelVersion, PromotionDecision, Validation
from ledger.tlog.entry import EntryHeader

GOVERNANCE_KINDS = {"model.version", "validation.result", "approval", "promotion.decision", "deployment"}


def parse_model_subject(subject: str) -> tuple[str, str]:
    """`model:<name>@<version>`; names cannot hold '@' (checked at the API), versions may."""
    body = subject.removeprefix("model:")
    name, _, version = body.partition("@")
    return name, version


def find_version(session: Session, name: str, version: str) -> ModelVersion | None:
    q = select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
    return session.execute(q).scalar_one_or_none()


def require_version(session: Session, name: str, version: str) -> ModelVersion:
    mv = find_version(session, name, version)
    if mv is None:
        raise NotFoundError(f"model {name!r} has no version {version!r}", field="version")
    return mv


def project_governance(session: Session, entries: list[tuple[EntryHeader, Any]]) -> None:
    for h, p in entries:
        if h.kind not in GOVERNANCE_KINDS or p is None:
            continue
        name, version = parse_model_subject(h.subject)
        if h.kind == "model.version":
            if find_version(session, name, version) is not None:
                # Appends refuse a second registration (Unless, under the lock), so none is in a log
                # this service wrote; a projection never refuses an entry: the first one holds.
                continue
            session.add(
                ModelVersion(
                    name=name,
                    version=version,
                    artifact_uri=p["artifact"]["uri"],
                    artifact_digest=p["artifact"]["digest"],
                    training_run_id=p["training_run_id"],
                    model_card=p.get("model_card") or {},
                    registered_by=h.principal,
                    registered_at=h.integrated_time,
                    seq=h.seq,
                )
            )
            session.flush()
            continue
        mv = find_version(session, name, version)
        if mv is None:  # only in a replay: the registration's payload was erased, and this has no model
            continue
        assert mv.id is not None
        if h.kind == "validation.result":
            report = p.get("report") or {}
            session.add(
                Validation(
                    model_version_id=mv.id,
                    type=p["type"],
                    metrics=p.get("metrics") or {},
                    thresholds=p.get("thresholds") or {},
                    passed=bool(p["passed"]),
                    report_uri=report.get("uri"),
                    report_digest=report.get("digest"),
                    datasets=p.get("datasets") or [],
                    run_id=p.get("run_id"),
                    recorded_by=h.principal,
                    recorded_at=h.integrated_time,
                    seq=h.seq,
                )
            )
        elif h.kind == "approval":
            session.add(
                Approval(
                    model_version_id=mv.id,
                    stage=p["stage"],
                    approver=p["approver"],
                    comment=p.get("comment") or "",
                    recorded_at=h.integrated_time,
                    seq=h.seq,
                )
            )
        elif h.kind == "promotion.decision":
            session.add(
                PromotionDecision(
                    model_version_id=mv.id,
                    stage=p["stage"],
                    requested_by=p["requested_by"],
                    allowed=bool(p["allowed"]),
                    violations=list(p.get("violations") or []),
                    warnings=list(p.get("warnings") or []),
                    policy_digest=p["policy_digest"],
                    input_digest=p["input_digest"],
                    recorded_at=h.integrated_time,
                    seq=h.seq,
                )
            )
        elif h.kind == "deployment":
            session.add(
                Deployment(
                    model_version_id=mv.id,
                    stage=p["stage"],
                    environment=p["environment"],
                    endpoint=p.get("endpoint"),
                    decision_seq=p.get("decision_seq"),
                    refused=bool(p.get("refused", False)),
                    reason=p.get("reason"),
                    deployed_by=h.principal,
                    recorded_at=h.integrated_time,
                    seq=h.seq,
                )
            )
    session.flush()
