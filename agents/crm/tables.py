"""The CRM agent's tables (migration 0003): the calls being built, the built-in record table, the outbox of
deliveries to every target, and the ids each external target gave a record.

Times are stored in UTC (SQLite keeps them naive; :func:`utc` normalises what is read back).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()

JsonDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

crm_calls = sa.Table(
    "crm_calls",
    metadata,
    sa.Column("pbx_id", sa.String(64), primary_key=True),
    sa.Column("call_id", sa.String(64), primary_key=True),
    sa.Column("state", sa.Text, nullable=False, comment="CallState JSON: what has been seen of the call"),
    sa.Column("version", sa.Integer, nullable=False, server_default="0", comment="0 until the call ended"),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    comment="calls the CRM agent is building records for, updated in the transaction of each event",
)

crm_records = sa.Table(
    "crm_records",
    metadata,
    sa.Column("record_id", sa.String(64), primary_key=True),
    sa.Column("pbx_id", sa.String(64), nullable=False),
    sa.Column("call_id", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("direction", sa.String(16), nullable=False),
    sa.Column("from_number", sa.String(64), nullable=False, server_default=""),
    sa.Column("from_name", sa.String(255), nullable=False, server_default=""),
    sa.Column("to_number", sa.String(64), nullable=False, server_default=""),
    sa.Column("did", sa.String(64), nullable=False, server_default=""),
    sa.Column("answered_by", sa.String(64)),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("end_cause", sa.String(32), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("answered_at", sa.DateTime(timezone=True)),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Column("ring_seconds", sa.Float),
    sa.Column("talk_seconds", sa.Float),
    sa.Column("transfers", JsonDoc, nullable=False),
    sa.Column("recording_url", sa.Text),
    sa.Column("summary", sa.Text),
    sa.Column("record", sa.Text, nullable=False, comment="the whole CallRecord JSON"),
    sa.Column("written_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.UniqueConstraint("pbx_id", "call_id", name="uq_crm_records_call"),
    sa.Index("ix_crm_records_started", "started_at"),
    comment="the built-in CRM target: one row per call",
)

crm_outbox = sa.Table(
    "crm_outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("target", sa.String(16), nullable=False),
    sa.Column("record_id", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("pbx_id", sa.String(64), nullable=False),
    sa.Column("call_id", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False, comment="the CallRecord JSON of this version"),
    sa.Column(
        "state",
        sa.String(16),
        nullable=False,
        server_default="pending",
        comment="pending|sending|delivered|failed|superseded",
    ),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("maybe_sent_at", sa.DateTime(timezone=True), comment="when an attempt whose outcome is unknown began"),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("claimed_until", sa.DateTime(timezone=True)),
    sa.Column("last_attempt_at", sa.DateTime(timezone=True)),
    sa.Column("last_error", sa.Text),
    sa.Column("external_id", sa.String(128)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("target", "record_id", "version", name="uq_crm_outbox_delivery"),
    sa.Index("ix_crm_outbox_due", "state", "next_attempt_at"),
    sa.Index("ix_crm_outbox_record", "target", "record_id"),
    comment="deliveries of records to targets, written with the record, retried until delivered",
)

crm_links = sa.Table(
    "crm_links",
    metadata,
    sa.Column("target", sa.String(16), primary_key=True),
    sa.Column("record_id", sa.String(64), primary_key=True),
    sa.Column("external_id", sa.String(128), nullable=False, comment="the target's id for the record"),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    comment="the id an external target (HubSpot) gave each record, so later versions update it",
)


def utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
