"""A submitted lead as the snapshot intake stores and publishes: every field normalized. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from services.intake.leads.schemas import LeadIn
from services.intake.normalize.fields import (
    COMPANY_SIZES,
    TIMEFRAMES,
    WEBINAR_SOURCES,
    InvalidField,
    clean_text,
    normalize_company_size,
    normalize_country,
    normalize_email,
    normalize_phone,
    normalize_role,
    normalize_timeframe,
    normalize_token,
    phone_region,
    utm_from_url,
)
from shared.events import LeadSnapshot, LeadSource, Utm
from shared.ids import random_uuid

# A submission time this far ahead of our clock is a client bug, not clock skew.
MAX_CLOCK_SKEW = timedelta(minutes=5)


def build_snapshot(
    lead: LeadIn,
    *,
    lead_id: str,
    now: datetime,
    default_region: str,
    form_region: str | None = None,
    consent_text_version: str | None = None,
    strict: bool = True,
    honeypot_filled: bool = False,
) -> LeadSnapshot:
    """Validate and normalize one lead. Pure; raises InvalidField naming the bad field.

    `strict` (the JSON API): every value must be right. Otherwise (forms, webinars,
    imports, where a person typed the answers and is gone) an answer outside the
    definition's vocabulary, or a bad phone beside a good e-mail (or the reverse), is
    kept as typed in `fields` instead of losing the lead.
    """
    if not lead.consent:
        raise InvalidField("consent", "consent must be true to store personal data")
    fields = dict(lead.fields)
    country = normalize_country(lead.country)
    region = phone_region(country, form_region, default_region)
    email, phone = _contact(lead, region, strict=strict, fields=fields)
    occurred_at = lead.occurred_at or now
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=now.tzinfo)
    # Events carry their times in UTC, whatever zone a source wrote them in.
    occurred_at = occurred_at.astimezone(UTC)
    if occurred_at > now + MAX_CLOCK_SKEW:
        raise InvalidField("occurred_at", "occurred_at lies in the future")
    if lead.source in WEBINAR_SOURCES and not lead.webinar_id:
        raise InvalidField("webinar_id", f"a {lead.source.value} lead names its webinar_id")
    company_size = _vocabulary(
        "company_size", lead.company_size, normalize_company_size, COMPANY_SIZES, strict, fields
    )
    timeframe = _vocabulary(
        "timeframe", lead.timeframe, normalize_timeframe, TIMEFRAMES, strict, fields
    )
    services = [s for s in (normalize_token(x) for x in lead.services) if s]
    utm = {**utm_from_url(lead.page_url), **lead.utm.model_dump(exclude_none=True)}
    attended = lead.source is LeadSource.webinar_attendance
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
        company_size=company_size,
        country=country,
        region=clean_text(lead.region),
        message=lead.message.strip() if lead.message else None,
        services=list(dict.fromkeys(services)),
        budget=lead.budget,
        timeframe=timeframe,
        role_in_purchase=normalize_role(lead.role_in_purchase),
        consent=True,
        consent_text_version=lead.consent_text_version or consent_text_version,
        consent_at=occurred_at,
        utm=Utm.model_validate(utm),
        page_url=lead.page_url,
        referrer=lead.referrer,
        occurred_at=occurred_at,
        received_at=now,
        fields=fields,
        honeypot_filled=honeypot_filled,
        webinar_attended=attended,
        webinar_attended_at=occurred_at if attended else None,
    )


def _contact(
    lead: LeadIn, region: str, *, strict: bool, fields: dict[str, str]
) -> tuple[str | None, str | None]:
    email = phone = None
    errors: list[InvalidField] = []
    if lead.email:
        try:
            email = normalize_email(lead.email)
        except InvalidField as exc:
            errors.append(exc)
    if lead.phone:
        try:
            phone = normalize_phone(lead.phone, region)
        except InvalidField as exc:
            errors.append(exc)
    if errors and (strict or not (email or phone)):
        raise errors[0]
    for error in errors:
        # The other contact is good: keep this one as typed for a person to read.
        fields[f"{error.field}_as_given"] = (
            lead.email if error.field == "email" else lead.phone
        ) or ""
    if not email and not phone:
        raise InvalidField("email", "give at least one of email or phone")
    return email, phone


def _vocabulary(
    name: str,
    raw: str | None,
    normalize: Any,
    vocabulary: Sequence[str],
    strict: bool,
    fields: dict[str, str],
) -> str | None:
    if raw is None or not raw.strip():
        return None
    value: str | None = normalize(raw)
    if value is not None:
        return value
    if strict:
        raise InvalidField(name, f"{raw!r} is not one of {', '.join(vocabulary)}")
    fields.setdefault(name, raw)
    return None


def new_lead_id() -> str:
    return random_uuid()
