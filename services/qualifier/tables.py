"""The qualifier database: definitions, leads with their decisions and stages, inbox, outbox."""

from __future__ import annotations

import sqlalchemy as sa

from shared.db import BigIntPK, Json, UtcDateTime
from shared.inbox import inbox_table
from shared.outbox import outbox_table

metadata = sa.MetaData()

definitions = sa.Table(
    "definitions",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(200), nullable=False),
    # draft -> active -> retired; exactly one active at a time.
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("document", Json, nullable=False),
    sa.Column("source_text", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("published_at", UtcDateTime, nullable=True),
    sa.Column("published_by", sa.String(200), nullable=True),
)

leads = sa.Table(
    "leads",
    metadata,
    sa.Column("lead_id", sa.String(36), primary_key=True),
    sa.Column("snapshot", Json, nullable=False),
    sa.Column("received_at", UtcDateTime, nullable=False, index=True),
    sa.Column("route", sa.String(20), nullable=False),
    sa.Column("stage", sa.String(20), nullable=False),
    sa.Column("definition_version", sa.Integer, nullable=False),
    sa.Column("team", sa.String(200), nullable=True),
    sa.Column("assignee", sa.String(200), nullable=True, index=True),
    sa.Column("sla_due_at", UtcDateTime, nullable=True),
    sa.Column("decision", Json, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("erased_at", UtcDateTime, nullable=True),
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("lead_id", sa.String(36), nullable=False, index=True),
    sa.Column("definition_version", sa.Integer, nullable=False),
    sa.Column("route", sa.String(20), nullable=False),
    sa.Column("score", sa.Integer, nullable=False),
    sa.Column("decision", Json, nullable=False),
    sa.Column("decided_at", UtcDateTime, nullable=False),
    sa.Column("cause_event_id", sa.String(36), nullable=False),
)

stage_history = sa.Table(
    "stage_history",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("lead_id", sa.String(36), nullable=False, index=True),
    sa.Column("stage", sa.String(20), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("by", sa.String(200), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("event_id", sa.String(36), nullable=False),
)

round_robin = sa.Table(
    "round_robin",
    metadata,
    sa.Column("team", sa.String(200), primary_key=True),
    sa.Column("next_index", sa.Integer, nullable=False),
)

inbox = inbox_table(metadata)
outbox = outbox_table(metadata)
