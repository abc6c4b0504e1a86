"""The sequencer: the one place that appends to the log.

Invariants:
- `seq` is gapless and unique: every append runs inside `Database.write()`, which serialises writers
  across processes (advisory lock on PostgreSQL, IMMEDIATE transaction on SQLite); the next seq is
  read under that lock.
- an entry, its payload and every tree node it completes are written in one transaction, together
  with whatever projection the caller updates in the same transaction: all or nothing.
- the same dedup key is stored once; a repeat returns the original entry.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from ledger.store.db import bulk_insert
from ledger.store.models import EntryPayload, LogEntry, TreeNode
from ledger.tlog.entry import SALT_SIZE, EntryHeader, canonical_json, format_time, payload_digest
from ledger.tlog.tree import CompactRange, NodeId, range_nodes


@dataclass(frozen=True, kw_only=True)
class PendingEntry:
    """What a service asks the sequencer to append; seq, time and digests are assigned here."""

    kind: str
    subject: str
    principal: str
    payload: Any
    dedup_key: str | None = None
    # RFC 8785 bytes of `payload` when the caller has them already (intake hashes them for dedup).
    canonical: bytes | None = None
    # Who the entry says owns its subject (a run's job): the first entry to name an owner for a
    # subject fixes it, and an entry naming another owner is refused under the lock (`SubjectOwner`).
    owner: str | None = None


@dataclass(frozen=True, kw_only=True)
class AppendedEntry:
    header: EntryHeader
    leaf_hash: bytes
    payload: Any
    duplicate: bool = False


@dataclass(frozen=True)
class AppendResult:
    entries: list[AppendedEntry]
    size: int
    root: bytes


@dataclass
class PendingRows:
    """Rows a group of appends will insert, and the dedup keys it has already resolved."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    payloads: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[tuple[NodeId, bytes]] = field(default_factory=list)
    seen: dict[str, AppendedEntry] = field(default_factory=dict)
    looked_up: set[str] = field(default_factory=set)


class TreeState:
    """The tree as this transaction has grown it: its compact range and every node hash it knows
    (the frontier it started from and the nodes it created), so proofs against it need few reads."""

    def __init__(self, compact: CompactRange, known: dict[NodeId, bytes]) -> None:
        self.compact = compact
        self.known = known

    def copy(self) -> TreeState:
        return TreeState(self.compact.copy(), dict(self.known))


_T = LogEntry.__table__.c  # type: ignore[attr-defined]
# The header's columns, in EntryHeader's order: reads that select them skip building ORM objects.
HEADER_COLUMNS = (_T.seq, _T.kind, _T.subject, _T.integrated_time, _T.principal, _T.payload_digest)


def header_from_columns(row: Sequence[Any]) -> EntryHeader:
    """The header of a row that starts with HEADER_COLUMNS."""
    return EntryHeader(
        seq=row[0], kind=row[1], subject=row[2], integrated_time=row[3], principal=row[4], payload_digest=row[5]
    )


def header_from_row(row: LogEntry) -> EntryHeader:
    return EntryHeader(
        seq=row.seq,
        kind=row.kind,
        subject=row.subject,
        integrated_time=row.integrated_time,
        principal=row.principal,
        payload_digest=row.payload_digest,
    )


