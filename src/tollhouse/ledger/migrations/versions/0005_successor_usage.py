"""responses, their tool calls, containers and chat completions

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 15:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _string(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def _tokens() -> list[sa.Column[int]]:
    names = ("input", "cached", "cache_write", "output", "reasoning", "total")
    return [sa.Column(f"{name}_tokens", sa.BigInteger(), nullable=True) for name in names]


def upgrade() -> None:
    op.create_table(
        "response",
        sa.Column("id", _string(128), nullable=False),
        sa.Column("tenant", _string(64), nullable=False),
        sa.Column("model", _string(128), nullable=True),
        sa.Column("status", _string(32), nullable=False),
        sa.Column("service_tier", _string(32), nullable=True),
        sa.Column("background", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        *_tokens(),
        sa.Column("usage_recorded_at", sa.BigInteger(), nullable=True),
        sa.Column("last_seen_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_response_pending", "response", ["usage_recorded_at", "last_seen_at"], unique=False
    )
    op.create_index(
        "ix_response_tenant_finished", "response", ["tenant", "finished_at"], unique=False
    )
    op.create_table(
        "response_tool_call",
        sa.Column("id", _string(128), nullable=False),
        sa.Column("type", _string(64), nullable=False),
        sa.Column("tenant", _string(64), nullable=False),
        sa.Column("response_id", _string(128), nullable=True),
        sa.Column("tool", _string(64), nullable=True),
        sa.Column("action", _string(32), nullable=True),
        sa.Column("container_id", _string(128), nullable=True),
        sa.Column("size", _string(32), nullable=True),
        sa.Column("quality", _string(32), nullable=True),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_response_tool_call_response", "response_tool_call", ["response_id"], unique=False
    )
    op.create_index(
        "ix_response_tool_call_tenant_type_at",
        "response_tool_call",
        ["tenant", "type", "at"],
        unique=False,
    )
    op.create_table(
        "container",
        sa.Column("id", _string(128), nullable=False),
        sa.Column("tenant", _string(64), nullable=False),
        sa.Column("memory_limit", _string(16), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("last_active_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_after_minutes", sa.Integer(), nullable=True),
        sa.Column("auto", sa.Boolean(), nullable=False),
        sa.Column("response_id", _string(128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_container_tenant_created", "container", ["tenant", "created_at"], unique=False
    )
    op.create_table(
        "chat_completion",
        sa.Column("id", _string(128), nullable=False),
        sa.Column("tenant", _string(64), nullable=False),
        sa.Column("model", _string(128), nullable=True),
        sa.Column("service_tier", _string(32), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        *_tokens(),
        sa.Column("usage_recorded_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_chat_completion_tenant_created",
        "chat_completion",
        ["tenant", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_chat_completion_tenant_created", table_name="chat_completion")
    op.drop_table("chat_completion")
    op.drop_index("ix_container_tenant_created", table_name="container")
    op.drop_table("container")
    op.drop_index("ix_response_tool_call_tenant_type_at", table_name="response_tool_call")
    op.drop_index("ix_response_tool_call_response", table_name="response_tool_call")
    op.drop_table("response_tool_call")
    op.drop_index("ix_response_tenant_finished", table_name="response")
    op.drop_index("ix_response_pending", table_name="response")
    op.drop_table("response")
