"""Intake use cases. They run inside the caller's transaction: they may write, never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake import repository
from services.intake.domain import (
    COMPANY_SIZES,
    TIMEFRAMES,
    WEBINAR_SOURCES,
    DedupeKey,
    InvalidField,
    KnownLead,
    KnownLeads,
    clean_text,
    dedupe_email,
    find_original,
    normalize_company_size,
    normalize_country,
    normalize_email,
    normalize_phone,
    normalize_role,
    normalize_timeframe,
    normalize_token,
    phone_region,
    redact,
    utm_from_url,
)
from services.intake.schemas import (
    ErasureResult,
    LeadAccepted,
    LeadIn,
    WebinarPersonIn,
)
from services.intake.tables import outbox
from shared.db import AnyRow
from shared.events import (
    SOURCE_INTAKE,
    LeadErased,
    LeadErasedData,
    LeadReceived,
    LeadSnapshot,
    LeadSource,
    LeadWebinarAttended,
    Utm,
    decode_event,
    encode_event,
)
from shared.ids import random_uuid
from shared.outbox import add_to_outbox

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
    """Store a new lead with its event, record attendance on a registrant, or name the lead
    this one duplicates (then nothing is written)."""
    (result,) = await accept_leads(conn, [snapshot], dedupe_window=dedupe_window)
    return result


async def accept_leads(
    conn: AsyncConnection, snapshots: Sequence[LeadSnapshot], *, dedupe_window: timedelta
) -> list[LeadAccepted]:
    """Several leads in one transaction (a batch, an import chunk, a group commit), answered
    in order, as if accepted one after the other.

    The writes are batched: one statement locks everyone, one finds possible originals,
    one inserts the new leads and one their events. A webinar's registration and
    attendance of one person are one lead, whenever they come: attendance of a registrant
    updates that lead (`lead.webinar_attended`); those go one at a time.
    """
    keys = [dedupe_key(s) for s in snapshots]
    await repository.lock_identities(conn, keys)
    results: dict[int, LeadAccepted] = {}
    plain = [i for i, key in enumerate(keys) if not key.is_webinar]
    known = KnownLeads()
    if plain and dedupe_window > timedelta(0):
        since = min(snapshots[i].received_at for i in plain) - dedupe_window
        known = KnownLeads(
            await repository.recent_leads_like(conn, [keys[i] for i in plain], since)
        )
    new: list[tuple[LeadSnapshot, DedupeKey]] = []
    for i in plain:
        snapshot, key = snapshots[i], keys[i]
        original = (
            find_original(known.like(key), key, since=snapshot.received_at - dedupe_window)
            if dedupe_window > timedelta(0)
            else None
        )
        if original is not None:
            results[i] = LeadAccepted(lead_id=original, status="duplicate", duplicate_of=original)
            continue
        new.append((snapshot, key))
        results[i] = LeadAccepted(lead_id=snapshot.lead_id, status="accepted")
        if not snapshot.honeypot_filled:
            known.add(_known(snapshot, key))
    await _insert(conn, new)
    for i, key in enumerate(keys):
        if key.is_webinar:
            results[i] = await _accept_webinar_lead(conn, snapshots[i], key)
    return [results[i] for i in range(len(snapshots))]


@dataclass(frozen=True)
class LeadWriter:
    """`accept_leads` as a group commit's batch handler; equal writers batch together."""

    dedupe_window: timedelta

    async def __call__(
        self, conn: AsyncConnection, snapshots: Sequence[LeadSnapshot]
    ) -> list[LeadAccepted]:
        return await accept_leads(conn, snapshots, dedupe_window=self.dedupe_window)


def _known(snapshot: LeadSnapshot, key: DedupeKey) -> KnownLead:
    return KnownLead(
        snapshot.lead_id, key.source, key.origin_id, key.email, key.phone, snapshot.received_at
    )


async def _insert(conn: AsyncConnection, new: Sequence[tuple[LeadSnapshot, DedupeKey]]) -> None:
    await repository.insert_leads(
        conn,
        [
            (LeadReceived(source=SOURCE_INTAKE, time=s.occurred_at, subject=s.lead_id, data=s), key)
            for s, key in new
        ],
    )


