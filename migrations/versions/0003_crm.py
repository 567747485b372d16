"""CRM agent: the calls being built, the built-in record table, the delivery outbox and external ids.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JsonDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "crm_calls",
        sa.Column("pbx_id", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("state", sa.Text(), nullable=False, comment="CallState JSON: what has been seen of the call"),
        sa.Column("version", sa.Integer(), server_default="0", nullable=False, comment="0 until the call ended"),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("pbx_id", "call_id"),
        comment="calls the CRM agent is building records for, updated in the transaction of each event",
    )
    op.create_table(
        "crm_records",
        sa.Column("record_id", sa.String(64), nullable=False),
        sa.Column("pbx_id", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("from_number", sa.String(64), server_default="", nullable=False),
        sa.Column("from_name", sa.String(255), server_default="", nullable=False),
        sa.Column("to_number", sa.String(64), server_default="", nullable=False),
        sa.Column("did", sa.String(64), server_default="", nullable=False),
        sa.Column("answered_by", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("end_cause", sa.String(32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ring_seconds", sa.Float(), nullable=True),
        sa.Column("talk_seconds", sa.Float(), nullable=True),
        sa.Column("transfers", JsonDoc, nullable=False),
        sa.Column("recording_url", sa.Text(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("record", sa.Text(), nullable=False, comment="the whole CallRecord JSON"),
        sa.Column("written_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("record_id"),
        sa.UniqueConstraint("pbx_id", "call_id", name="uq_crm_records_call"),
        comment="the built-in CRM target: one row per call",
    )
    op.create_index("ix_crm_records_started", "crm_records", ["started_at"])
    op.create_table(
        "crm_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("target", sa.String(16), nullable=False),
        sa.Column("record_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("pbx_id", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False, comment="the CallRecord JSON of this version"),
        sa.Column(
            "state",
            sa.String(16),
            server_default="pending",
            nullable=False,
            comment="pending|sending|delivered|failed|superseded",
        ),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "maybe_sent_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when an attempt whose outcome is unknown began",
        ),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("external_id", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("target", "record_id", "version", name="uq_crm_outbox_delivery"),
        comment="deliveries of records to targets, written with the record, retried until delivered",
    )
    op.create_index("ix_crm_outbox_due", "crm_outbox", ["state", "next_attempt_at"])
    op.create_index("ix_crm_outbox_record", "crm_outbox", ["target", "record_id"])
    op.create_table(
        "crm_links",
        sa.Column("target", sa.String(16), nullable=False),
        sa.Column("record_id", sa.String(64), nullable=False),
        sa.Column("external_id", sa.String(128), nullable=False, comment="the target's id for the record"),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("target", "record_id"),
        comment="the id an external target (HubSpot) gave each record, so later versions update it",
    )


def downgrade() -> None:
    op.drop_table("crm_links")
    op.drop_index("ix_crm_outbox_record", table_name="crm_outbox")
    op.drop_index("ix_crm_outbox_due", table_name="crm_outbox")
    op.drop_table("crm_outbox")
    op.drop_index("ix_crm_records_started", table_name="crm_records")
    op.drop_table("crm_records")
    op.drop_table("crm_calls")
