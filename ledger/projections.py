"""Every projection of the log, in the order they apply, and what an erasure or a rebuild replays.

The log is the source of truth (DESIGN.md 2, 8): each projection is a pure function of the entries in
seq order, applied by `ledger.store.projector.Projector` after the entries commit, so emptying the
tables and replaying the log reproduces them exactly.
"""

from __future__ import annotations

from sqlalchemy import select, text
from sqlmodel import Session, col

from ledger.governance import models as governance_models
from ledger.governance.projection import GOVERNANCE_KINDS, project_governance
from ledger.lineage import models as lineage_models
from ledger.lineage.events import LINEAGE_KINDS
from ledger.lineage.projection import project_lineage
from ledger.security import models as security_models
from ledger.security.classification import project_tags
from ledger.store.db import Database
from ledger.store.ledger import Ledger, Receipt
from ledger.store.models import LogEntry
from ledger.store.projector import Projection, Projector
from ledger.tlog.entry import EntryHeader

LINEAGE = Projection(
    name="lineage",
    kinds=LINEAGE_KINDS,
    tables=(
        lineage_models.Namespace,
        lineage_models.Dataset,
        lineage_models.DatasetVersion,
        lineage_models.Job,
        lineage_models.Run,
        lineage_models.RunDataset,
        lineage_models.JobDataset,
        lineage_models.RunEvent,
    ),
    apply=project_lineage,
)
# Reads the lineage tables (edges, datasets): it applies after the lineage projection of a batch.
CLASSIFICATION = Projection(
    name="classification",
    kinds=frozenset({*LINEAGE_KINDS, "dataset.classification"}),
    tables=(security_models.DatasetTags, security_models.Classification),
    apply=project_tags,
)
GOVERNANCE = Projection(
    name="governance",
    kinds=frozenset(GOVERNANCE_KINDS),
    tables=(
        governance_models.ModelVersion,
        governance_models.Validation,
        governance_models.Approval,
        governance_models.PromotionDecision,
        governance_models.Deployment,
    ),
    apply=project_governance,
)

PROJECTIONS: list[Projection] = [LINEAGE, CLASSIFICATION, GOVERNANCE]
PROJECTION_TABLES: list[str] = [t.__tablename__ for p in PROJECTIONS for t in p.tables]  # type: ignore[attr-defined]

# Projections replayed together: classification rows point at lineage dataset ids, and propagation
# walks lineage edges, so an erasure that touches either replays both.
GROUPS: list[frozenset[str]] = [frozenset({"lineage", "classification"}), frozenset({"governance"})]


def affected_by(kind: str) -> frozenset[str]:
    """The projections an entry of `kind` feeds (what erasing its payload must replay)."""
    fed = {p.name for p in PROJECTIONS if kind in p.kinds}
    return frozenset().union(*(g for g in GROUPS if g & fed))


def replayed_by_erasure(session: Session, header: EntryHeader) -> frozenset[str]:
    """The projections a `payload.erasure` entry replays: those its erased entry's kind feeds."""
    seq = int(header.subject.removeprefix("entry:"))
    kind = session.execute(select(LogEntry.kind).where(col(LogEntry.seq) == seq)).scalar_one()
    return affected_by(kind)


def erase(ledger: Ledger, projector: Projector, seq: int, *, reason: str, principal: str) -> Receipt:
    """Erases an entry's payload and dedup key: the erasure entry and the rows' changes, under the
    append lock for milliseconds. The projector then replays what the payload fed
    (`replayed_by_erasure`), under its own lock alone, and scrubs the database files
    (`scrub_after_erasure`): appends go on, and a read that must see the erasure waits for it,
    bounded (503 with Retry-After past the bound), like any read of what it has not applied yet."""
    receipt = ledger.erase(seq, reason=reason, principal=principal)
    projector.notify()
    return receipt


def scrub_after_erasure(db: Database, replayed: list[Projection], *, rewrite: bool = False) -> None:
    """Once the projector has replayed an erasure (and committed): the erased payload's rows are
    vacuumed from the database files (`Database.scrub`): the payload row, its dedup key and the
    projections' rows it fed. With `rewrite` (LEDGER_ERASURE_REWRITE=1), PostgreSQL rewrites those
    tables too, so no byte stays in a page's free space; the rewrite holds each table's exclusive
    lock while it runs (appends and reads wait), so it is off by default."""
    tables = [t.__tablename__ for p in replayed for t in p.tables]  # type: ignore[attr-defined]
    if rewrite:
        db.scrub(["log_entries"], rewrite=["entry_payloads", *tables])
    else:
        db.scrub(["log_entries", "entry_payloads", *tables])


def rebuild_all(projector: Projector) -> dict[str, int]:
    """`ledger rebuild`: empties every projection and replays the whole log (appends go on)."""
    replayed = projector.rebuild()
    db = projector.db
    if not db.is_sqlite:  # fresh statistics, or the planner may scan the rebuilt tables
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"ANALYZE {', '.join(PROJECTION_TABLES)}"))
    return {"entries replayed": replayed}
