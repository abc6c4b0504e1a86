"""Access decisions (DESIGN.md 4, 6): `policies/access.rego` decides, the log records.

Every decision is an `access.decision` entry. The violation screen, a follower of the log, records
one too, denied, when a pipeline run read a classified dataset beyond the posting principal's
clearance: the event is recorded (nothing is lost), the violation is listed under
GET /api/v1/violations, and the promotion policy denies every model downstream until a security
principal resolves it, which records an allowed `access.decision` naming the violation it resolves.
Violations are therefore a projection of the log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select, tuple_
from sqlmodel import Session, col

from ledger.errors import ConflictError, NotFoundError
from ledger.lineage.events import LINEAGE_KINDS
from ledger.lineage.models import Dataset
from ledger.policy.engine import PolicyEngine
from ledger.security.classification import SENSITIVE, any_tags, effective_tags, find_dataset
from ledger.security.principals import AuthenticatedPrincipal, PrincipalStore
from ledger.store.db import chunks
from ledger.store.ledger import Ledger, Receipt
from ledger.store.models import LogEntry
from ledger.store.projector import Follower, Projector
from ledger.store.sequencer import PendingEntry
from ledger.tlog.entry import EntryHeader, sha256_digest


def _decision_entry(dataset: tuple[str, str], payload: dict[str, Any], principal: str) -> PendingEntry:
    return PendingEntry(
        kind="access.decision", subject=f"dataset:{dataset[0]}:{dataset[1]}", principal=principal, payload=payload
    )


class AccessService:
    def __init__(
        self,
        ledger: Ledger,
        policy: PolicyEngine,
        principals: PrincipalStore,
        allowed_purposes: dict[str, list[str]],
        projector: Projector,
    ) -> None:
        self.projector = projector
        self.ledger = ledger
        self.policy = policy
        self.principals = principals
        self.allowed_purposes = allowed_purposes

    def decide(
        self,
        *,
        principal: str,
        namespace: str,
        name: str,
        action: str,
        purpose: str,
        requested_by: AuthenticatedPrincipal,
    ) -> tuple[dict[str, Any], Receipt]:
        """Evaluates the access policy for `principal` and records the decision."""
        subject = self.principals.get(principal)
        if subject is None:
            raise NotFoundError(f"principal {principal!r} does not exist", field="principal")
        self.projector.sync_to_head()  # decide on the tags of everything recorded before this request
        with self.ledger.db.read() as s:
            d = find_dataset(s, namespace, name)
            row = effective_tags(s, [d.id]).get(d.id)  # type: ignore[list-item]
            tags = list(row.effective) if row else []
        doc = {
            "principal": {
                "name": subject.name,
                "roles": sorted(subject.roles),
                "clearances": sorted(subject.clearances),
            },
            "dataset": {"namespace": namespace, "name": name, "tags": tags},
            "action": action,
            "purpose": purpose,
            "config": {"allowed_purposes": self.allowed_purposes},
        }
        result = self.policy.evaluate("ledger.access", doc)
        payload = {
            "principal": subject.name,
            "action": action,
            "purpose": purpose,
            "allowed": result.allowed,
            "reasons": list(result.violations),
            "policy_digest": result.policy_digest,
            "input_digest": result.input_digest,
            "requested_by": requested_by.name,
            "tags": tags,
        }
        _, receipts = self.ledger.append([_decision_entry((namespace, name), payload, requested_by.name)])
        return {**payload, "seq": receipts[0].seq}, receipts[0]

    def resolve(self, violation_seq: int, *, reason: str, by: AuthenticatedPrincipal) -> tuple[dict[str, Any], Receipt]:
        """A security principal resolves an intake violation (recorded as an allowed access decision)."""
        self.projector.sync_to_head()  # the screen may still be recording the violation
        with self.ledger.db.read() as s:
            row = s.get(LogEntry, violation_seq)
            open_ = {v["seq"] for v in open_violations(s)}
        if row is None or row.kind != "access.decision":
            raise NotFoundError(f"no violation recorded at seq {violation_seq}", field="seq")
        if violation_seq not in open_:
            raise ConflictError(
                f"violation {violation_seq} is not open (resolved already, or not a violation)", field="seq"
            )
        original = self.ledger.entry(violation_seq).payload or {}
        ns, _, name = row.subject.removeprefix("dataset:").rpartition(":")
        payload = {
            "principal": original.get("principal"),
            "action": "read",
            "purpose": original.get("purpose"),
            "allowed": True,
            "reasons": [reason],
            "policy_digest": original.get("policy_digest"),
            "resolves": violation_seq,
            "requested_by": by.name,
            "origin": "resolution",
        }
        _, receipts = self.ledger.append([_decision_entry((ns, name), payload, by.name)])
        return {**payload, "seq": receipts[0].seq}, receipts[0]


SYSTEM_PRINCIPAL = "ledger"  # the principal of entries the service appends on its own


def violation_screen(ledger: Ledger, *, policy_digest: str, clearances_of: Callable[[str], frozenset[str]]) -> Follower:
    """The intake's violation screen, a follower of the log: for each run event that read a dataset
    classified beyond its poster's clearance, it appends a denied `access.decision` as the system
    principal, citing the event's seq. It decides on the tags the projections hold once they have
    applied the event, and costs one query per batch while no dataset carries a tag."""

    def decide(session: Session, entries: list[tuple[EntryHeader, Any]]) -> list[PendingEntry]:
        runs = [(h, p) for h, p in entries if h.kind == "openlineage.run_event" and p and p.get("inputs")]
        if not runs or not any_tags(session):
            return []
        by_poster: dict[str, list[tuple[EntryHeader, Any]]] = {}
        for h, p in runs:
            by_poster.setdefault(h.principal, []).append((h, p))
        return [
            v
            for poster, events in sorted(by_poster.items())
            for v in intake_violations(session, events, poster, clearances_of(poster), policy_digest)
        ]

    def act(found: list[PendingEntry]) -> None:
        ledger.append(found)  # dedup keys: a screen run twice over the same events appends nothing twice

    return Follower(
        "violations",
        frozenset({"openlineage.run_event"}),
        decide,
        act,
        acts_on=_reads_data,
        changes=_may_change_tags,
    )


def _reads_data(h: EntryHeader, p: Any) -> bool:
    return h.kind == "openlineage.run_event" and bool(p and p.get("inputs"))


def _may_change_tags(h: EntryHeader, p: Any) -> bool:
    """A classification, or a lineage event declaring tags (`tags` dataset facet)."""
    if h.kind == "dataset.classification":
        return True
    if h.kind not in LINEAGE_KINDS or not p:
        return False
    datasets = [p.get("dataset"), *(p.get("inputs") or []), *(p.get("outputs") or [])]
    return any(isinstance(d, dict) and "tags" in (d.get("facets") or {}) for d in datasets)


def intake_violations(
    session: Session,
    events: list[tuple[EntryHeader, dict[str, Any]]],
    poster: str,
    clearances: frozenset[str],
    policy_digest: str,
) -> list[PendingEntry]:
    """Denied access decisions for run events reading data beyond the poster's clearance."""
    reads: dict[tuple[str, str], list[tuple[EntryHeader, dict[str, Any]]]] = {}
    for h, ev in events:
        for d in ev.get("inputs") or []:
            reads.setdefault((d["namespace"], d["name"]), []).append((h, ev))
    if not reads:
        return []
    rows = [
        r
        for batch in chunks(sorted(reads))
        for r in session.execute(
            select(Dataset.id, Dataset.namespace, Dataset.name).where(
                tuple_(col(Dataset.namespace), col(Dataset.name)).in_(batch)
            )
        ).all()
    ]
    tags = effective_tags(session, [r[0] for r in rows])
    out: list[PendingEntry] = []
    for ds_id, ns, name in sorted(rows, key=lambda r: (r[1], r[2])):
        row = tags.get(ds_id)
        missing = sorted((set(row.effective) & SENSITIVE) - clearances) if row else []
        if not missing:
            continue
        for h, ev in reads[(ns, name)]:
            run_id = str(ev["run"]["runId"]).lower()
            job = f"{ev['job']['namespace']}:{ev['job']['name']}"
            payload = {
                "principal": poster,
                "action": "read",
                "purpose": f"pipeline run {run_id} of job {job}",
                "allowed": False,
                "origin": "intake",
                "event_seq": h.seq,
                "run_id": run_id,
                "job": job,
                "reasons": [f"principal {poster} lacks clearance for {t} on {ns}:{name}" for t in missing],
                "policy_digest": policy_digest,
                "requested_by": poster,
            }
            subject = f"dataset:{ns}:{name}"
            out.append(
                PendingEntry(
                    kind="access.decision",
                    subject=subject,
                    principal=SYSTEM_PRINCIPAL,
                    payload=payload,
                    dedup_key=sha256_digest(f"violation:{h.seq}:{subject}".encode()),
                )
            )
    return out


