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
from ledger.governance.projection import GOVERNANCE_KINDS, project_governance
from ledger.lineage import models as lineage_models
from ledger.lineage.events import LINEAGE_KINDS
from ledger.lineage.projection import project_lineage
from ledger.security import models as security_models
from ledger.security.classification import project_classifications
from ledger.store.db import Database
from ledger.store.models import EntryPayload, LogEntry
from ledger.store.sequencer import header_from_row
from ledger.store.tree import tree_size
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
            lineage_models.RunEvent,
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

# Projections that must be replayed together, and the entry kinds they read. The lineage projector
# also writes the classification tables (declared tags, propagation along new edges), and
# classification rows point at lineage dataset ids, so those two go as one; governance stands alone.
GROUPS: list[tuple[frozenset[str], frozenset[str]]] = [
    (frozenset({"lineage", "classification"}), frozenset({*LINEAGE_KINDS, "dataset.classification"})),
    (frozenset({"governance"}), frozenset(GOVERNANCE_KINDS)),
]


def affected_by(kind: str) -> frozenset[str]:
    """The projections an entry of `kind` feeds (what erasing its payload must replay)."""
    return frozenset().union(*(names for names, kinds in GROUPS if kind in kinds))


CHUNK = 2000


def project_all(session: Session, entries: list[tuple[EntryHeader, Any]], only: frozenset[str] | None = None) -> None:
    for name, _, apply in PROJECTIONS:
        if only is None or name in only:
            apply(session, entries)


def replay_projections(session: Session, *, is_sqlite: bool, only: frozenset[str] | None = None) -> int:
    """Empties the projections (all, or those named in `only`) and replays the log into them, inside
    the caller's write transaction (under the sequencer lock: no append interleaves). Erased entries
    replay as nothing, so what an erasure removed from the log is gone from every read too. Returns
    the number of entries read."""
    if only is not None and not only:
        return 0
    tables = [
        t.__tablename__  # type: ignore[attr-defined]
        for name, group, _ in PROJECTIONS
        if only is None or name in only
        for t in group
    ]
    kinds = sorted({k for names, ks in GROUPS if only is None or names & only for k in ks})
    replayed = 0
    if is_sqlite:
        for name in tables:  # without AUTOINCREMENT, SQLite restarts ids at 1 on an empty table
            session.execute(text(f"DELETE FROM {name}"))  # noqa: S608  (our own table names)
    else:  # restart the id sequences too, so that a rebuild reproduces every row exactly
        session.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY"))
    session.expire_all()  # no ORM object read earlier in this transaction may outlive its row
    # Chunks are seq ranges (seq is gapless), the same whether every kind is replayed or a few: each
    # projection sees its entries in the same batches as in a full rebuild, so it ends the same.
    size = tree_size(session)
    analyze_at = CHUNK
    for start in range(0, size, CHUNK):
        if not is_sqlite and replayed >= analyze_at:
            # The emptied tables refill inside this transaction, and the planner, which believes them
            # empty, would scan them on every lookup (quadratic). ANALYZE sees this transaction's
            # rows; at doubling sizes it costs O(n) over the whole replay.
            session.execute(text(f"ANALYZE {', '.join(tables)}"))
            analyze_at *= 2
        q = (
            select(LogEntry, EntryPayload.payload)
            .join(EntryPayload, EntryPayload.seq == LogEntry.seq, isouter=True)  # type: ignore[arg-type]
            .where(LogEntry.seq >= start, LogEntry.seq < start + CHUNK)  # type: ignore[operator]
            .order_by(LogEntry.seq)  # type: ignore[arg-type]
        )
        if only is not None:
            q = q.where(LogEntry.kind.in_(kinds))  # type: ignore[attr-defined]
        rows = session.execute(q).all()
        if not rows:
            continue
        entries = [(header_from_row(e), json.loads(p) if p is not None else None) for e, p in rows]
        project_all(session, entries, only)
        replayed += len(entries)
    return replayed


def erasure_replay(*, is_sqlite: bool) -> Callable[[Session, str], None]:
    """What `Ledger.erase` runs once a payload of `kind` is gone: replays the projections it fed."""
    return lambda session, kind: replay_projections(session, is_sqlite=is_sqlite, only=affected_by(kind))


def rebuild_all(db: Database) -> dict[str, int]:
    """`ledger rebuild`: drops every projection and replays the whole log, under the sequencer lock."""
    with db.write() as session:
        replayed = replay_projections(session, is_sqlite=db.is_sqlite)
    if not db.is_sqlite:  # fresh statistics, or the planner may scan the rebuilt tables
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"ANALYZE {', '.join(PROJECTION_TABLES)}"))
    return {"entries replayed": replayed}
