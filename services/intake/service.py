"""Intake use cases. They run inside the caller's transaction: they may write, never commit."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake import repository
from services.intake.domain import (
    DedupeKey,
    InvalidField,
    clean_text,
    dedupe_email,
    normalize_company_size,
    normalize_email,
    normalize_phone,
    normalize_timeframe,
    normalize_token,
)
from services.intake.schemas import LeadAccepted, LeadIn
from services.intake.tables import outbox
from shared.events import SOURCE_INTAKE, LeadReceived, LeadSnapshot, Utm
from shared.outbox import add_to_outbox

# A submission time this far ahead of our clock is a client bug, not clock skew.
MAX_CLOCK_SKEW = timedelta(minutes=5)


def build_snapshot(
    lead: LeadIn, *, lead_id: str, now: datetime, default_region: str
) -> LeadSnapshot:
    """Validate and normalize one lead. Pure; raises InvalidField naming the bad field."""
    if not lead.consent:
        raise InvalidField("consent", "consent must be true to store personal data")
    email = normalize_email(lead.email) if lead.email else None
    country = lead.country.strip().upper() if lead.country else None
    region = country if country and len(country) == 2 else default_region
    phone = normalize_phone(lead.phone, region) if lead.phone else None
    if not email and not phone:
        raise InvalidField("email", "give at least one of email or phone")
    occurred_at = lead.occurred_at or now
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=now.tzinfo)
    if occurred_at > now + MAX_CLOCK_SKEW:
        raise InvalidField("occurred_at", "occurred_at lies in the future")
    services = [s for s in (normalize_token(x) for x in lead.services) if s]
    return LeadSnapshot(
        lead_id=lead_id,
        source=lead.source,
        form_id=lead.form_id,
        webinar_id=lead.webinar_id,
        name=clean_text(lead.name),
        email=email,
        phone=phone,
        company=clean_text(lead.company),
        job_title=clean_text(lead.job_title),
        industry=normalize_token(lead.industry),
        company_size=normalize_company_size(lead.company_size),
        country=country,
        region=clean_text(lead.region),
        message=lead.message.strip() if lead.message else None,
        services=list(dict.fromkeys(services)),
        budget=lead.budget,
        timeframe=normalize_timeframe(lead.timeframe),
        role_in_purchase=normalize_token(lead.role_in_purchase),
        consent=True,
        consent_text_version=lead.consent_text_version,
        utm=Utm.model_validate(lead.utm.model_dump()),
        page_url=lead.page_url,
        referrer=lead.referrer,
        occurred_at=occurred_at,
        received_at=now,
        fields=dict(lead.fields),
    )


def dedupe_key(snapshot: LeadSnapshot) -> DedupeKey:
    return DedupeKey(
        source=snapshot.source.value,
        origin_id=snapshot.form_id or snapshot.webinar_id or "",
        email=dedupe_email(snapshot.email),
        phone=snapshot.phone,
    )


async def accept_lead(
    conn: AsyncConnection, snapshot: LeadSnapshot, *, dedupe_window: timedelta
) -> LeadAccepted:
    """Store a new lead with its `lead.received` event, or point at the one it duplicates."""
    key = dedupe_key(snapshot)
    await repository.lock_identities(conn, key)
    if dedupe_window > timedelta(0):
        original = await repository.find_recent_duplicate(
            conn, key, since=snapshot.received_at - dedupe_window
        )
        if original is not None:
            return LeadAccepted(lead_id=original, status="duplicate", duplicate_of=original)
    await repository.insert_lead(conn, snapshot, key)
    event = LeadReceived(
        source=SOURCE_INTAKE, time=snapshot.occurred_at, subject=snapshot.lead_id, data=snapshot
    )
    await add_to_outbox(conn, outbox, [event])
    return LeadAccepted(lead_id=snapshot.lead_id, status="accepted")


def new_lead_id() -> str:
    return str(uuid.uuid4())
