"""Model registry projection: versions, validations, approvals, decisions, deployments.

Revision ID: 0003_governance
Revises: 0002_lineage
Create Date: 2026-11-21 23:43:42.982127
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_governance"
down_revision = "0002_lineage"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "gov_approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.BigInteger(), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("approver", sa.Text(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("gov_approvals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gov_approvals_model_version_id"), ["model_version_id"], unique=False)

    op.create_table(
        "gov_decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.BigInteger(), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("violations", sa.JSON(), nullable=False),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("policy_digest", sa.String(length=71), nullable=False),
        sa.Column("input_digest", sa.String(length=71), nullable=False),
        sa.Column("recorded_at", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("gov_decisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gov_decisions_model_version_id"), ["model_version_id"], unique=False)

    op.create_table(
        "gov_deployments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.BigInteger(), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("environment", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=True),
        sa.Column("decision_seq", sa.BigInteger(), nullable=True),
        sa.Column("refused", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("deployed_by", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("gov_deployments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gov_deployments_model_version_id"), ["model_version_id"], unique=False)

    op.create_table(
        "gov_model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=200), nullable=False),
        sa.Column("artifact_uri", sa.Text(), nullable=False),
        sa.Column("artifact_digest", sa.String(length=71), nullable=False),
        sa.Column("training_run_id", sa.String(length=64), nullable=False),
        sa.Column("model_card", sa.JSON(), nullable=False),
        sa.Column("registered_by", sa.Text(), nullable=False),
        sa.Column("registered_at", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "version", name="uq_gov_model_versions"),
    )
    op.create_table(
        "gov_validations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("report_uri", sa.Text(), nullable=True),
        sa.Column("report_digest", sa.String(length=71), nullable=True),
        sa.Column("datasets", sa.JSON(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("recorded_by", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("gov_validations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gov_validations_model_version_id"), ["model_version_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("gov_validations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gov_validations_model_version_id"))

    op.drop_table("gov_validations")
    op.drop_table("gov_model_versions")
    with op.batch_alter_table("gov_deployments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gov_deployments_model_version_id"))

    op.drop_table("gov_deployments")
    with op.batch_alter_table("gov_decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gov_decisions_model_version_id"))

    op.drop_table("gov_decisions")
    with op.batch_alter_table("gov_approvals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gov_approvals_model_version_id"))

    op.drop_table("gov_approvals")
