"""SQLModel tables. The schema itself is created by the Alembic migrations in `migrations/`.

Invariants (enforced by database triggers, see the initial migration):
- `log_entries`, `tree_nodes` and `checkpoints` are append-only: UPDATE, DELETE and TRUNCATE fail.
- `entry_payloads` rows cannot be updated, and can be deleted only once a `payload.erasure` entry
  for that seq is in the log.
- only the sequencer inserts into the log tables.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Index, LargeBinary, String, Text
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UtcTimestamp(TypeDecorator[datetime]):
    """An aware UTC instant: `TIMESTAMP WITH TIME ZONE` on PostgreSQL, UTC wall time on SQLite.

    Spelled out rather than left to SQLModel's default for `datetime`, which changed between
    versions (naive `DateTime` before, `DateTime(timezone=True)` now): the migration and the models
    must name the same type, or `alembic check` fails. A naive column would be wrong anyway, since
    PostgreSQL converts an aware value to the session's time zone before dropping the offset.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(f"timestamp {value.isoformat()} has no time zone; pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        # SQLite keeps no offset: what it stored is the UTC wall time.
        return value.replace(tzinfo=UTC) if value.utcoffset() is None else value.astimezone(UTC)


class LogEntry(SQLModel, table=True):
    """One leaf of the log: the header fields; its JCS encoding is the Merkle leaf."""

    __tablename__ = "log_entries"
    __table_args__ = (
        Index("ix_log_entries_kind_seq", "kind", "seq"),
        Index("ix_log_entries_subject_seq", "subject", "seq"),
    )

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    kind: str = Field(sa_column=Column(String(64), nullable=False))
    subject: str = Field(sa_column=Column(Text, nullable=False))
    integrated_time: str = Field(sa_column=Column(String(32), nullable=False))
    principal: str = Field(sa_column=Column(Text, nullable=False))
    payload_digest: str = Field(sa_column=Column(String(71), nullable=False))
    leaf_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    # For idempotent intake: the digest of the canonical request (an OpenLineage event).
    dedup_key: str | None = Field(default=None, sa_column=Column(String(71), unique=True, nullable=True))


class SubjectOwner(SQLModel, table=True):
    """The owner the first entry about a subject named (a run's job), written under the append lock
    with that entry: an entry that names another owner for the subject is refused. A log-side index,
    not a projection: it never lags the log."""

    __tablename__ = "subject_owners"

    subject: str = Field(sa_column=Column(Text, primary_key=True))
    owner: str = Field(sa_column=Column(Text, nullable=False))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))


class EntryPayload(SQLModel, table=True):
    """The payload bound to an entry by its salted digest; erasable, never editable."""

    __tablename__ = "entry_payloads"

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    salt: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    # RFC 8785 canonical bytes of the payload, as text: hashing it again needs no re-encoding.
    payload: str = Field(sa_column=Column(Text, nullable=False))


class TreeNode(SQLModel, table=True):
    """The hash of one perfect subtree (`ledger.tlog.tree.NodeId` packed into `node_id`)."""

    __tablename__ = "tree_nodes"

    node_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))


class StoredCheckpoint(SQLModel, table=True):
    """A signed checkpoint the log has published (by the scheduler or on demand)."""

    __tablename__ = "checkpoints"

    size: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    key_id: str = Field(sa_column=Column(String(8), primary_key=True))
    note: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcTimestamp(), nullable=False))


class Cosignature(SQLModel, table=True):
    """A witness's cosignature/v1 line on the stored checkpoint of (size, root); append-only."""

    __tablename__ = "cosignatures"

    size: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    witness_key_id: str = Field(sa_column=Column(String(8), primary_key=True))
    root: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    witness: str = Field(sa_column=Column(Text, nullable=False))
    line: str = Field(sa_column=Column(Text, nullable=False))
    timestamp: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcTimestamp(), nullable=False))


class SigningKey(SQLModel, table=True):
    """Public half and validity of every key that has signed checkpoints (the private half stays on disk)."""

    __tablename__ = "signing_keys"

    key_id: str = Field(sa_column=Column(String(8), primary_key=True))
    name: str = Field(sa_column=Column(Text, nullable=False))
    verifier_key: str = Field(sa_column=Column(Text, nullable=False))
    valid_from: datetime = Field(sa_column=Column(UtcTimestamp(), nullable=False))
    valid_until: datetime | None = Field(default=None, sa_column=Column(UtcTimestamp(), nullable=True))
    first_size: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))


class Principal(SQLModel, table=True):
    """An authenticated caller: its roles, namespaces and clearances; the token only as a hash."""

    __tablename__ = "principals"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(200), unique=True, nullable=False))
    roles: str = Field(sa_column=Column(Text, nullable=False))  # comma-separated
    namespaces: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    clearances: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    token_hash: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcTimestamp(), nullable=False))
    disabled: bool = Field(default=False, nullable=False)


class AuthFailure(SQLModel, table=True):
    """Failed token attempts of one client address in its current window, shared by every worker and
    host (the guess limiter). A row whose window has passed is dropped when a new window starts."""

    __tablename__ = "auth_failures"

    client: str = Field(sa_column=Column(String(200), primary_key=True))
    window_start_ms: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    failures: int = Field(sa_column=Column(BigInteger, nullable=False))


class JobRun(SQLModel, table=True):
    """Last run of each scheduled job, so a job runs once per deployment, not once per process."""

    __tablename__ = "job_runs"

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    last_run_at: datetime = Field(sa_column=Column(UtcTimestamp(), nullable=False))
    holder: str = Field(sa_column=Column(Text, nullable=False))


class ProjectionWatermark(SQLModel, table=True):
    """How far a projection has followed the log: entries [0, applied_size) are in its tables."""

    __tablename__ = "projection_watermarks"

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    applied_size: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UtcTimestamp(), nullable=False))
