"""The provenance report (DESIGN.md 4.1) and the three verdicts (4.2), and the policy input (5).

Everything is read from the projections inside one transaction; every fact cited carries the seq of
the entry it comes from, so a bundle can prove each one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from ledger.governance.models import Approval, Deployment, ModelVersion, PromotionDecision, Validation
from ledger.lineage.events import policy_time
from ledger.lineage.models import Dataset, DatasetVersion, Job, Run, RunDataset, marquez_run_state
from ledger.store.db import chunks
from ledger.store.models import EntryPayload, LogEntry
from ledger.tlog.entry import DIGEST_RE, parse_time

MAX_CLOSURE_RUNS = 10_000


@dataclass
class UpstreamDataset:
    dataset: Dataset
    version: str | None
    digest: str | None
    produced_by_run: str | None
    consumed_by: set[str] = field(default_factory=set)

    def key(self) -> str:
        return f"{self.dataset.namespace}:{self.dataset.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.dataset.namespace,
            "name": self.dataset.name,
            "version": self.version,
            "digest": self.digest,
            "produced_by_run": self.produced_by_run,
            "source": self.dataset.source,
            "consumed_by_runs": sorted(self.consumed_by),
        }


@dataclass
class Closure:
    """The upstream lineage closure of a training run, down to sources."""

    runs: dict[str, Run] = field(default_factory=dict)
    jobs: dict[int, Job] = field(default_factory=dict)
    datasets: dict[tuple[int, str | None], UpstreamDataset] = field(default_factory=dict)
    training_inputs: list[UpstreamDataset] = field(default_factory=list)


def upstream_closure(session: Session, run_id: str) -> Closure:
    """Walks from a run through its inputs to their producing runs, recursively (to sources)."""
    c = Closure()
    queue = [run_id]
    while queue and len(c.runs) < MAX_CLOSURE_RUNS:
        rid = queue.pop()
        if rid in c.runs:
            continue
        run = session.get(Run, rid)
        if run is None:
            continue
        c.runs[rid] = run
        job = session.get(Job, run.job_id)
        if job is not None:
            c.jobs[job.id] = job  # type: ignore[index]
        q = (
            select(RunDataset, Dataset)
            .join(Dataset, Dataset.id == RunDataset.dataset_id)  # type: ignore[arg-type]
            .where(RunDataset.run_id == rid, RunDataset.direction == "in")
        )
        for edge, ds in session.execute(q).all():
            version = edge.version
            producer, digest = _producer(session, ds, version, run)
            key = (ds.id, version)
            up = c.datasets.get(key)  # type: ignore[arg-type]
            if up is None:
                up = UpstreamDataset(ds, version, digest, producer)
                c.datasets[key] = up  # type: ignore[index]
            up.consumed_by.add(rid)
            if rid == run_id:
                c.training_inputs.append(up)
            if producer and producer not in c.runs:
                queue.append(producer)
    return c


def _producer(session: Session, ds: Dataset, version: str | None, consumer: Run) -> tuple[str | None, str | None]:
    """The run that wrote this version of the dataset (or, unversioned, the last run that wrote it
    before the consumer), and the version's content digest."""
    digest = None
    if version is not None:
        v = session.execute(
            select(DatasetVersion).where(DatasetVersion.dataset_id == ds.id, DatasetVersion.version == version)
        ).scalar_one_or_none()
        if v is not None:
            digest = v.digest
            if v.produced_by_run:
                return v.produced_by_run, digest
    q = (
        select(Run.run_id)
        .join(RunDataset, RunDataset.run_id == Run.run_id)  # type: ignore[arg-type]
        .where(RunDataset.dataset_id == ds.id, RunDataset.direction == "out", Run.first_seq < consumer.first_seq)
        .order_by(Run.first_seq.desc())
        .limit(1)
    )  # type: ignore[attr-defined]
    if version is not None:
        q = q.where(RunDataset.version == version)
    return session.execute(q).scalar_one_or_none(), digest


@dataclass
class ModelRecords:
    mv: ModelVersion
    validations: list[Validation]
    approvals: list[Approval]
    decisions: list[PromotionDecision]
    deployments: list[Deployment]


def model_records(session: Session, mv: ModelVersion) -> ModelRecords:
    def rows(model: Any) -> list[Any]:
        return list(session.execute(select(model).where(model.model_version_id == mv.id).order_by(model.seq)).scalars())

    return ModelRecords(mv, rows(Validation), rows(Approval), rows(PromotionDecision), rows(Deployment))


def model_json(mv: ModelVersion) -> dict[str, Any]:
    return {
        "name": mv.name,
        "version": mv.version,
        "artifact": {"uri": mv.artifact_uri, "digest": mv.artifact_digest},
        "training_run_id": mv.training_run_id,
        "model_card": mv.model_card,
        "registered_by": mv.registered_by,
        "registered_at": mv.registered_at,
        "seq": mv.seq,
    }


