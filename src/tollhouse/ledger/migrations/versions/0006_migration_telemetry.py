"""assistants' details, how runs were followed, and flow-tagged requests

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 16:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _string(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    with op.batch_alter_table("run") as run:
        run.add_column(
            sa.Column("streamed", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        run.add_column(sa.Column("polls", sa.BigInteger(), nullable=False, server_default="0"))
        run.add_column(
            sa.Column("tool_rounds", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.create_table(
        "assistant",
        sa.Column("id", _string(128), nullable=False),
        sa.Column("model", _string(128), nullable=True),
        sa.Column("instructions_chars", sa.BigInteger(), nullable=False),
        sa.Column("tools", _string(2048), nullable=False),
        sa.Column("vector_store_ids", _string(2048), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("seen_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "thread_messages",
        sa.Column("thread_id", _string(128), nullable=False),
        sa.Column("tenant", _string(64), nullable=False),
        sa.Column("messages", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("thread_id"),
    )
    op.create_table(
        "flow_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", _string(64), nullable=False),
        sa.Column("flow", _string(64), nullable=False),
        sa.Column("api", _string(16), nullable=False),
        sa.Column("operation", _string(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("first_byte_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_byte_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_flow_request_tenant_at", "flow_request", ["tenant", "at"], unique=False)
    op.create_table(
        "flow_unit",
        sa.Column("unit_id", _string(128), nullable=False),
        sa.Column("tenant", _string(64), nullable=False),
        sa.Column("flow", _string(64), nullable=False),
        sa.Column("api", _string(16), nullable=False),
        sa.PrimaryKeyConstraint("unit_id"),
    )
    op.create_index("ix_flow_unit_tenant_flow", "flow_unit", ["tenant", "flow"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_flow_unit_tenant_flow", table_name="flow_unit")
    op.drop_table("flow_unit")
    op.drop_index("ix_flow_request_tenant_at", table_name="flow_request")
    op.drop_table("flow_request")
    op.drop_table("thread_messages")
    op.drop_table("assistant")
    with op.batch_alter_table("run") as run:
        run.drop_column("tool_rounds")
        run.drop_column("polls")
        run.drop_column("streamed")
