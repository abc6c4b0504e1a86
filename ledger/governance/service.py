"""Governance services: register, validate, approve, promote (policy-gated), deploy, report, bundle.

Every action is one log entry, decided outside the append lock (DESIGN.md 8, "Log first"):
(1) the projections catch up with the log head as the request saw it;
(2) the action is checked, or the policy evaluated, on one snapshot of the projections, at watermark W;
(3) the entry is appended `Unless` an entry that would change that decision arrived after W (checked
    under the lock, on the log alone); if one did, steps (1)-(3) run again on the newer state.
So a refused action writes nothing, and two racing actions cannot both pass a check that only one of
them should.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from ledger.errors import ConflictError, NotFoundError, PermissionDeniedError, PolicyDeniedError, UnprocessableError
from ledger.governance.audit import derive_report
from ledger.governance.models import ModelVersion, PromotionDecision
from ledger.governance.projection import find_version, require_version
from ledger.governance.provenance import input_subjects, promotion_input, provenance_report
from ledger.lineage.events import LINEAGE_KINDS
from ledger.lineage.models import Job, Run
from ledger.policy.engine import PolicyEngine, PolicyResult
from ledger.security.principals import AuthenticatedPrincipal
from ledger.store.ledger import Clause, Ledger, Receipt, StaleStateError, Unless, prove_entries
from ledger.store.projector import Projector
from ledger.store.sequencer import PendingEntry
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


def model_namespace(session: Session, mv: ModelVersion | str) -> str | None:
    """The namespace a model version belongs to: its training run's job's (None: run unknown)."""
    run_id = mv if isinstance(mv, str) else mv.training_run_id
    run = session.get(Run, run_id)
    job = session.get(Job, run.job_id) if run is not None else None
    return job.namespace if job is not None else None


def scoped_version(
    session: Session, name: str, version: str, principal: AuthenticatedPrincipal, *, write: bool
) -> ModelVersion:
    """The version, if `principal` may read it (or, with `write`, write about it); otherwise the
    very answer a missing version gets (DESIGN.md 6: out of scope reads as absent)."""
    mv = require_version(session, name, version)
    ns = model_namespace(session, mv)
    allowed = principal.may_write_namespace if write else principal.may_read_namespace
    if (ns is None and principal.reads_scoped) or (ns is not None and not allowed(ns)):
        raise NotFoundError(f"model {name!r} has no version {version!r}", field="version")
    return mv


def visible_model_versions(session: Session, principal: AuthenticatedPrincipal) -> list[ModelVersion]:
    """Every model version `principal` may read, in registration order (one query)."""
    from sqlalchemy import select

    q = select(ModelVersion).order_by(ModelVersion.seq)  # type: ignore[arg-type]
    if principal.reads_scoped:
        q = (
            q.join(Run, Run.run_id == ModelVersion.training_run_id)  # type: ignore[arg-type]
            .join(Job, Job.id == Run.job_id)  # type: ignore[arg-type]
            .where(Job.namespace.in_(sorted(principal.namespaces)))  # type: ignore[attr-defined]
        )
    return list(session.execute(q).scalars())


MAX_ATTEMPTS = 5
MAX_SUBJECTS = 20_000  # bound parameters of the precondition (SQLite allows 32,766 in a statement)
# Entries that change any promotion's or deployment's input, whatever they are about.
GLOBAL_INPUTS = frozenset({"dataset.classification", "payload.erasure", "access.decision"})


class GovernanceService:
    def __init__(
        self,
        ledger: Ledger,
        policy: PolicyEngine,
        projector: Projector,
        *,
        config: dict[str, Any],
        roles_of: Callable[[str], frozenset[str]],
    ) -> None:
        self.ledger = ledger
        self.policy = policy
        self.projector = projector
        self.config = config
        self.roles_of = roles_of

    def _decide(self, decide: Callable[[Session, int], tuple[PendingEntry, Unless | None]]) -> tuple[Any, Receipt]:
        """Steps (1)-(3) of the module docstring; returns the appended entry's payload and receipt."""
        for _ in range(MAX_ATTEMPTS):
            self.projector.sync_to_head()  # (1)
            with self.ledger.db.snapshot() as session:  # (2)
                entry, unless = decide(session, self.projector.applied(session))
            try:
                entries, receipts = self.ledger.append([entry], unless=unless)  # (3)
            except StaleStateError:
                continue  # something it depends on arrived meanwhile: decide again on the newer state
            return entries[0].payload, receipts[0]
        raise ConflictError(
            f"the state kept changing under this request ({MAX_ATTEMPTS} attempts); retry it", retry_after=1
        )

    def register(self, name: str, body: dict[str, Any], principal: AuthenticatedPrincipal) -> Recorded:
        version = body["version"]
        subject = _subject(name, version)
        payload = {
            "name": name,
            "version": version,
            "artifact": body["artifact"],
            "training_run_id": body["training_run_id"].lower(),
            "model_card": body.get("model_card") or {},
        }

        def decide(session: Session, _w: int) -> tuple[PendingEntry, Unless]:
            if find_version(session, name, version) is not None:
                raise ConflictError(f"model {name!r} version {version!r} is registered already", field="version")
            ns = model_namespace(session, payload["training_run_id"])
            if ns is None or not principal.may_write_namespace(ns):  # out of scope reads as absent
                raise NotFoundError(
                    f"training run {body['training_run_id']} is not recorded in the log", field="training_run_id"
                )
            others = {model_namespace(session, mv) for mv in _versions_of(session, name)} - {ns}
            if any(o is None or not principal.may_write_namespace(o) for o in others):
                raise PermissionDeniedError(
                    f"model {name!r} has versions in namespaces principal {principal.name!r} may not write",
                    field="name",
                )
            entry = PendingEntry(kind="model.version", subject=subject, principal=principal.name, payload=payload)
            # Not registered twice, whatever arrives between this check and the append.
            return entry, Unless(0, (Clause(kinds=frozenset({"model.version"}), subjects=frozenset({subject})),))

        _, receipt = self._decide(decide)
        return Recorded({**payload, "registered_by": principal.name, "seq": receipt.seq}, receipt)

    def _record_on_version(
        self, name: str, version: str, entry: PendingEntry, principal: AuthenticatedPrincipal
    ) -> Receipt:
        """An entry about a registered version (registrations are never undone: no precondition);
        refused as a missing version outside the principal's namespaces."""

        def decide(session: Session, _w: int) -> tuple[PendingEntry, None]:
            scoped_version(session, name, version, principal, write=True)
            return entry, None

        return self._decide(decide)[1]

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
        receipt = self._record_on_version(
            name,
            version,
            PendingEntry(
                kind="validation.result", subject=_subject(name, version), principal=principal.name, payload=payload
            ),
            principal,
        )
        return Recorded({**payload, "seq": receipt.seq}, receipt)

    def approve(self, name: str, version: str, body: dict[str, Any], principal: AuthenticatedPrincipal) -> Recorded:
        payload = {"stage": body["stage"], "approver": principal.name, "comment": body.get("comment") or ""}
        receipt = self._record_on_version(
            name,
            version,
            PendingEntry(kind="approval", subject=_subject(name, version), principal=principal.name, payload=payload),
            principal,
        )
        return Recorded({**payload, "seq": receipt.seq}, receipt)

    def promote(self, name: str, version: str, stage: str, principal: AuthenticatedPrincipal) -> Recorded:
        """Evaluates the promotion policy on the projections at a watermark W (outside the append
        lock) and records the decision with `state_size` W, allowed or denied; raises
        PolicyDeniedError (403) after recording a denial."""
        subject = _subject(name, version)

        def decide(session: Session, w: int) -> tuple[PendingEntry, Unless]:
            mv = scoped_version(session, name, version, principal, write=True)
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
            entry = PendingEntry(
                kind="promotion.decision",
                subject=subject,
                principal=principal.name,
                payload={
                    "stage": stage,
                    "requested_by": principal.name,
                    "allowed": result.allowed,
                    "violations": list(result.violations),
                    "warnings": list(result.warnings),
                    "policy_digest": result.policy_digest,
                    "input_digest": result.input_digest,
                    "state_size": w,
                },
            )
            subjects = frozenset({subject, *input_subjects(doc)})
            if len(subjects) > MAX_SUBJECTS:  # past what one statement may bind: any lineage entry counts
                inputs = (Clause(subjects=frozenset({subject})), Clause(kinds=LINEAGE_KINDS))
            else:
                inputs = (Clause(subjects=subjects),)
            return entry, Unless(w, (*inputs, Clause(kinds=GLOBAL_INPUTS)))

        payload, receipt = self._decide(decide)
        decision = {
            "allowed": payload["allowed"],
            "violations": payload["violations"],
            "warnings": payload["warnings"],
            "policy_digest": payload["policy_digest"],
            "input_digest": payload["input_digest"],
            "state_size": payload["state_size"],
            "seq": receipt.seq,
            "stage": stage,
        }
        if not payload["allowed"]:
            raise PolicyDeniedError(
                f"promotion of {name}@{version} to {stage} denied: {len(payload['violations'])} violation(s)",
                decision=decision,
                receipt_seq=receipt.seq,
            )
        return Recorded(decision, receipt)

    def deploy(self, name: str, version: str, body: dict[str, Any], principal: AuthenticatedPrincipal) -> Recorded:
        """Records a deployment if an allowed promotion to its stage exists; otherwise records the
        refusal (a `deployment` entry with `refused: true`) and raises 403."""
        stage = body["stage"]
        subject = _subject(name, version)

        def decide(session: Session, w: int) -> tuple[PendingEntry, Unless]:
            mv = scoped_version(session, name, version, principal, write=True)
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
            entry = PendingEntry(kind="deployment", subject=subject, principal=principal.name, payload=payload)
            newer = Clause(kinds=frozenset({"promotion.decision"}), subjects=frozenset({subject}))
            return entry, Unless(w, (newer,))

        payload, receipt = self._decide(decide)
        if payload.get("refused"):
            raise PolicyDeniedError(payload["reason"], deployment={**payload, "seq": receipt.seq})
        return Recorded({**payload, "seq": receipt.seq}, receipt)

    # --- reads -----------------------------------------------------------------------------------

    def model(self, name: str, version: str, viewer: AuthenticatedPrincipal) -> dict[str, Any]:
        report = self.report(name, version, viewer)
        stages: dict[str, Any] = {}
        for d in report["deployments"]:
            if not d["refused"]:
                stages[d["environment"]] = {"stage": d["stage"], "endpoint": d["endpoint"], "seq": d["seq"]}
        return {**report["model"], "current_stage": stages, "verdicts": report["verdicts"]}

    def report(self, name: str, version: str, viewer: AuthenticatedPrincipal) -> dict[str, Any]:
        """The provenance report as `viewer` may read it: absent outside its namespaces, and the
        upstream runs, jobs, datasets and classifications of namespaces it does not read left out
        (their entries stay cited, with payloads withheld, so the bundle still verifies)."""
        with self.ledger.db.read() as session:
            mv = scoped_version(session, name, version, viewer, write=False)
            report = provenance_report(session, mv, tree_size(session))
            if viewer.reads_scoped:
                _scope_upstream(session, report, viewer)
            return report

    def bundle(self, name: str, version: str, viewer: AuthenticatedPrincipal) -> dict[str, Any]:
        """The report the cited entries prove (`derive_report`, the function `ledger verify`
        recomputes it with), scoped to `viewer` as `report` is, those entries with inclusion proofs,
        and the checkpoint they hold in."""
        cited = self.report(name, version, viewer)["entries"]
        proven = prove_entries(self.ledger, cited)
        rows = [(e.header, e.leaf_hash, e.salt, e.payload) for e in proven.entries.values()]
        report = derive_report(rows, name, version, log_size=proven.checkpoint.size)
        if report is None:  # the registration's payload was erased: nothing to report on
            raise NotFoundError(f"model {name!r} version {version!r} has no registration left to prove")
        if viewer.reads_scoped:
            with self.ledger.db.read() as session:
                _scope_upstream(session, report, viewer)
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


