"""Witness cosignatures (DESIGN.md 8, "Witnesses"; C2SP tlog-cosignature) of stored checkpoints.

One row per checkpoint (size, root) and witness key: the `cosignature/v1` signature line the witness
returned from add-checkpoint, verified against that witness's key before it is stored. Append-only,
like `checkpoints`.

Revision ID: 0008_cosignatures
Revises: 0007_security
Create Date: 2026-12-01 01:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ledger.store.models import UtcTimestamp

revision = "0008_cosignatures"
down_revision = "0007_security"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cosignatures",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("witness_key_id", sa.String(length=8), nullable=False),
        sa.Column("witness", sa.Text(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.PrimaryKeyConstraint("size", "witness_key_id"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER cosignatures_append_only BEFORE UPDATE OR DELETE ON cosignatures "
            "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER cosignatures_no_{action.lower()} BEFORE {action} ON cosignatures "
                f"BEGIN SELECT RAISE(ABORT, 'cosignatures is append-only: {action} refused'); END"
            )


def downgrade() -> None:
    op.drop_table("cosignatures")
