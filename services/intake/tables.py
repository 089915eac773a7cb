"""The intake database: stored leads, form and webinar configuration, idempotency keys, outbox."""

from __future__ import annotations

import sqlalchemy as sa

from shared.db import Json, UtcDateTime
from shared.idempotency import idempotency_table
from shared.outbox import outbox_table

metadata = sa.MetaData()

leads = sa.Table(
    "leads",
    metadata,
    sa.Column("lead_id", sa.String(36), primary_key=True),
    sa.Column("source", sa.String(40), nullable=False),
    # form_id or webinar_id ('' when neither): part of the de-duplication key.
    sa.Column("origin_id", sa.String(200), nullable=False),
    # The de-duplication identities; erasure clears them with the rest of the person.
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("phone", sa.String(32), nullable=True),
    sa.Column("snapshot", Json, nullable=False),
    sa.Column("occurred_at", UtcDateTime, nullable=False),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.Column("erased_at", UtcDateTime, nullable=True),
    # A bot's submission never counts as the original a real person duplicates.
    sa.Column("honeypot_filled", sa.Boolean, nullable=False, server_default=sa.false()),
)
# Each holds the leads having its identity (migration 0003): an e-mail's lookup can only
# take the e-mail index, whatever the planner knows of the table.
for _identity in (leads.c.email, leads.c.phone):
    sa.Index(
        f"ix_leads_dedupe_{_identity.name}",
        leads.c.source,
        leads.c.origin_id,
        _identity,
        leads.c.received_at,
        postgresql_where=_identity.isnot(None),
    )

# Each lead's data key (shared.crypto), wrapped by a master key (keys.ring); erasure
# overwrites `wrapped` with NULL: the lead's sealed fields on every topic become noise.
lead_keys = sa.Table(
    "lead_keys",
    metadata,
    sa.Column("lead_id", sa.String(36), primary_key=True),
    sa.Column("kid", sa.String(32), nullable=False),
    sa.Column("master_kid", sa.String(64), nullable=False),
    sa.Column("wrapped", sa.LargeBinary, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("destroyed_at", UtcDateTime, nullable=True),
)

idempotency_keys = idempotency_table(metadata)

forms = sa.Table(
    "forms",
    metadata,
    sa.Column("form_id", sa.String(100), primary_key=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("allowed_origins", Json, nullable=False),
    # The form's own field names -> lead fields, for forms that do not use ours.
    sa.Column("field_map", Json, nullable=False),
    sa.Column("honeypot_field", sa.String(100), nullable=True),
    sa.Column("thank_you_url", sa.String(2000), nullable=True),
    # NULL: submitting the form is the consent (the page says so, in this text version).
    sa.Column("consent_field", sa.String(100), nullable=True),
    sa.Column("consent_text_version", sa.String(50), nullable=True),
    sa.Column("default_phone_region", sa.String(2), nullable=True),
    sa.Column("min_fill_seconds", sa.Float, nullable=False),
    sa.Column("rate_limit_per_minute", sa.Integer, nullable=True),
    # Server-to-server posts (Tilda) prove themselves with this key; only its hash is kept.
    sa.Column("server_key_sha256", sa.String(64), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

webinars = sa.Table(
    "webinars",
    metadata,
    sa.Column("webinar_id", sa.String(100), primary_key=True),
    sa.Column("title", sa.String(300), nullable=True),
    # Zoom's numeric webinar id, so Zoom's webhooks find their webinar.
    sa.Column("zoom_webinar_id", sa.String(32), nullable=True, unique=True),
    # The zone the times in a Zoom attendee report are written in.
    sa.Column("timezone", sa.String(64), nullable=False),
    # Registering for the webinar is consent under this text version.
    sa.Column("consent_text_version", sa.String(50), nullable=False),
    sa.Column("default_phone_region", sa.String(2), nullable=True),
    sa.Column("starts_at", UtcDateTime, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

outbox = outbox_table(metadata)