def _versions_of(session: Session, name: str) -> list[ModelVersion]:
    from sqlalchemy import select

    return list(session.execute(select(ModelVersion).where(ModelVersion.name == name)).scalars())  # type: ignore[arg-type]


def _scope_upstream(session: Session, report: dict[str, Any], viewer: AuthenticatedPrincipal) -> None:
    """Leaves out of `report` the upstream runs, jobs, datasets and classifications of namespaces
    `viewer` does not read, and names no run it cannot see."""
    up = report["upstream"]
    runs = {r["id"] for r in up["runs"]}
    visible: set[str] = set()
    for run_id in runs:
        ns = model_namespace(session, run_id)
        if ns is not None and viewer.may_read_namespace(ns):
            visible.add(run_id)
    up["runs"] = [r for r in up["runs"] if r["id"] in visible]
    up["jobs"] = [j for j in up["jobs"] if viewer.may_read_namespace(j["namespace"])]
    up["datasets"] = [d for d in up["datasets"] if viewer.may_read_namespace(d["namespace"])]
    for d in up["datasets"]:
        if d.get("produced_by_run") not in visible:
            d["produced_by_run"] = None
        d["consumed_by_runs"] = [r for r in d.get("consumed_by_runs") or [] if r in visible]
    report["classifications"] = [c for c in report["classifications"] if viewer.may_read_namespace(c["namespace"])]


def _latest_decision(session: Session, mv: ModelVersion, stage: str) -> PromotionDecision | None:
    from sqlalchemy import select

    q = (
        select(PromotionDecision)
        .where(PromotionDecision.model_version_id == mv.id, PromotionDecision.stage == stage)
        .order_by(PromotionDecision.seq.desc())
        .limit(1)
    )  # type: ignore[attr-defined]
    return session.execute(q).scalar_one_or_none()
