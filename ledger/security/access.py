"""Access decisions (DESIGN.md 4, 6): `policies/access.rego` decides, the log records.

Every decision is an `access.decision` entry. Intake records one too, denied, when a pipeline run
reads a classified dataset beyond the posting principal's clearance: the event is still recorded
(nothing is lost), the violation is listed under GET /api/v1/violations, and the promotion policy
denies every model downstream until a security principal resolves it, which records an allowed
`access.decision` naming the violation it resolves. Violations are therefore a projection of the log.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from ledger.errors import ConflictError, NotFoundError
from ledger.lineage.models import Dataset
from ledger.policy.engine import PolicyEngine
from ledger.security.classification import SENSITIVE, effective_tags, find_dataset
from ledger.security.principals import AuthenticatedPrincipal, PrincipalStore
from ledger.store.ledger import Ledger, Receipt
from ledger.store.models import LogEntry
from ledger.store.sequencer import PendingEntry
from ledger.tlog.entry import sha256_digest


def _decision_entry(dataset: tuple[str, str], payload: dict[str, Any], principal: str) -> PendingEntry:
    return PendingEntry(
        kind="access.decision", subject=f"dataset:{dataset[0]}:{dataset[1]}", principal=principal, payload=payload
    )


class AccessService:
    def __init__(
        self, ledger: Ledger, policy: PolicyEngine, principals: PrincipalStore, allowed_purposes: dict[str, list[str]]
    ) -> None:
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


def intake_screen(policy: PolicyEngine) -> Any:
    """The intake's screen: denied access decisions for reads beyond the poster's clearance. Runs in
    the append's transaction; costs one query per event set, and none while no dataset carries a tag."""
    from ledger.security.classification import any_tags

    tagged: dict[str, Any] = {}

    def screen(session: Session, validated: list[Any], principal: AuthenticatedPrincipal) -> list[PendingEntry]:
        runs = [v for v in validated if v.kind == "openlineage.run_event" and v.event.get("inputs")]
        if not runs:
            return []
        if not tagged.get("seen"):
            # No negative cache: another process may have classified data a moment ago.
            if not any_tags(session):
                return []
            tagged["seen"] = True  # once data is tagged, skip the check: every run is screened
        found = intake_violations(session, [v.event for v in runs], principal, policy.bundle.digest)
        keyed = {id(v.event): v.dedup_key for v in runs}
        out = []
        for entry, ev in found:
            key = sha256_digest(f"violation:{keyed[id(ev)]}:{entry.subject}".encode())
            out.append(
                PendingEntry(
                    kind=entry.kind,
                    subject=entry.subject,
                    principal=entry.principal,
                    payload=entry.payload,
                    dedup_key=key,
                )
            )
        return out

    return screen


def intake_violations(
    session: Session, events: list[dict[str, Any]], principal: AuthenticatedPrincipal, policy_digest: str
) -> list[tuple[PendingEntry, dict[str, Any]]]:
    """Denied access decisions for run events reading data beyond the principal's clearance."""
    reads: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for ev in events:
        if "run" not in ev:
            continue
        for d in ev.get("inputs") or []:
            reads.setdefault((d["namespace"], d["name"]), []).append(ev)
    if not reads:
        return []
    from sqlalchemy import tuple_

    rows = session.execute(
        select(Dataset.id, Dataset.namespace, Dataset.name).where(
            tuple_(col(Dataset.namespace), col(Dataset.name)).in_(list(reads))
        )
    ).all()
    tags = effective_tags(session, [r[0] for r in rows])
    out: list[tuple[PendingEntry, dict[str, Any]]] = []
    for ds_id, ns, name in rows:
        row = tags.get(ds_id)
        missing = sorted((set(row.effective) & SENSITIVE) - principal.clearances) if row else []
        if not missing:
            continue
        for ev in reads[(ns, name)]:
            run_id = str(ev["run"]["runId"]).lower()
            job = f"{ev['job']['namespace']}:{ev['job']['name']}"
            payload = {
                "principal": principal.name,
                "action": "read",
                "purpose": f"pipeline run {run_id} of job {job}",
                "allowed": False,
                "origin": "intake",
                "run_id": run_id,
                "job": job,
                "reasons": [f"principal {principal.name} lacks clearance for {t} on {ns}:{name}" for t in missing],
                "policy_digest": policy_digest,
                "requested_by": principal.name,
            }
            out.append((_decision_entry((ns, name), payload, principal.name), ev))
    return out


def open_violations(session: Session) -> list[dict[str, Any]]:
    """Intake violations without a resolution, from the log (there are few; read them directly)."""
    import json

    from ledger.store.models import EntryPayload

    q = (
        select(LogEntry.seq, LogEntry.subject, LogEntry.integrated_time, EntryPayload.payload)
        .join(EntryPayload, col(EntryPayload.seq) == col(LogEntry.seq), isouter=True)
        .where(col(LogEntry.kind) == "access.decision")
        .order_by(col(LogEntry.seq))
    )
    found: dict[int, dict[str, Any]] = {}
    resolved: set[int] = set()
    for seq, subject, when, raw in session.execute(q):
        p = json.loads(raw) if raw else {}
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