def validation_json(v: Validation) -> dict[str, Any]:
    return {
        "type": v.type,
        "metrics": v.metrics,
        "thresholds": v.thresholds,
        "passed": v.passed,
        "report": {"uri": v.report_uri, "digest": v.report_digest},
        "datasets": v.datasets,
        "run_id": v.run_id,
        "recorded_by": v.recorded_by,
        "recorded_at": v.recorded_at,
        "seq": v.seq,
    }


def approval_json(a: Approval) -> dict[str, Any]:
    return {"stage": a.stage, "approver": a.approver, "comment": a.comment, "recorded_at": a.recorded_at, "seq": a.seq}


def decision_json(d: PromotionDecision) -> dict[str, Any]:
    return {
        "stage": d.stage,
        "requested_by": d.requested_by,
        "allowed": d.allowed,
        "violations": d.violations,
        "warnings": d.warnings,
        "policy_digest": d.policy_digest,
        "input_digest": d.input_digest,
        "recorded_at": d.recorded_at,
        "seq": d.seq,
    }


def deployment_json(d: Deployment) -> dict[str, Any]:
    return {
        "stage": d.stage,
        "environment": d.environment,
        "endpoint": d.endpoint,
        "decision_seq": d.decision_seq,
        "refused": d.refused,
        "reason": d.reason,
        "deployed_by": d.deployed_by,
        "recorded_at": d.recorded_at,
        "seq": d.seq,
    }


def run_summary(run: Run, job: Job | None) -> dict[str, Any]:
    return {
        "id": run.run_id,
        "state": marquez_run_state(run.state),
        "job": f"{job.namespace}:{job.name}" if job else None,
        "code_version": run.code_version,
        "started_at": run.started_at,
        "completed_at": run.completed_at,
        "principals": run.principals,
        "entries": run.seqs,
    }


