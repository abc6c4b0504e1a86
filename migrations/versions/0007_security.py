"""Security (issue 10): run ownership as a log-side index; failed token attempts shared by hosts.

`subject_owners` holds the owner (a run's job) the first entry about a subject named; it is written
under the append lock with that entry. Upgrading fills it from the log: the first run event of each
run whose payload is still there.

`auth_failures` counts failed token attempts per client address and window, for every worker and
host at once (the guess limiter).

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
    op.drop_table("auth_failures")
    op.drop_table("subject_owners")
