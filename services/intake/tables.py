"""The intake database: stored leads, idempotency keys, and the outbox."""

from __future__ import annotations

import sqlalchemy as sa

from shared.db import Json, UtcDateTime
from shared.outbox import outbox_table

metadata = sa.MetaData()

leads = sa.Table(
    "leads",
    metadata,
    sa.Column("lead_id", sa.String(36), primary_key=True),
    sa.Column("source", sa.String(40), nullable=False),
    # form_id or webinar_id ('' when neither): part of the de-duplication key.
    sa.Column("origin_id", sa.String(200), nullable=False),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("phone", sa.String(32), nullable=True),
    sa.Column("snapshot", Json, nullable=False),
    sa.Column("occurred_at", UtcDateTime, nullable=False),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.Column("erased_at", UtcDateTime, nullable=True),
)
sa.Index(
    "ix_leads_dedupe_email", leads.c.source, leads.c.origin_id, leads.c.email, leads.c.received_at
)
sa.Index(
    "ix_leads_dedupe_phone", leads.c.source, leads.c.origin_id, leads.c.phone, leads.c.received_at
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    # Keys are scoped to the client that sent them: two clients may pick the same key.
    sa.Column("principal", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=False),
    sa.Column("response", Json, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False, index=True),
)

outbox = outbox_table(metadata)
