"""What an append group reads and writes under the append lock, in as few round trips as possible.

An append leader holds the lock (every host's appends wait on it) for as long as its round trips
to the database take, and each round trip costs it the GIL again while the worker's other threads
run: their number, more than their size, sets how long the lock is held. So on PostgreSQL each
half of a group is one psycopg pipeline, one round trip:
- `read`: the lock, then one statement for the log's size with the frontier of its tree, the signing
  keys, the last stored checkpoint, and the owners and dedup keys the group's entries name;
- `write`: one statement for the entry, payload, tree-node and owner rows (an `INSERT ... SELECT
  FROM unnest(...)` per table, as CTEs, whatever the group's size), the erasures, and COMMIT.
SQLite runs in process, where a statement costs no round trip: `GenericGroupIO` reads and writes
one statement at a time through SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col

from ledger.store.db import SEQUENCER_LOCK_KEY, Database, bulk_insert, chunks
from ledger.store.models import EntryPayload, LogEntry, SubjectOwner
from ledger.store.sequencer import AppendedEntry, PendingRows, Sequencer, header_from_columns
from ledger.store.signing import last_checkpoint, signing_key_rows
from ledger.store.tree import fetch_nodes, tree_size
from ledger.tlog.tree import INDEX_BITS, NodeId, range_nodes


@dataclass
class GroupHead:
    """The log as an append group finds it under the lock."""

    size: int
    frontier: dict[NodeId, bytes]  # the nodes of range_nodes(0, size)
    keys: list[tuple[str, Any]]  # signing keys that are this host's or current: (key_id, valid_until)
    last_checkpoint: tuple[int, str] | None  # (size, note) of the largest stored checkpoint
    owners: dict[str, str]  # subject -> owner, for the subjects the group names
    existing: dict[str, AppendedEntry]  # dedup key -> the entry holding it, for the group's keys


def group_io(db: Database) -> GroupIO:
    return GenericGroupIO() if db.is_sqlite else PostgresGroupIO()


class GroupIO:
    """Reads a group's head and writes its rows; `write` commits when `commits` is True."""

    commits = False

    def read(
        self, session: Session, sequencer: Sequencer, *, key_id: str, subjects: Sequence[str], keys: Sequence[str]
    ) -> GroupHead:
        raise NotImplementedError

    def write(self, session: Session, rows: PendingRows, owners: list[dict[str, Any]], erasing: list[int]) -> None:
        raise NotImplementedError


class GenericGroupIO(GroupIO):
    """One statement at a time, through SQLAlchemy (SQLite: no round trips; its lock is the
    IMMEDIATE transaction `Database.write` began)."""

    def read(
        self, session: Session, sequencer: Sequencer, *, key_id: str, subjects: Sequence[str], keys: Sequence[str]
    ) -> GroupHead:
        size = tree_size(session)
        ids = range_nodes(0, size)
        cached = sequencer.cached_frontier(size)
        frontier = dict(zip(ids, cached, strict=True)) if cached is not None else fetch_nodes(session, ids)
        owners: dict[str, str] = {}
        for part in chunks(subjects):
            q = select(col(SubjectOwner.subject), col(SubjectOwner.owner)).where(col(SubjectOwner.subject).in_(part))
            owners.update({str(s): str(o) for s, o in session.execute(q).all()})
        existing: dict[str, AppendedEntry] = {}
        for part in chunks(keys):
            existing.update(Sequencer.existing(session, part))
        return GroupHead(
            size=size,
            frontier=frontier,
            keys=signing_key_rows(session, key_id),
            last_checkpoint=last_checkpoint(session),
            owners=owners,
            existing=existing,
        )

    def write(self, session: Session, rows: PendingRows, owners: list[dict[str, Any]], erasing: list[int]) -> None:
        Sequencer.flush(session, rows)
        if owners:
            bulk_insert(session, SubjectOwner.__table__, owners)  # type: ignore[attr-defined]
        if erasing:  # allowed by the database once the erasure entries are in the table
            session.execute(delete(EntryPayload).where(col(EntryPayload.seq).in_(erasing)))
            # The erased event's dedup key would answer a repeat of it with this seq: dropped.
            session.execute(
                update(LogEntry)
                .where(col(LogEntry.seq).in_(erasing), col(LogEntry.dedup_key).is_not(None))
                .values(dedup_key=None)
            )


