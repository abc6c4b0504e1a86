"""Security (issue 10): run ownership as a log-side index; failed token attempts shared by hosts.

`subject_owners` holds the owner (a run's job) the first entry about a subject named; it is written
under the append lock with that entry. Upgrading fills it from the log: the first run event of each
run whose payload is still there.

`auth_failures` counts failed token attempts per client address and window, for every worker and
host at once (the guess limiter).

`log_entries` stays append-only, with one exception: an entry's `dedup_key` may be set to NULL once a
`payload.erasure` entry for it is in the log (nothing else of the row may change), so an erased
event's key no longer answers a repeat of it.

Revision ID: 0007_security
Revises: 0006_projection_watermarks
Create Date: 2026-12-01 01:30:00.000000
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0007_security"
down_revision = "0006_projection_watermarks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "subject_owners",
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("subject"),
    )
    _fill_owners(table)
    op.create_table(
        "auth_failures",
        sa.Column("client", sa.String(length=200), nullable=False),
        sa.Column("window_start_ms", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("client"),
    )
    with op.batch_alter_table("auth_failures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auth_failures_window_start_ms"), ["window_start_ms"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER log_entries_append_only ON log_entries")
        op.execute(_PG_GUARD)
        op.execute(
            "CREATE TRIGGER log_entries_append_only BEFORE UPDATE OR DELETE ON log_entries "
            "FOR EACH ROW EXECUTE FUNCTION ledger_log_entries_guard()"
        )
    else:
        op.execute("DROP TRIGGER log_entries_no_update")
        op.execute(
            "CREATE TRIGGER log_entries_no_update BEFORE UPDATE ON log_entries "
            f"WHEN NOT ({_DROPS_KEY_ONLY}) "
            "BEGIN SELECT RAISE(ABORT, 'log_entries is append-only: UPDATE refused'); END"
        )


# An UPDATE that only drops the dedup key of an erased entry.
_DROPS_KEY_ONLY = (
    "NEW.dedup_key IS NULL AND OLD.dedup_key IS NOT NULL AND NEW.seq = OLD.seq AND NEW.kind = OLD.kind "
    "AND NEW.subject = OLD.subject AND NEW.integrated_time = OLD.integrated_time "
    "AND NEW.principal = OLD.principal AND NEW.payload_digest = OLD.payload_digest "
    "AND NEW.leaf_hash = OLD.leaf_hash "
    "AND EXISTS (SELECT 1 FROM log_entries e WHERE e.kind = 'payload.erasure' AND e.subject = 'entry:' || OLD.seq)"
)
_PG_GUARD = f"""
CREATE FUNCTION ledger_log_entries_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND {_DROPS_KEY_ONLY} THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
"""


def _fill_owners(table: sa.Table) -> None:
    """The job of each run's first run event still readable, in seq order (the intake's rule)."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT e.seq, e.subject, p.payload FROM log_entries e JOIN entry_payloads p ON p.seq = e.seq "
            "WHERE e.kind = 'openlineage.run_event' ORDER BY e.seq"
        )
    )
    owners: dict[str, dict[str, object]] = {}
    for seq, subject, payload in rows:
        if subject in owners:
            continue
        job = json.loads(payload).get("job") or {}
        owners[subject] = {"subject": subject, "owner": job_owner(job["namespace"], job["name"]), "seq": seq}
    if owners:
        op.bulk_insert(table, list(owners.values()))


def job_owner(namespace: str, name: str) -> str:
    """As `ledger.lineage.intake.job_owner` (a migration keeps its own copy of what it writes)."""
    return json.dumps([namespace, name], ensure_ascii=False, separators=(",", ":"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER log_entries_append_only ON log_entries")
        op.execute("DROP FUNCTION ledger_log_entries_guard()")
        op.execute(
            "CREATE TRIGGER log_entries_append_only BEFORE UPDATE OR DELETE ON log_entries "
            "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
        )
    else:
        op.execute("DROP TRIGGER log_entries_no_update")
        op.execute(
            "CREATE TRIGGER log_entries_no_update BEFORE UPDATE ON log_entries "
            "BEGIN SELECT RAISE(ABORT, 'log_entries is append-only: UPDATE refused'); END"
        )
    op.drop_table("auth_failures")
    op.drop_table("subject_owners")
