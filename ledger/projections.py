"""Every projection of the log, and `rebuild_all`, which drops and replays them.

The log is the source of truth (DESIGN.md 2): each projection is a pure function of the entries in
seq order, so dropping the tables and replaying every entry reproduces them exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, text
from sqlmodel import Session, SQLModel

from ledger.governance import models as governance_models
from ledger.governance.projection import project_governance
from ledger.lineage import models as lineage_models
from ledger.lineage.projection import project_lineage
from ledger.security import models as security_models
from ledger.security.classification import project_classifications
from ledger.store.db import Database
from ledger.store.models import EntryPayload, LogEntry
from ledger.store.sequencer import header_from_row
from ledger.tlog.entry import EntryHeader

Replayer = Callable[[Session, list[tuple[EntryHeader, Any]]], None]

# Each projection: its tables (dropped on rebuild) and the function that applies entries to them.
PROJECTIONS: list[tuple[str, list[type[SQLModel]], Replayer]] = [
    (
        "lineage",
        [
            lineage_models.Namespace,
            lineage_models.Dataset,
            lineage_models.DatasetVersion,
            lineage_models.Job,
            lineage_models.Run,
            lineage_models.RunDataset,
            lineage_models.JobDataset,
        ],
        project_lineage,
    ),
    (
        "governance",
        [
            governance_models.ModelVersion,
            governance_models.Validation,
            governance_models.Approval,
            governance_models.PromotionDecision,
            governance_models.Deployment,
        ],
        project_governance,
    ),
    (
        "classification",
        [security_models.DatasetTags, security_models.Classification],
        project_classifications,
    ),
]

PROJECTION_TABLES: list[str] = [t.__tablename__ for _, tables, _ in PROJECTIONS for t in tables]  # type: ignore[attr-defined]

CHUNK = 2000


def project_all(session: Session, entries: list[tuple[EntryHeader, Any]]) -> None:
    for _, _, apply in PROJECTIONS:
        apply(session, entries)


def replay_projections(session: Session, *, is_sqlite: bool) -> int:
    """Empties every projection and replays the log into it, inside the caller's write transaction
    (under the sequencer lock: no append interleaves). Erased entries replay as nothing, so what an
    erasure removed from the log is gone from every read too. Returns the number of entries read."""
    replayed = 0
    if is_sqlite:
        for name in PROJECTION_TABLES:  # without AUTOINCREMENT, SQLite restarts ids at 1 on an empty table
            session.execute(text(f"DELETE FROM {name}"))  # noqa: S608  (our own table names)
    else:  # restart the id sequences too, so that a rebuild reproduces every row exactly
        session.execute(text(f"TRUNCATE {', '.join(PROJECTION_TABLES)} RESTART IDENTITY"))
    after = -1
    while True:
        q = (
            select(LogEntry, EntryPayload.payload)
            .join(EntryPayload, EntryPayload.seq == LogEntry.seq, isouter=True)  # type: ignore[arg-type]
            .where(LogEntry.seq > after)  # type: ignore[operator]
            .order_by(LogEntry.seq)  # type: ignore[arg-type]
            .limit(CHUNK)
        )
        rows = session.execute(q).all()
        if not rows:
            break
        entries = [(header_from_row(e), json.loads(p) if p is not None else None) for e, p in rows]
        project_all(session, entries)
        replayed += len(entries)
        after = rows[-1][0].seq
    return replayed


def rebuild_all(db: Database) -> dict[str, int]:
    """`ledger rebuild`: drops every projection and replays the whole log, under the sequencer lock."""
    with db.write() as session:
        replayed = replay_projections(session, is_sqlite=db.is_sqlite)
    if not db.is_sqlite:  # fresh statistics, or the planner may scan the rebuilt tables
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"ANALYZE {', '.join(PROJECTION_TABLES)}"))
    return {"entries replayed": replayed}