class Sequencer:
    """Assigns seq and integrated_time, binds payloads by salted digest, and grows the tree.

    It caches the frontier (O(log n) hashes) of the last tree it committed; under the lock it checks
    the stored size first, so a cache made stale by another process is never used.
    """

    def __init__(self) -> None:
        self._cached: tuple[int, list[bytes]] | None = None
        self._lock = threading.Lock()

    def cached_frontier(self, size: int) -> list[bytes] | None:
        """The frontier hashes of the tree of `size` this process last committed, if it is that size."""
        with self._lock:
            cached = self._cached
        return cached[1] if cached is not None and cached[0] == size else None

    @staticmethod
    def start(size: int, frontier: dict[NodeId, bytes]) -> TreeState:
        """The tree as read under the lock: its size and the nodes of range_nodes(0, size)."""
        hashes = [frontier[n] for n in range_nodes(0, size)]
        return TreeState(CompactRange(size, hashes), dict(frontier))

    def committed(self, state: TreeState) -> None:
        """Remembers the frontier of a tree that is now committed."""
        ids = range_nodes(0, state.compact.size)
        with self._lock:
            self._cached = (state.compact.size, [state.known[n] for n in ids])

    def forget(self) -> None:
        with self._lock:
            self._cached = None

    def append(
        self,
        session: Session,
        state: TreeState,
        pending: Sequence[PendingEntry],
        *,
        now: datetime,
        rows: PendingRows | None = None,
    ) -> AppendResult:
        """Appends `pending` in order to the tree `state` (which it grows).

        With `rows`, the inserts are collected there for one `flush` of a whole group; without, they
        are written before returning. Duplicates are found in the database and among `rows`.
        """
        own = rows is None
        buf = PendingRows() if rows is None else rows
        keys = [p.dedup_key for p in pending if p.dedup_key and p.dedup_key not in buf.seen]
        buf.seen.update(self.existing(session, [k for k in keys if k not in buf.looked_up]))
        buf.looked_up.update(keys)
        compact = state.compact
        when = format_time(now)
        results: list[AppendedEntry] = []
        for p in pending:
            if p.dedup_key is not None:
                prior = buf.seen.get(p.dedup_key)
                if prior is not None:
                    results.append(
                        AppendedEntry(header=prior.header, leaf_hash=prior.leaf_hash, payload=p.payload, duplicate=True)
                    )
                    continue
            canonical = p.canonical if p.canonical is not None else canonical_json(p.payload)
            salt = secrets.token_bytes(SALT_SIZE)
            header = EntryHeader(
                seq=compact.size,
                kind=p.kind,
                subject=p.subject,
                integrated_time=when,
                principal=p.principal,
                payload_digest=payload_digest(salt, canonical),
            )
            created = compact.append_data(header.canonical())
            leaf = created[0][1]
            state.known.update(created)
            buf.nodes.extend(created)
            buf.entries.append(
                {
                    "seq": header.seq,
                    "kind": header.kind,
                    "subject": header.subject,
                    "integrated_time": header.integrated_time,
                    "principal": header.principal,
                    "payload_digest": header.payload_digest,
                    "leaf_hash": leaf,
                    "dedup_key": p.dedup_key,
                }
            )
            buf.payloads.append({"seq": header.seq, "salt": salt, "payload": canonical.decode()})
            appended = AppendedEntry(header=header, leaf_hash=leaf, payload=p.payload)
            if p.dedup_key is not None:
                buf.seen[p.dedup_key] = appended
            results.append(appended)
        if own:
            self.flush(session, buf)
        return AppendResult(results, compact.size, compact.root())

    @staticmethod
    def flush(session: Session, rows: PendingRows) -> None:
        """Writes collected rows: one multi-row insert per table."""
        if rows.entries:
            bulk_insert(session, LogEntry.__table__, rows.entries)  # type: ignore[attr-defined]
            bulk_insert(session, EntryPayload.__table__, rows.payloads)  # type: ignore[attr-defined]
            nodes = [{"node_id": n.as_int(), "hash": h} for n, h in rows.nodes]
            bulk_insert(session, TreeNode.__table__, nodes)  # type: ignore[attr-defined]
        rows.entries, rows.payloads, rows.nodes = [], [], []

    @staticmethod
    def existing(session: Session, keys: list[str]) -> dict[str, AppendedEntry]:
        """The entries holding any of these dedup keys (one query), by key."""
        if not keys:
            return {}
        rows = session.execute(select(*HEADER_COLUMNS, _T.leaf_hash, _T.dedup_key).where(_T.dedup_key.in_(keys)))
        return {r[7]: AppendedEntry(header=header_from_columns(r), leaf_hash=bytes(r[6]), payload=None) for r in rows}