async def _accept_webinar_lead(
    conn: AsyncConnection, snapshot: LeadSnapshot, key: DedupeKey
) -> LeadAccepted:
    found = await repository.find_webinar_lead(conn, key)
    if found is None:
        await _insert(conn, [(snapshot, key)])
        return LeadAccepted(lead_id=snapshot.lead_id, status="accepted")
    existing = LeadSnapshot.model_validate(found.snapshot)
    if not snapshot.webinar_attended or existing.webinar_attended:
        return LeadAccepted(
            lead_id=existing.lead_id, status="duplicate", duplicate_of=existing.lead_id
        )
    attended = existing.model_copy(
        update={
            "webinar_attended": True,
            "webinar_attended_at": snapshot.webinar_attended_at,
            # What the attendance adds (minutes in session...) without rewriting answers.
            "fields": {**snapshot.fields, **existing.fields},
        }
    )
    await repository.update_snapshot(conn, attended)
    assert attended.webinar_attended_at is not None
    event = LeadWebinarAttended(
        source=SOURCE_INTAKE,
        time=attended.webinar_attended_at,
        subject=attended.lead_id,
        data=attended,
    )
    await add_to_outbox(conn, outbox, [event])
    return LeadAccepted(lead_id=attended.lead_id, status="updated")


async def origin_defaults(
    conn: AsyncConnection, form_id: str | None, webinar_id: str | None
) -> tuple[str | None, str | None]:
    """(phone region, consent text version) of the form or webinar a lead names, if known."""
    if form_id and (form := await repository.get_form(conn, form_id)) is not None:
        return form.default_phone_region, form.consent_text_version
    if webinar_id and (webinar := await repository.get_webinar(conn, webinar_id)) is not None:
        return webinar.default_phone_region, webinar.consent_text_version
    return None, None


async def erase_personal_data(
    conn: AsyncConnection, lead_id: str, *, by: str, now: datetime
) -> ErasureResult | None:
    """Forget the person behind a lead, keep the lead, and tell the other services.

    None when there is no such lead. A second erasure changes nothing and emits nothing.
    """
    row = await repository.get_lead(conn, lead_id, for_update=True)
    if row is None:
        return None
    if row.erased_at is not None:
        return ErasureResult(lead_id=lead_id, status="already_erased", erased_at=row.erased_at)
    await repository.erase_lead(conn, redact(LeadSnapshot.model_validate(row.snapshot)), now)
    # Events of this lead still waiting for Kafka go out without the person, too.
    for pending in await repository.pending_events_of(conn, lead_id):
        event = decode_event(pending.payload)
        if isinstance(event, LeadReceived | LeadWebinarAttended):
            scrubbed = event.model_copy(update={"data": redact(event.data)})
            await repository.replace_pending_payload(conn, pending.id, encode_event(scrubbed))
    erased = LeadErased(
        source=SOURCE_INTAKE,
        time=now,
        subject=lead_id,
        data=LeadErasedData(lead_id=lead_id, at=now, by=by),
    )
    await add_to_outbox(conn, outbox, [erased])
    return ErasureResult(lead_id=lead_id, status="erased", erased_at=now)


def webinar_lead(person: WebinarPersonIn, *, webinar: AnyRow, attended: bool) -> LeadIn:
    """A webinar registrant or attendee as a lead of that webinar; raises ValidationError."""
    data = person.model_dump(exclude_unset=True, exclude={"first_name", "last_name", "consent"})
    if not person.name:
        name = " ".join(n for n in (person.first_name, person.last_name) if n)
        if name:
            data["name"] = name
    source = LeadSource.webinar_attendance if attended else LeadSource.webinar_registration
    return LeadIn.model_validate(
        {
            **data,
            "source": source,
            "webinar_id": webinar.webinar_id,
            "consent": True if person.consent is None else person.consent,
            "consent_text_version": person.consent_text_version or webinar.consent_text_version,
        }
    )


def new_lead_id() -> str:
    return random_uuid()
