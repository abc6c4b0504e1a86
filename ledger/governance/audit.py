"""The provenance report derived from entries alone: what a bundle's report must say, computed the
same way by the service that builds a bundle and by the verifier that checks one.

`derive_report` replays the given entries, in seq order, through the same projection functions the
service applies to the whole log (lineage, then classification, then governance: the order of
`ledger.projections.PROJECTIONS`, which a test holds this module to), into a scratch in-memory
database, then builds the report with `provenance_report`. So a bundle's report is a pure function
of its entries: the server writes that function's output, the verifier recomputes it, and any
difference is a forged or incomplete report. An entry without a payload (erased, or withheld from
the reader) feeds no projection; its header still counts (erasures are listed from the headers).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel

from ledger.governance import models as governance_models
from ledger.governance.projection import GOVERNANCE_KINDS, find_version, project_governance
from ledger.governance.provenance import provenance_report
from ledger.lineage import models as lineage_models
from ledger.lineage.events import LINEAGE_KINDS
from ledger.lineage.projection import project_lineage
from ledger.security import models as security_models
from ledger.security.classification import project_tags
from ledger.store.models import EntryPayload, LogEntry
from ledger.tlog.entry import EntryHeader, canonical_json

Entries = list[tuple[EntryHeader, Any]]

# (kinds, apply) in the order ledger.projections.PROJECTIONS applies them (tests/test_audit.py checks).
REPLAY: list[tuple[frozenset[str], Callable[[Session, Entries], None]]] = [
    (frozenset(LINEAGE_KINDS), project_lineage),
    (frozenset({*LINEAGE_KINDS, "dataset.classification"}), project_tags),
    (frozenset(GOVERNANCE_KINDS), project_governance),
]
_TABLES = [
    LogEntry,
    EntryPayload,
    lineage_models.Namespace,
    lineage_models.Dataset,
    lineage_models.DatasetVersion,
    lineage_models.Job,
    lineage_models.Run,
    lineage_models.RunDataset,
    lineage_models.JobDataset,
    lineage_models.RunEvent,
    security_models.DatasetTags,
    security_models.Classification,
    governance_models.ModelVersion,
    governance_models.Validation,
    governance_models.Approval,
    governance_models.PromotionDecision,
    governance_models.Deployment,
]


def derive_report(
    entries: Iterable[tuple[EntryHeader, bytes, bytes | None, Any]],
    name: str,
    version: str,
    *,
    log_size: int,
) -> dict[str, Any] | None:
    """The provenance report of model `name@version` that these entries (header, leaf hash, salt,
    payload or None) prove, against a log of `log_size` entries; None when they hold no
    registration of that version."""
    rows = sorted(entries, key=lambda e: e[0].seq)
    # A scratch database of this call alone (not the service's schema, which migrations own).
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    try:
        SQLModel.metadata.create_all(engine, tables=[t.__table__ for t in _TABLES])  # type: ignore[attr-defined]
        with Session(engine) as session:
            for h, leaf, salt, payload in rows:
                session.add(
                    LogEntry(
                        seq=h.seq,
                        kind=h.kind,
                        subject=h.subject,
                        integrated_time=h.integrated_time,
                        principal=h.principal,
                        payload_digest=h.payload_digest,
                        leaf_hash=leaf,
                    )
                )
                if payload is not None:
                    session.add(EntryPayload(seq=h.seq, salt=salt or b"", payload=canonical_json(payload).decode()))
            session.flush()
            replay: Entries = [(h, payload) for h, _, _, payload in rows]
            for kinds, apply in REPLAY:
                apply(session, [(h, p) for h, p in replay if h.kind in kinds])
            session.flush()
            mv = find_version(session, name, version)
            if mv is None:
                return None
            # One JSON round trip: the report as served (and as a bundle file holds it).
            report: dict[str, Any] = json.loads(json.dumps(provenance_report(session, mv, log_size)))
            return report
    finally:
        engine.dispose()


def differences(claimed: Any, proven: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Each place (a path like `validations[0].passed`) where `claimed` differs from `proven`, in
    document order, with both values there (`<absent>` for a missing member or item)."""
    if isinstance(claimed, dict) and isinstance(proven, dict):
        for k in [*proven, *(k for k in claimed if k not in proven)]:
            sub = f"{path}.{k}" if path else str(k)
            if k not in claimed:
                yield sub, ABSENT, proven[k]
            elif k not in proven:
                yield sub, claimed[k], ABSENT
            else:
                yield from differences(claimed[k], proven[k], sub)
    elif isinstance(claimed, list) and isinstance(proven, list):
        for i in range(max(len(claimed), len(proven))):
            if i >= len(claimed):
                yield f"{path}[{i}]", ABSENT, proven[i]
            elif i >= len(proven):
                yield f"{path}[{i}]", claimed[i], ABSENT
            else:
                yield from differences(claimed[i], proven[i], f"{path}[{i}]")
    elif type(claimed) is not type(proven) or claimed != proven:
        yield path, claimed, proven


ABSENT = "<absent>"