def open_violations(session: Session) -> list[dict[str, Any]]:
    """Intake violations without a resolution, from the log (there are few; read them directly).

    A violation closes only through a recorded resolution: one whose payload is gone (erased, or
    deleted behind the service's back) stays open, known by its header alone (a denied decision
    the system recorded about the dataset), until a security principal resolves it."""
    import json

    from ledger.store.models import EntryPayload

    q = (
        select(LogEntry.seq, LogEntry.subject, LogEntry.principal, LogEntry.integrated_time, EntryPayload.payload)
        .join(EntryPayload, col(EntryPayload.seq) == col(LogEntry.seq), isouter=True)
        .where(col(LogEntry.kind) == "access.decision")
        .order_by(col(LogEntry.seq))
    )
    found: dict[int, dict[str, Any]] = {}
    resolved: set[int] = set()
    for seq, subject, principal, when, raw in session.execute(q):
        if raw is None:
            if principal == SYSTEM_PRINCIPAL:  # only the violation screen records decisions as the system
                found[seq] = {
                    "seq": seq,
                    "dataset": subject.removeprefix("dataset:"),
                    "run_id": None,
                    "job": None,
                    "principal": None,
                    "reasons": ["the violation's payload is gone (erased); it stays open until resolved"],
                    "recorded_at": when,
                }
            continue
        p = json.loads(raw)
        if p.get("origin") == "intake" and not p.get("allowed"):
            found[seq] = {
                "seq": seq,
                "dataset": subject.removeprefix("dataset:"),
                "run_id": p.get("run_id"),
                "job": p.get("job"),
                "principal": p.get("principal"),
                "reasons": p.get("reasons", []),
                "recorded_at": when,
            }
        if p.get("origin") == "resolution" and isinstance(p.get("resolves"), int):
            resolved.add(p["resolves"])
    return [v for s, v in found.items() if s not in resolved]
