"""The event log: events, dead letters, consumer positions.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JsonDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False, comment="JetStream stream sequence"),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("schema_version", sa.SmallInteger(), nullable=False),
        sa.Column("pbx_id", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(64), nullable=True),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("inferred", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("correlation_id", sa.String(128), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False, comment="the event JSON exactly as published"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index("ix_events_call_seq", "events", ["call_id", "seq"])
    op.create_index("ix_events_type_occurred", "events", ["type", "occurred_at"])
    op.create_index("ix_events_occurred", "events", ["occurred_at"])
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("headers", JsonDoc, nullable=False),
        sa.Column("stream_seq", sa.BigInteger(), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("status", sa.String(16), server_default="open", nullable=False),
        sa.Column("retried_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source", "stream_seq", name="uq_dead_letters_source_seq"),
    )
    op.create_table(
        "consumer_positions",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("position", sa.String(128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("consumer_positions")
    op.drop_table("dead_letters")
    op.drop_index("ix_events_occurred", table_name="events")
    op.drop_index("ix_events_type_occurred", table_name="events")
    op.drop_index("ix_events_call_seq", table_name="events")
    op.drop_table("events")
