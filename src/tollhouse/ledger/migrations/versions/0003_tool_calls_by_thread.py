"""tool calls by thread, for Code Interpreter sessions worked out per thread

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 09:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tool_call", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tool_call_thread_type_at", ["thread_id", "type", "at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("tool_call", schema=None) as batch_op:
        batch_op.drop_index("ix_tool_call_thread_type_at")
