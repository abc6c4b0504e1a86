"""Log first: every projection follows the log and keeps a persisted watermark.

`applied_size` is the number of log entries the projection has applied: entries [0, applied_size)
are in its tables. A database upgraded from 0005 holds projections applied to the whole log (they
were written in the append's transaction), so each watermark starts at the current log size.

Revision ID: 0006_projection_watermarks
Revises: 0005_marquez_reads
Create Date: 2026-11-30 23:00:00.000000
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from ledger.store.models import UtcTimestamp

revision = "0006_projection_watermarks"
down_revision = "0005_marquez_reads"
branch_labels = None
depends_on = None

PROJECTIONS = ("lineage", "classification", "governance", "violations")


def upgrade() -> None:
    table = op.create_table(
        "projection_watermarks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("applied_size", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UtcTimestamp(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    size = op.get_bind().execute(sa.text("SELECT COALESCE(MAX(seq) + 1, 0) FROM log_entries")).scalar_one()
    now = datetime.now(UTC)
    op.bulk_insert(table, [{"name": n, "applied_size": size, "updated_at": now} for n in PROJECTIONS])


def downgrade() -> None:
    op.drop_table("projection_watermarks")
