"""Governance services: register, validate, approve, promote (policy-gated), deploy, report, bundle.

Every action is one log entry; checks that depend on the log run inside the append's transaction
(under the sequencer lock), so a refused action writes nothing and two racing actions cannot both
pass a check that only one of them should.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from ledger.errors import NotFoundError, PolicyDeniedError, UnprocessableError
from ledger.governance.models import ModelVersion, PromotionDecision
from ledger.governance.projection import project_governance, require_version
from ledger.governance.provenance import promotion_input, provenance_report
from ledger.lineage.models import Run
from ledger.policy.engine import PolicyEngine, PolicyResult
from ledger.security.principals import AuthenticatedPrincipal
from ledger.store.ledger import Ledger, Receipt, prove_entries
from ledger.store.sequencer import AppendResult, PendingEntry
from ledger.store.tree import tree_size
from ledger.tlog.entry import format_time


@dataclass(frozen=True)
class Recorded:
    body: dict[str, Any]
    receipt: Receipt


def compute_passed(metrics: dict[str, Any], thresholds: dict[str, Any]) -> tuple[bool, list[str]]:
    """`passed` from `min`/`max` per metric; returns the failures (a missing metric fails)."""
    failures: list[str] = []
    for metric, bound in sorted(thresholds.items()):
        value = metrics.get(metric)
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            failures.append(f"metric {metric!r} has a threshold but no numeric value")
            continue
        if "min" in bound and value < bound["min"]:
            failures.append(f"{metric}={value} is below min {bound['min']}")
        if "max" in bound and value > bound["max"]:
            failures.append(f"{metric}={value} is above max {bound['max']}")
    return not failures, failures


def _subject(name: str, version: str) -> str:
    return f"model:{name}@{version}"


class GovernanceService:
    def __init__(
        self, ledger: Ledger, policy: PolicyEngine, *, config: dict[str, Any], roles_of: Callable[[str], frozenset[str]]
    ) -> None:
        self.ledger = ledger
        self.policy = policy
        self.config = config
        self.roles_of = roles_of

    def _record(
        self,
        pending: PendingEntry,
        check: Callable[[Session], None] | None = None,
        after: Callable[[Session, AppendResult], None] | None = None,
    ) -> Receipt:
        def project(session: Session, result: AppendResult) -> None:
            if check is not None:
                check(session)
            project_governance(session, [(e.header, e.payload) for e in result.entries if not e.duplicate])
            if after is not None:
                after(session, result)

        _, receipts = self.ledger.append([pending], project=project)
        return receipts[0]

    def register(self, name: str, body: dict[str, Any], principal: AuthenticatedPrincipal) -> Recorded:
        version = body["version"]
        payload = {
            "name": name,
            "version": version,
            "artifact": body["artifact"],
            "training_run_id": body["training_run_id"].lower(),
            "model_card": body.get("model_card") or {},
        }

        def check(session: Session) -> None:
            if session.get(Run, payload["training_run_id"]) is None:
                raise NotFoundError(
                    f"training run {body['training_run_id']} is not recorded in the log", field="training_run_id"
                )

        receipt = self._record(
            PendingEntry(
                kind="model.version", subject=_subject(name, version), principal=principal.name, payload=payload
            ),
            check,
        )
        return Recorded({**payload, "registered_by": principal.name, "seq": receipt.seq}, receipt)

    def add_validation(
        self, name: str, version: str, body: dict[str, Any], principal: AuthenticatedPrincipal
    ) -> Recorded:
        thresholds = body.get("thresholds") or {}
        metrics = body.get("metrics") or {}
        if thresholds:
            passed, failures = compute_passed(metrics, thresholds)
            if "passed" in body and body["passed"] is not None and bool(body["passed"]) != passed:
                raise UnprocessableError(
                    f"passed={body['passed']} contradicts the thresholds"
                    + (f": {'; '.join(failures)}" if failures else " (every metric is within them)"),
                    field="passed",
                )
        elif body.get("passed") is None:
            raise UnprocessableError("give thresholds, or `passed` when there are none", field="passed")
        else:
            passed = bool(body["passed"])
        payload = {
            "type": body["type"],
            "metrics": metrics,
            "thresholds": thresholds,
            "passed": passed,
            "report": body.get("report"),
            "datasets": body.get("datasets") or [],
            "run_id": body["run_id"].lower() if body.get("run_id") else None,
        }

        def check(session: Session) -> None:
            require_version(session, name, version)

        receipt = self._record(
            PendingEntry(
                kind="validation.result", subject=_subject(name, version), principal=principal.name, payload=payload
            ),
            check,
        )
        return Recorded({**payload, "seq": receipt.seq}, receipt)

    def approve(self, name: str, version: str, body: dict[str, Any], principal: AuthenticatedPrincipal) -> Recorded:
        payload = {"stage": body["stage"], "approver": principal.name, "comment": body.get("comment") or ""}
        receipt = self._record(
            PendingEntry(kind="approval", subject=_subject(name, version), principal=principal.name, payload=payload),
            lambda session: require_version(session, name, version) and None,
        )
        return Recorded({**payload, "seq": receipt.seq}, receipt)

    def promote(self, name: str, version: str, stage: str, principal: AuthenticatedPrincipal) -> Recorded:
        """Evaluates the promotion policy on an input built from the log and records the decision,
        allowed or denied; raises PolicyDeniedError (403) after recording a denial."""
        outcome: dict[str, Any] = {}

        def project(session: Session, result: AppendResult) -> None:
            project_governance(session, [(e.header, e.payload) for e in result.entries])

        def build(session: Session) -> PendingEntry:
            mv = require_version(session, name, version)
            doc = promotion_input(
                session,
                mv,
                stage=stage,
                requester={"name": principal.name, "roles": sorted(principal.roles)},
                now=format_time(self.ledger.clock()),
                config=self.config,
                roles_of=self.roles_of,
            )
            result: PolicyResult = self.policy.evaluate("ledger.promotion", doc)
            outcome["result"] = result
            return PendingEntry(
                kind="promotion.decision",
                subject=_subject(name, version),
                principal=principal.name,
                payload={
                    "stage": stage,
                    "requested_by": principal.name,
                    "allowed": result.allowed,
                    "violations": list(result.violations),
                    "warnings": list(result.warnings),
                    "policy_digest": result.policy_digest,
                    "input_digest": result.input_digest,
                },
            )

        _, receipts = self.ledger.append_built(build, project=project)
        result = outcome["result"]
        decision = {
            "allowed": result.allowed,
            "violations": list(result.violations),
            "warnings": list(result.warnings),
            "policy_digest": result.policy_digest,
            "input_digest": result.input_digest,
            "seq": receipts[0].seq,
            "stage": stage,
        }
        if not result.allowed:
            raise PolicyDeniedError(
                f"promotion of {name}@{version} to {stage} denied: {len(result.violations)} violation(s)",
                decision=decision,
                receipt_seq=receipts[0].seq,
            )
        return Recorded(decision, receipts[0])

    def deploy(self, name: str, version: str, body: dict[str, Any], principal: AuthenticatedPrincipal) -> Recorded:
        """Records a deployment if an allowed promotion to its stage exists; otherwise records the
        refusal (a `deployment` entry with `refused: true`) and raises 403."""
        stage = body["stage"]

        def build(session: Session) -> PendingEntry:
            mv = require_version(session, name, version)
            decision = _latest_decision(session, mv, stage)
            payload: dict[str, Any] = {
                "environment": body["environment"],
                "stage": stage,
                "endpoint": body.get("endpoint"),
                "decision_seq": decision.seq if decision and decision.allowed else None,
            }
            if decision is None or not decision.allowed:
                payload["refused"] = True
                payload["reason"] = f"no allowed promotion of {name}@{version} to {stage}" + (
                    f" (latest decision seq {decision.seq} denied it)" if decision else ""
                )
            return PendingEntry(
                kind="deployment", subject=_subject(name, version), principal=principal.name, payload=payload
            )

        def project(session: Session, result: AppendResult) -> None:
            project_governance(session, [(e.header, e.payload) for e in result.entries])

        entries, receipts = self.ledger.append_built(build, project=project)
        payload = entries[0].payload
        if payload.get("refused"):
            raise PolicyDeniedError(payload["reason"], deployment={**payload, "seq": receipts[0].seq})
        return Recorded({**payload, "seq": receipts[0].seq}, receipts[0])

    # --- reads -----------------------------------------------------------------------------------

    def model(self, name: str, version: str) -> dict[str, Any]:
        with self.ledger.db.read() as session:
            mv = require_version(session, name, version)
            report = provenance_report(session, mv, tree_size(session))
        stages: dict[str, Any] = {}
        for d in report["deployments"]:
            if not d["refused"]:
                stages[d["environment"]] = {"stage": d["stage"], "endpoint": d["endpoint"], "seq": d["seq"]}
        return {**report["model"], "current_stage": stages, "verdicts": report["verdicts"]}

    def report(self, name: str, version: str) -> dict[str, Any]:
        with self.ledger.db.read() as session:
            mv = require_version(session, name, version)
            return provenance_report(session, mv, tree_size(session))

    def bundle(self, name: str, version: str) -> dict[str, Any]:
        report = self.report(name, version)
        proven = prove_entries(self.ledger, report["entries"])
        return {
            "format": "ledger-bundle/v1",
            "verifier_key": proven.verifier_key,
            "checkpoint": proven.checkpoint.note,
            "report": report,
            "entries": [
                {**proven.entries[s].to_json(), "inclusion_proof": [h.hex() for h in proven.proofs[s]]}
                for s in report["entries"]
            ],
        }


def _latest_decision(session: Session, mv: ModelVersion, stage: str) -> PromotionDecision | None:
    from sqlalchemy import select

    q = (
        select(PromotionDecision)
        .where(PromotionDecision.model_version_id == mv.id, PromotionDecision.stage == stage)
        .order_by(PromotionDecision.seq.desc())
        .limit(1)
    )  # type: ignore[attr-defined]
    return session.execute(q).scalar_one_or_none()