# The log's size and the nodes of its frontier, range_nodes(0, size): for each bit L set in the
# size, the perfect subtree at level L whose index is (size >> (L + 1)) << 1 (ledger.tlog.tree).
# Everything a group reads under the lock, in one statement (the lock is the statement before it:
# taken inside, it would come after the statement's snapshot). The log's size, and the nodes of its
# frontier, range_nodes(0, size): for each bit L set in the size, the perfect subtree at level L
# whose index is (size >> (L + 1)) << 1 (ledger.tlog.tree); the signing keys that are this host's
# or current; the last stored checkpoint; the owners and the entries of the group's dedup keys.
_HEAD = f"""
WITH head AS (SELECT coalesce(max(seq) + 1, 0) AS size FROM log_entries)
SELECT head.size,
    (SELECT coalesce(json_agg(json_build_array(t.node_id, encode(t.hash, 'hex'))), '[]')
        FROM generate_series(0, 62) AS b
        JOIN tree_nodes t ON t.node_id = (b::bigint << {INDEX_BITS}) | ((head.size >> (b + 1)) << 1)
        WHERE (head.size >> b) & 1 = 1),
    (SELECT coalesce(json_agg(json_build_array(key_id, valid_until)), '[]') FROM signing_keys
        WHERE key_id = %b OR valid_until IS NULL),
    (SELECT json_build_array(size, note) FROM checkpoints ORDER BY size DESC LIMIT 1),
    (SELECT coalesce(json_agg(json_build_array(subject, owner)), '[]') FROM subject_owners
        WHERE subject = ANY(%b)),
    (SELECT coalesce(json_agg(json_build_array(
            seq, kind, subject, integrated_time, principal, payload_digest, encode(leaf_hash, 'hex'), dedup_key)), '[]')
        FROM log_entries WHERE dedup_key = ANY(%b))
FROM head
"""  # noqa: S608 (our constant, not input)
# Every row of a group in one statement (one INSERT ... SELECT FROM unnest per table, as CTEs).
_INSERT = """
WITH entries AS (
    INSERT INTO log_entries (seq, kind, subject, integrated_time, principal, payload_digest, leaf_hash, dedup_key)
    SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bytea[],
        %b::text[])),
payloads AS (
    INSERT INTO entry_payloads (seq, salt, payload) SELECT * FROM unnest(%b::bigint[], %b::bytea[], %b::text[])),
nodes AS (INSERT INTO tree_nodes (node_id, hash) SELECT * FROM unnest(%b::bigint[], %b::bytea[])),
owners AS (
    INSERT INTO subject_owners (subject, owner, seq) SELECT * FROM unnest(%b::text[], %b::text[], %b::bigint[]))
SELECT 1
"""
_ERASE_PAYLOADS = "DELETE FROM entry_payloads WHERE seq = ANY(%b)"
_ERASE_DEDUP = "UPDATE log_entries SET dedup_key = NULL WHERE seq = ANY(%b) AND dedup_key IS NOT NULL"

_ENTRY_COLUMNS = ("seq", "kind", "subject", "integrated_time", "principal", "payload_digest", "leaf_hash", "dedup_key")


class PostgresGroupIO(GroupIO):
    """Each half in one round trip (psycopg pipeline mode); the transaction is the session's, begun
    by `Database.write(lock=False)`: the lock is the first statement of `read`."""

    commits = True

    def read(
        self, session: Session, sequencer: Sequencer, *, key_id: str, subjects: Sequence[str], keys: Sequence[str]
    ) -> GroupHead:
        with _driver(session) as raw, raw.pipeline():
            raw.execute("SELECT pg_advisory_xact_lock(%s)", (SEQUENCER_LOCK_KEY,))
            size, frontier, key_rows, last, owner_rows, existing_rows = raw.execute(
                _HEAD, (key_id, list(subjects), list(keys))
            ).fetchone()
        by_id = {int(node_id): bytes.fromhex(h) for node_id, h in frontier}
        ids = range_nodes(0, size)
        missing = [n.as_int() for n in ids if n.as_int() not in by_id]
        if missing:
            raise LookupError(f"tree nodes missing from the store: {missing[:5]}")
        return GroupHead(
            size=int(size),
            frontier={n: by_id[n.as_int()] for n in ids},
            keys=[(str(k), until) for k, until in key_rows],
            last_checkpoint=None if last is None else (int(last[0]), str(last[1])),
            owners={str(s): str(o) for s, o in owner_rows},
            existing={r[7]: _appended([*r[:6], bytes.fromhex(r[6]), r[7]]) for r in existing_rows},
        )

    def write(self, session: Session, rows: PendingRows, owners: list[dict[str, Any]], erasing: list[int]) -> None:
        with _driver(session) as raw, raw.pipeline():
            if rows.entries or owners:
                raw.execute(
                    _INSERT,
                    [
                        *([e[c] for e in rows.entries] for c in _ENTRY_COLUMNS),
                        *([p[c] for p in rows.payloads] for c in ("seq", "salt", "payload")),
                        [n.as_int() for n, _ in rows.nodes],
                        [h for _, h in rows.nodes],
                        *([o[c] for o in owners] for c in ("subject", "owner", "seq")),
                    ],
                )
            if erasing:  # allowed by the database once the erasure entries are in the table
                raw.execute(_ERASE_PAYLOADS, (erasing,))
                # The erased event's dedup key would answer a repeat of it with this seq: dropped.
                raw.execute(_ERASE_DEDUP, (erasing,))
            raw.commit()
        rows.entries, rows.payloads, rows.nodes = [], [], []


def _appended(r: Sequence[Any]) -> AppendedEntry:
    return AppendedEntry(header=header_from_columns(r), leaf_hash=bytes(r[6]), payload=None)


@contextmanager
def _driver(session: Session) -> Iterator[Any]:
    """The session's psycopg connection, its errors raised as SQLAlchemy's would be (`DBAPIError`,
    the connection invalidated when it was lost), so faults are told apart as for any statement
    (ledger.store.faults)."""
    import psycopg  # here: a SQLite deployment never loads the driver

    conn = session.connection()
    raw = conn.connection.driver_connection
    assert raw is not None
    try:
        yield raw
    except psycopg.Error as e:
        lost = conn.dialect.is_disconnect(e, conn.connection.dbapi_connection, None)  # type: ignore[arg-type]
        if lost:
            conn.invalidate(e)
        raise DBAPIError.instance(None, None, e, psycopg.Error, connection_invalidated=lost) from e
