"""The event log's tables (SQLAlchemy Core), shared by the store and the Alembic migrations.

Portable across Postgres (production) and SQLite (the embedded default): JSON becomes JSONB on Postgres, UUIDs use
``sa.Uuid``, timestamps are timezone-aware and normalised to UTC on read.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()

JsonDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False, comment="JetStream stream sequence"),
    sa.Column("event_id", sa.Uuid, nullable=False, unique=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("schema_version", sa.SmallInteger, nullable=False),
    sa.Column("pbx_id", sa.String(64), nullable=False),
    sa.Column("call_id", sa.String(64)),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("inferred", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("correlation_id", sa.String(128)),
    sa.Column("payload", sa.Text(), nullable=False, comment="the event JSON exactly as published"),
    sa.Index("ix_events_call_seq", "call_id", "seq"),
    sa.Index("ix_events_type_occurred", "type", "occurred_at"),
    sa.Index("ix_events_occurred", "occurred_at"),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("headers", JsonDoc, nullable=False),
    sa.Column("stream_seq", sa.BigInteger),
    sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("status", sa.String(16), nullable=False, server_default="open"),
    sa.Column("retried_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("source", "stream_seq", name="uq_dead_letters_source_seq"),
)

consumer_positions = sa.Table(
    "consumer_positions",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("position", sa.String(128), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

agent_tracking = sa.Table(
    "agent_tracking",
    metadata,
    sa.Column("agent", sa.String(128), primary_key=True),
    sa.Column("event_id", sa.Uuid, primary_key=True),
    sa.Column("call_id", sa.String(64)),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("position", sa.BigInteger, comment="ML_EVENTS stream sequence of the event, when known"),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Index("ix_agent_tracking_agent_position", "agent", "position"),
    sa.Index("ix_agent_tracking_recorded", "recorded_at"),
    comment="events an agent handled, written in the same transaction as its database effects",
)
