"""Marquez reads: run events by event time, job parents, dataset sources.

After upgrading a database that already holds entries, run `ledger rebuild` to fill these from the
log (the new table and columns are projections like every other).

Revision ID: 0005_marquez_reads
Revises: 0004_classification
Create Date: 2026-11-30 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_marquez_reads"
down_revision = "0004_classification"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "lineage_run_events",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_time", sa.String(length=40), nullable=False),
        sa.Column("namespace", sa.String(length=1024), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("lineage_run_events", schema=None) as batch_op:
        batch_op.create_index("ix_lineage_run_events_time", ["event_time", "seq"], unique=False)
        batch_op.create_index("ix_lineage_run_events_ns_time", ["namespace", "event_time", "seq"], unique=False)

    with op.batch_alter_table("lineage_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_job_name", sa.Text(), nullable=True))

    with op.batch_alter_table("lineage_datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_name", sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column("source_uri", sa.Text(), nullable=True))
        batch_op.create_index("ix_lineage_datasets_source", ["source_name"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("lineage_datasets", schema=None) as batch_op:
        batch_op.drop_index("ix_lineage_datasets_source")
        batch_op.drop_column("source_uri")
        batch_op.drop_column("source_name")

    with op.batch_alter_table("lineage_jobs", schema=None) as batch_op:
        batch_op.drop_column("parent_job_name")

    with op.batch_alter_table("lineage_run_events", schema=None) as batch_op:
        batch_op.drop_index("ix_lineage_run_events_ns_time")
        batch_op.drop_index("ix_lineage_run_events_time")

    op.drop_table("lineage_run_events")
