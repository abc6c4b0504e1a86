"""Classification projection: per-dataset tags (own, declared, declassified, effective) and entries.

Revision ID: 0004_classification
Revises: 0003_governance
Create Date: 2026-11-22 00:17:19.607684
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_classification"
down_revision = "0003_governance"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "sec_classifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.BigInteger(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("declassify", sa.Boolean(), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("principal", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sec_classifications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sec_classifications_dataset_id"), ["dataset_id"], unique=False)

    op.create_table(
        "sec_dataset_tags",
        sa.Column("dataset_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("own", sa.JSON(), nullable=False),
        sa.Column("declared", sa.JSON(), nullable=False),
        sa.Column("declassified", sa.JSON(), nullable=False),
        sa.Column("effective", sa.JSON(), nullable=False),
        sa.Column("unapproved", sa.JSON(), nullable=False),
        sa.Column("classified", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("dataset_id"),
    )


def downgrade() -> None:

    op.drop_table("sec_dataset_tags")
    with op.batch_alter_table("sec_classifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sec_classifications_dataset_id"))

    op.drop_table("sec_classifications")
