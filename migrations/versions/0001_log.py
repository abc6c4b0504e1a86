"""The log: entries, payloads, tree nodes, checkpoints, keys, principals, job runs, append-only triggers.

Revision ID: 0001_log
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_log"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY = ("log_entries", "tree_nodes", "checkpoints")
# SQLite only: the rows an insert would replace (every unique key of each guarded table).
NO_REPLACE = {
    "log_entries": "seq = NEW.seq OR dedup_key = NEW.dedup_key",
    "tree_nodes": "node_id = NEW.node_id",
    "checkpoints": "size = NEW.size AND key_id = NEW.key_id",
    "entry_payloads": "seq = NEW.seq",
}


def upgrade() -> None:
    op.create_table(
        "log_entries",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("integrated_time", sa.String(32), nullable=False),
        sa.Column("principal", sa.Text(), nullable=False),
        sa.Column("payload_digest", sa.String(71), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("dedup_key", sa.String(71), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("dedup_key"),
    )
    op.create_index("ix_log_entries_kind_seq", "log_entries", ["kind", "seq"])
    op.create_index("ix_log_entries_subject_seq", "log_entries", ["subject", "seq"])
    op.create_table(
        "entry_payloads",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("salt", sa.LargeBinary(32), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_table(
        "tree_nodes",
        sa.Column("node_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("node_id"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("key_id", sa.String(8), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("size", "key_id"),
    )
    op.create_table(
        "signing_keys",
        sa.Column("key_id", sa.String(8), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("verifier_key", sa.Text(), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_table(
        "principals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("roles", sa.Text(), nullable=False),
        sa.Column("namespaces", sa.Text(), nullable=False),
        sa.Column("clearances", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "job_runs",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgres_triggers()
    else:
        _sqlite_triggers()


def _sqlite_triggers() -> None:
    # SQLite has no TRUNCATE: `DELETE FROM t` without WHERE is its truncate, and a DELETE trigger
    # disables that optimisation, so the DELETE trigger covers it.
    for table in APPEND_ONLY:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {action} refused'); END"
            )
    # `INSERT OR REPLACE` (and `REPLACE INTO`) resolves a key conflict by deleting the old row, and
    # SQLite fires no DELETE trigger for that unless recursive_triggers is on in the writing
    # connection: refuse any insert that would collide with a stored row, whatever the connection.
    for table, same_key in NO_REPLACE.items():  # constants of this module, not input
        op.execute(
            f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "  # noqa: S608
            f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {same_key}) "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: a stored row cannot be replaced'); END"
        )
    op.execute(
        "CREATE TRIGGER entry_payloads_no_update BEFORE UPDATE ON entry_payloads "
        "BEGIN SELECT RAISE(ABORT, 'entry_payloads cannot be updated; erase instead'); END"
    )
    op.execute(
        "CREATE TRIGGER entry_payloads_erasure_only BEFORE DELETE ON entry_payloads "
        "WHEN NOT EXISTS (SELECT 1 FROM log_entries WHERE kind = 'payload.erasure' "
        "AND subject = 'entry:' || OLD.seq) "
        "BEGIN SELECT RAISE(ABORT, 'a payload can be deleted only after its payload.erasure entry'); END"
    )


def _postgres_triggers() -> None:
    op.execute(
        """
        CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'insufficient_privilege';
        END $$;
        """
    )
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()"
        )
    op.execute(
        """
        CREATE FUNCTION ledger_payload_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM log_entries
               WHERE kind = 'payload.erasure' AND subject = 'entry:' || OLD.seq) THEN
            RETURN OLD;
          END IF;
          RAISE EXCEPTION 'entry_payloads: % refused (payloads are erased only after a payload.erasure entry)', TG_OP
            USING ERRCODE = 'insufficient_privilege';
        END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER entry_payloads_guard BEFORE UPDATE OR DELETE ON entry_payloads "
        "FOR EACH ROW EXECUTE FUNCTION ledger_payload_guard()"
    )
    op.execute(
        "CREATE TRIGGER entry_payloads_no_truncate BEFORE TRUNCATE ON entry_payloads "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()"
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table in (*APPEND_ONLY, "entry_payloads"):
            op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
        op.execute("DROP FUNCTION IF EXISTS ledger_append_only() CASCADE")
        op.execute("DROP FUNCTION IF EXISTS ledger_payload_guard() CASCADE")
    else:
        for table in (*APPEND_ONLY, "entry_payloads"):
            op.drop_table(table)
    for table in ("signing_keys", "principals", "job_runs"):
        op.drop_table(table)
