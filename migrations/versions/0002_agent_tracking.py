"""Agent tracking: the events each agent handled, recorded with its database effects.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_tracking",
        sa.Column("agent", sa.String(128), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("call_id", sa.String(64), nullable=True),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column(
            "position", sa.BigInteger(), nullable=True, comment="ML_EVENTS stream sequence of the event, when known"
        ),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("agent", "event_id"),
        comment="events an agent handled, written in the same transaction as its database effects",
    )
    op.create_index("ix_agent_tracking_agent_position", "agent_tracking", ["agent", "position"])
    op.create_index("ix_agent_tracking_recorded", "agent_tracking", ["recorded_at"])


def downgrade() -> None:
    op.drop_index("ix_agent_tracking_recorded", table_name="agent_tracking")
    op.drop_index("ix_agent_tracking_agent_position", table_name="agent_tracking")
    op.drop_table("agent_tracking")
