"""Lineage projections: namespaces, datasets, versions, jobs, runs, edges.

Revision ID: 0002_lineage
Revises: 0001_log
Create Date: 2026-11-21 23:41:46.837066
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_lineage"
down_revision = "0001_log"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "lineage_dataset_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("digest", sa.Text(), nullable=True),
        sa.Column("schema_fields", sa.JSON(), nullable=True),
        sa.Column("produced_by_run", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dataset_id", "version", name="uq_lineage_dataset_versions"),
    )
    with op.batch_alter_table("lineage_dataset_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lineage_dataset_versions_dataset_id"), ["dataset_id"], unique=False)

    op.create_table(
        "lineage_datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace", sa.String(length=1024), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("facets", sa.JSON(), nullable=False),
        sa.Column("current_version", sa.Text(), nullable=True),
        sa.Column("source", sa.Boolean(), nullable=False),
        sa.Column("source_seq", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.Column("updated_at", sa.String(length=40), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("namespace", "name", name="uq_lineage_datasets_ns_name"),
    )
    op.create_table(
        "lineage_job_datasets",
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("dataset_id", sa.BigInteger(), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "dataset_id", "direction"),
    )
    with op.batch_alter_table("lineage_job_datasets", schema=None) as batch_op:
        batch_op.create_index("ix_lineage_job_datasets_ds", ["dataset_id", "direction"], unique=False)

    op.create_table(
        "lineage_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace", sa.String(length=1024), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("facets", sa.JSON(), nullable=False),
        sa.Column("code_version", sa.Text(), nullable=True),
        sa.Column("latest_run_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.Column("updated_at", sa.String(length=40), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("namespace", "name", name="uq_lineage_jobs_ns_name"),
    )
    op.create_table(
        "lineage_namespaces",
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.Column("updated_at", sa.String(length=40), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "lineage_run_datasets",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("dataset_id", sa.BigInteger(), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("version", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "dataset_id", "direction"),
    )
    with op.batch_alter_table("lineage_run_datasets", schema=None) as batch_op:
        batch_op.create_index("ix_lineage_run_datasets_ds", ["dataset_id", "direction"], unique=False)

    op.create_table(
        "lineage_runs",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("facets", sa.JSON(), nullable=False),
        sa.Column("code_version", sa.Text(), nullable=True),
        sa.Column("started_at", sa.String(length=40), nullable=True),
        sa.Column("ended_at", sa.String(length=40), nullable=True),
        sa.Column("completed_at", sa.String(length=40), nullable=True),
        sa.Column("updated_at", sa.String(length=40), nullable=False),
        sa.Column("principals", sa.JSON(), nullable=False),
        sa.Column("seqs", sa.JSON(), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("run_id"),
    )
    with op.batch_alter_table("lineage_runs", schema=None) as batch_op:
        batch_op.create_index("ix_lineage_runs_job", ["job_id", "first_seq"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("lineage_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_lineage_runs_job")

    op.drop_table("lineage_runs")
    with op.batch_alter_table("lineage_run_datasets", schema=None) as batch_op:
        batch_op.drop_index("ix_lineage_run_datasets_ds")

    op.drop_table("lineage_run_datasets")
    op.drop_table("lineage_namespaces")
    op.drop_table("lineage_jobs")
    with op.batch_alter_table("lineage_job_datasets", schema=None) as batch_op:
        batch_op.drop_index("ix_lineage_job_datasets_ds")

    op.drop_table("lineage_job_datasets")
    op.drop_table("lineage_datasets")
    with op.batch_alter_table("lineage_dataset_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lineage_dataset_versions_dataset_id"))

    op.drop_table("lineage_dataset_versions")