def verdicts(
    recs: ModelRecords,
    closure: Closure,
    log_size: int,
    cited: list[int],
    erasures: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    mv = recs.mv
    run = closure.runs.get(mv.training_run_id)
    gone = [str(e["seq"]) for e in erasures or [] if e["subject"] == f"run:{mv.training_run_id}"]
    unrecorded = f"training run {mv.training_run_id} is not recorded" + (
        f" (its entries {', '.join(gone)} were erased)" if gone else ""
    )
    # reproducible (DESIGN.md 4.2)
    repro: list[str] = []
    if run is None:
        repro.append(unrecorded)
    else:
        if run.state != "COMPLETE":
            repro.append(f"training run {run.run_id} is {run.state}, not COMPLETE")
        if not run.code_version:
            job = closure.jobs.get(run.job_id)
            where = f"job {job.namespace}:{job.name}" if job else f"run {run.run_id}"
            repro.append(f"{where} records no code version (sourceCodeLocation.version or sourceCode)")
        for up in closure.training_inputs:
            if up.version is None:
                repro.append(f"input dataset {up.key()} of training run {run.run_id} is not pinned to a version")
        if not closure.training_inputs:
            repro.append(f"training run {run.run_id} records no input datasets")
    if not DIGEST_RE.match(mv.artifact_digest or ""):
        repro.append(f"artifact {mv.artifact_uri} has no sha256 digest")
    # traceable
    trace: list[str] = []
    if run is None:
        trace.append(unrecorded)
    for up in sorted(closure.datasets.values(), key=lambda u: (u.key(), u.version or "")):
        if up.dataset.source:
            continue
        if up.produced_by_run is None:
            trace.append(f"dataset {up.key()} has no recorded producing run and is not a declared source")
        elif up.produced_by_run not in closure.runs:
            trace.append(f"dataset {up.key()} names producing run {up.produced_by_run}, which is not recorded")
    # verifiable
    verif: list[str] = []
    completed = parse_time(run.completed_at) if run else None
    perf = [v for v in recs.validations if v.type == "performance"]
    good = [
        v
        for v in perf
        if v.passed
        and v.report_digest
        and completed is not None
        and (parse_time(v.recorded_at) or completed) > completed
    ]
    if not perf:
        verif.append(f"no performance validation of {mv.name}@{mv.version} is recorded")
    elif not good:
        reasons = []
        if not any(v.passed for v in perf):
            reasons.append("none passed")
        if not any(v.report_digest for v in perf):
            reasons.append("none has a report digest")
        if completed is None:
            reasons.append("the training run has no completion time")
        elif not any((parse_time(v.recorded_at) or completed) > completed for v in perf):
            reasons.append("none was recorded after the training run completed")
        verif.append(
            f"no passing performance validation of {mv.name}@{mv.version} with a report digest "
            f"recorded after training ({'; '.join(reasons) or 'no single validation meets all'})"
        )
    absent = [s for s in cited if s >= log_size]
    if absent:
        verif.append(f"entries {absent[:10]} are not in the log")
    return {
        "reproducible": {"ok": not repro, "missing": repro},
        "traceable": {"ok": not trace, "missing": trace},
        "verifiable": {"ok": not verif, "missing": verif},
    }


@dataclass
class ClosureTags:
    """Classification of the upstream closure: effective tags per dataset and the entries behind them."""

    rows: dict[int, Any]
    classifications: list[Any]

    def of(self, dataset_id: int | None) -> tuple[list[str], bool, list[str]]:
        row = self.rows.get(dataset_id) if dataset_id is not None else None
        if row is None:
            return [], True, []
        return list(row.effective), not row.unapproved, list(row.unapproved)


def closure_tags(session: Session, closure: Closure) -> ClosureTags:
    from ledger.security.classification import classifications_of, effective_tags

    ids = {u.dataset.id for u in closure.datasets.values() if u.dataset.id is not None}
    return ClosureTags(effective_tags(session, ids), classifications_of(session, ids))


def classifications_json(closure: Closure, tags: ClosureTags) -> list[dict[str, Any]]:
    out = []
    seen: set[int] = set()
    for u in sorted(closure.datasets.values(), key=lambda u: (u.key(), u.version or "")):
        d_id = u.dataset.id
        if d_id is None or d_id in seen:
            continue
        seen.add(d_id)
        effective, classified, unapproved = tags.of(d_id)
        entries = [c.seq for c in tags.classifications if c.dataset_id == d_id]
        if effective or entries:
            out.append(
                {
                    "namespace": u.dataset.namespace,
                    "name": u.dataset.name,
                    "tags": effective,
                    "classified": classified,
                    "unapproved": unapproved,
                    "entries": entries,
                }
            )
    return out


def cited_entries(recs: ModelRecords, closure: Closure, tags: ClosureTags | None = None) -> list[int]:
    seqs = {recs.mv.seq}
    seqs.update(v.seq for v in recs.validations)
    seqs.update(a.seq for a in recs.approvals)
    seqs.update(d.seq for d in recs.decisions)
    seqs.update(d.seq for d in recs.deployments)
    for run in closure.runs.values():
        seqs.update(run.seqs)
    for up in closure.datasets.values():
        if up.dataset.source and up.dataset.source_seq is not None:
            seqs.add(up.dataset.source_seq)
    if tags is not None:
        seqs.update(c.seq for c in tags.classifications)
    return sorted(seqs)


def erasures_about(session: Session, mv: ModelVersion, closure: Closure) -> list[dict[str, Any]]:
    """Erased entries about this model version, its training run or the runs, jobs and datasets of its
    closure, each with the `payload.erasure` entry that removed it: what an erasure took out of the
    report stays visible as a fact (header, time, reason), only its content is gone."""
    subjects = {f"model:{mv.name}@{mv.version}", f"run:{mv.training_run_id}"}
    subjects.update(f"run:{rid}" for rid in closure.runs)
    subjects.update(f"job:{j.namespace}:{j.name}" for j in closure.jobs.values())
    subjects.update(f"dataset:{u.dataset.namespace}:{u.dataset.name}" for u in closure.datasets.values())
    erased = []
    for part in chunks(sorted(subjects)):
        erased += session.execute(
            select(LogEntry.seq, LogEntry.kind, LogEntry.subject)  # type: ignore[call-overload]
            .join(EntryPayload, EntryPayload.seq == LogEntry.seq, isouter=True)
            .where(LogEntry.subject.in_(part), EntryPayload.seq.is_(None))
        ).all()
    if not erased:
        return []
    erased.sort(key=lambda r: r.seq)
    records = []
    for part in chunks([f"entry:{r.seq}" for r in erased]):
        records += session.execute(
            select(LogEntry.seq, LogEntry.subject, LogEntry.principal, LogEntry.integrated_time, EntryPayload.payload)  # type: ignore[call-overload]
            .join(EntryPayload, EntryPayload.seq == LogEntry.seq, isouter=True)
            .where(LogEntry.kind == "payload.erasure", LogEntry.subject.in_(part))
        ).all()
    by_target = {r.subject: r for r in records}
    out = []
    for r in erased:
        rec = by_target.get(f"entry:{r.seq}")
        reason = json.loads(rec.payload).get("reason") if rec is not None and rec.payload is not None else None
        out.append(
            {
                "seq": r.seq,
                "kind": r.kind,
                "subject": r.subject,
                "erasure_seq": rec.seq if rec is not None else None,
                "erased_by": rec.principal if rec is not None else None,
                "erased_at": rec.integrated_time if rec is not None else None,
                "reason": reason,
            }
        )
    return out


def provenance_report(
    session: Session, mv: ModelVersion, log_size: int, classifications: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    recs = model_records(session, mv)
    closure = upstream_closure(session, mv.training_run_id)
    tags = closure_tags(session, closure)
    erasures = erasures_about(session, mv, closure)
    cited = sorted(
        {*cited_entries(recs, closure, tags), *(e["seq"] for e in erasures)}
        | {e["erasure_seq"] for e in erasures if e["erasure_seq"] is not None}
    )
    model_tags = sorted({t for u in closure.datasets.values() for t in tags.of(u.dataset.id)[0]})
    return {
        "model": {**model_json(mv), "tags": model_tags},
        "verdicts": verdicts(recs, closure, log_size, cited, erasures),
        "upstream": {
            "runs": [
                run_summary(r, closure.jobs.get(r.job_id))
                for r in sorted(closure.runs.values(), key=lambda r: r.first_seq)
            ],
            "jobs": [
                {"namespace": j.namespace, "name": j.name, "code_version": j.code_version}
                for j in sorted(closure.jobs.values(), key=lambda j: (j.namespace, j.name))
            ],
            "datasets": [
                u.to_json() for u in sorted(closure.datasets.values(), key=lambda u: (u.key(), u.version or ""))
            ],
        },
        "validations": [validation_json(v) for v in recs.validations],
        "approvals": [approval_json(a) for a in recs.approvals],
        "decisions": [decision_json(d) for d in recs.decisions],
        "deployments": [deployment_json(d) for d in recs.deployments],
        "classifications": classifications_json(closure, tags) + list(classifications or []),
        "erasures": erasures,
        "entries": cited,
    }


def _violations_in(session: Session, closure: Closure) -> list[dict[str, Any]]:
    """Open intake violations on the closure's datasets or by its runs."""
    from ledger.security.access import open_violations

    keys = {u.key() for u in closure.datasets.values()}
    return [
        {"id": v["seq"], "dataset": v["dataset"], "run_id": v["run_id"], "reason": "; ".join(v["reasons"])}
        for v in open_violations(session)
        if v["dataset"] in keys or v["run_id"] in closure.runs
    ]


def input_subjects(doc: dict[str, Any]) -> set[str]:
    """The log subjects a promotion input was built from: the training run and every upstream
    dataset with the runs that produced and consumed it (an entry about any of them may change it)."""
    out: set[str] = set()
    run = doc.get("training_run")
    if run:
        out.add(f"run:{run['id']}")
        job = run.get("job") or {}
        if job.get("namespace") is not None:
            out.add(f"job:{job['namespace']}:{job['name']}")
    for d in doc["upstream"]["datasets"]:
        out.add(f"dataset:{d['namespace']}:{d['name']}")
        out.update(f"run:{r}" for r in [d.get("produced_by_run"), *d.get("consumed_by_runs", [])] if r)
    return out


def promotion_input(
    session: Session,
    mv: ModelVersion,
    *,
    stage: str,
    requester: dict[str, Any],
    now: str,
    config: dict[str, Any],
    roles_of: Any,
) -> dict[str, Any]:
    """The policy input document (policies/promotion.rego documents its shape)."""
    recs = model_records(session, mv)
    closure = upstream_closure(session, mv.training_run_id)
    run = closure.runs.get(mv.training_run_id)
    job = closure.jobs.get(run.job_id) if run else None
    tags = closure_tags(session, closure)

    def tagged(u: UpstreamDataset) -> dict[str, Any]:
        effective, classified, _ = tags.of(u.dataset.id)
        return {**u.to_json(), "tags": effective, "classified": classified}

    return {
        "stage": stage,
        "now": now,
        "config": config,
        "requester": requester,
        "model": model_json(mv),
        "training_run": None
        if run is None
        else {
            "id": run.run_id,
            "state": run.state,
            # The raw eventTime may be a form Rego does not parse (a space for T, no seconds).
            "completed_at": policy_time(run.completed_at),
            "job": {
                "namespace": job.namespace if job else None,
                "name": job.name if job else None,
                "code_version": run.code_version,
            },
            "principals": run.principals,
        },
        "upstream": {
            "datasets": [tagged(u) for u in sorted(closure.datasets.values(), key=lambda u: (u.key(), u.version or ""))]
        },
        "validations": [
            {
                "type": v.type,
                "passed": v.passed,
                "recorded_at": v.recorded_at,
                "report_digest": v.report_digest,
                "seq": v.seq,
            }
            for v in recs.validations
        ],
        "approvals": [
            {
                "stage": a.stage,
                "approver": a.approver,
                "approver_roles": sorted(roles_of(a.approver)),
                "recorded_at": a.recorded_at,
                "seq": a.seq,
            }
            for a in recs.approvals
        ],
        "open_violations": _violations_in(session, closure),
    }
