"""The qualifier database: definitions, leads with their decisions and history, payments,
deliveries (partners, webhooks, CRMs), sales absences, erasures, idempotency keys, inbox
and outbox."""

from __future__ import annotations

import sqlalchemy as sa

from shared.db import BigIntPK, Json, Money, UtcDateTime
from shared.idempotency import idempotency_table
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
    # The database itself keeps "exactly one active version", whatever races.
    sa.Index(
        "uq_definitions_one_active",
        "status",
        unique=True,
        postgresql_where=sa.text("status = 'active'"),
    ),
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
    sa.Column("sla_due_at", UtcDateTime, nullable=True, index=True),
    sa.Column("decision", Json, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("erased_at", UtcDateTime, nullable=True),
    # What sales said (accepted | rejected) and when: the back-test's ground truth.
    sa.Column("feedback", sa.String(20), nullable=True),
    sa.Column("feedback_at", UtcDateTime, nullable=True),
    # Set by the first contact; later contacts are not first contacts.
    sa.Column("first_contacted_at", UtcDateTime, nullable=True),
    # Every brief answer so far (normalized): intake's later snapshots (webinar attendance)
    # know nothing of briefs, so these are applied over them again.
    sa.Column("brief_answers", Json, nullable=True),
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
    # The event that recorded this step (lead.routed, lead.contacted, lead.sla_breached...).
    sa.Column("event_type", sa.String(100), nullable=True),
    # Free text a person wrote (a rejection reason): it may name people, so erasure drops it.
    sa.Column("note", sa.Text, nullable=True),
)

payments = sa.Table(
    "payments",
    metadata,
    # Given by the client for idempotent retries, or generated.
    sa.Column("payment_id", sa.String(100), primary_key=True),
    sa.Column("lead_id", sa.String(36), nullable=False, index=True),
    sa.Column("amount", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("by", sa.String(200), nullable=True),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("lead_id", sa.String(36), nullable=False, index=True),
    # What is called: partner (its webhook), webhook (a subscription), crm (a connector).
    sa.Column("kind", sa.String(20), nullable=False, server_default="partner"),
    # The partner id, the subscription id or the connector id.
    sa.Column("target_id", sa.String(200), nullable=False),
    # For crm: push or erase; None for the others.
    sa.Column("operation", sa.String(20), nullable=True),
    # The event delivered: one delivery per (event, target), whatever is retried; after an
    # erasure, one `lead.erased` per partner that may have received the lead.
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("event_type", sa.String(100), nullable=False, server_default="lead.routed"),
    # None where the sender knows where to call (a CRM push: several calls of its API).
    sa.Column("url", sa.Text, nullable=True),
    # The exact body sent (and signed); dropped when the person is erased.
    sa.Column("payload", sa.LargeBinary, nullable=True),
    # pending -> delivered | failed (parked); cancelled when the person was erased first.
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    # The deliverer that leased the row for its current attempt.
    sa.Column("claim_token", sa.String(36), nullable=True),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    # The last attempt's outcome (http_2xx, timeout, refused_address, crm_unavailable...)
    # and, when it failed, what happened in our words: nothing the receiver sent is kept.
    sa.Column("last_outcome", sa.String(30), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("delivered_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("kind", "target_id", "event_id", name="uq_deliveries_event_target"),
    sa.Index("ix_deliveries_due", "status", "next_attempt_at"),
    sa.Index("ix_deliveries_target", "kind", "target_id", "status"),
)

webhook_subscriptions = sa.Table(
    "webhook_subscriptions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    # The event types sent (shared.events' types), a JSON list.
    sa.Column("event_types", Json, nullable=False),
    # `whsec_` + base64: what signs; shown once, when made or rotated.
    sa.Column("secret", sa.String(200), nullable=False),
    # After a rotation the old secret signs too (a second signature) until the overlap ends.
    sa.Column("previous_secret", sa.String(200), nullable=True),
    sa.Column("previous_valid_until", UtcDateTime, nullable=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("disabled_at", UtcDateTime, nullable=True),
)

sales_members = sa.Table(
    "sales_members",
    metadata,
    # Absence is a fact of the week, not of the definition: it lives here, not in a version.
    sa.Column("member", sa.String(200), primary_key=True),
    sa.Column("absent", sa.Boolean, nullable=False),
    sa.Column("absent_until", UtcDateTime, nullable=True),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=True),
)

erasures = sa.Table(
    "erasures",
    metadata,
    # Remembered apart from leads: an erasure may arrive before the lead it erases.
    sa.Column("lead_id", sa.String(36), primary_key=True),
    sa.Column("erased_at", UtcDateTime, nullable=False),
    sa.Column("event_id", sa.String(36), nullable=False),
)

# Idempotency-Keys of lifecycle calls (`shared.idempotency`): claimed, then answered.
idempotency_keys = idempotency_table(metadata)

round_robin = sa.Table(
    "round_robin",
    metadata,
    sa.Column("team", sa.String(200), primary_key=True),
    sa.Column("next_index", sa.Integer, nullable=False),
)

crm_connectors = sa.Table(
    "crm_connectors",
    metadata,
    sa.Column("id", sa.String(63), primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),
    # The validated configuration (crm.config.Connector) and the text as it was written.
    # Secrets are never here: the configuration names the environment variables.
    sa.Column("document", Json, nullable=False),
    sa.Column("source_text", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=True),
    # Reconciliation: records modified up to here have been read back (the CRM's clock).
    sa.Column("synced_until", UtcDateTime, nullable=True),
    sa.Column("last_sync_at", UtcDateTime, nullable=True),
    # The last failure of a sync or pull, in our words (never the CRM's answer).
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_error_at", UtcDateTime, nullable=True),
)

crm_records = sa.Table(
    "crm_records",
    metadata,
    # Leadflow's lead -> the CRM's record, per connector: a lead is created once.
    sa.Column("connector_id", sa.String(63), primary_key=True),
    sa.Column("lead_id", sa.String(36), primary_key=True),
    sa.Column("crm_id", sa.String(100), nullable=False),
    # The CRM stage last applied, and the last change that could not be (skipped, why).
    sa.Column("stage", sa.String(100), nullable=True),
    sa.Column("skipped", sa.Text, nullable=True),
    sa.Column("pushed_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("erased_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("connector_id", "crm_id", name="uq_crm_records_crm_id"),
)

crm_pulls = sa.Table(
    "crm_pulls",
    metadata,
    # A record a notification named, to be read back and applied: notifications are
    # answered as soon as this row commits, and several for one record make one pull.
    sa.Column("connector_id", sa.String(63), primary_key=True),
    sa.Column("crm_id", sa.String(100), primary_key=True),
    sa.Column("requested_at", UtcDateTime, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("claim_token", sa.String(36), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Index("ix_crm_pulls_due", "next_attempt_at"),
)

crm_notices = sa.Table(
    "crm_notices",
    metadata,
    # Vendor event ids already taken (HubSpot's eventId): a redelivery changes nothing.
    sa.Column("connector_id", sa.String(63), primary_key=True),
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("received_at", UtcDateTime, nullable=False, index=True),
)

inbox = inbox_table(metadata)
outbox = outbox_table(metadata)
