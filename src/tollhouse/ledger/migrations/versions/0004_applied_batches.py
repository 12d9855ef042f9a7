"""applied batches, so a batch replayed after its commit counts nothing twice

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 14:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "applied_batch",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_applied_batch_at", "applied_batch", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_applied_batch_at", table_name="applied_batch")
    op.drop_table("applied_batch")
