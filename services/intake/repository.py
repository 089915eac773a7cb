"""Every query of the intake service."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake import pg_writes
from services.intake.domain import WEBINAR_SOURCES, DedupeKey, KnownLead
from services.intake.tables import forms, idempotency_keys, leads, outbox, webinars
from shared.db import AnyRow, insert_ignoring_conflicts, is_postgres, utcnow
from shared.events import LeadReceived, LeadSnapshot, encode_event
from shared.outbox import add_to_outbox, pending_of

# --- leads ---------------------------------------------------------------------------


async def lock_identities(conn: AsyncConnection, keys: Iterable[DedupeKey]) -> None:
    """Serialize writers on the same people (PostgreSQL; SQLite already serializes writers).

    All ids of a transaction are taken at once, in one global order, so two transactions
    holding several people (a batch, an import chunk) can never wait on each other.
    """
    if not is_postgres(conn):
        return
    ids = sorted({i for key in keys for i in key.lock_ids()})
    if ids:
        await pg_writes.lock_in_order(conn, ids)


def _identity(key: DedupeKey) -> list[sa.ColumnElement[bool]]:
    identity = []
    if key.email:
        identity.append(leads.c.email == key.email)
    if key.phone:
        identity.append(leads.c.phone == key.phone)
    return identity


async def recent_leads_like(
    conn: AsyncConnection, keys: Sequence[DedupeKey], since: datetime
) -> list[KnownLead]:
    """Leads since `since` that may be the original of one of these (same source, form,
    e-mail or phone), bots' submissions left out; `domain.find_original` picks per lead."""
    by_email = sorted({(k.source, k.origin_id, k.email) for k in keys if k.email})
    by_phone = sorted({(k.source, k.origin_id, k.phone) for k in keys if k.phone})
    if not by_email and not by_phone:
        return []
    if is_postgres(conn):
        return await pg_writes.recent_leads_like(
            conn, by_email=by_email, by_phone=by_phone, since=since
        )
    # SQLite: the identities' parts as IN lists (a superset; find_original picks exactly).
    emails = sorted({email for _, _, email in by_email})
    phones = sorted({phone for _, _, phone in by_phone})
    sources = sorted({k.source for k in keys})
    origins = sorted({k.origin_id for k in keys})
    identity = []
    if emails:
        identity.append(leads.c.email.in_(emails))
    if phones:
        identity.append(leads.c.phone.in_(phones))
    rows = await conn.execute(
        sa.select(
            leads.c.lead_id, leads.c.source, leads.c.origin_id, leads.c.email, leads.c.phone,
            leads.c.received_at,
        ).where(
            leads.c.source.in_(sources),
            leads.c.origin_id.in_(origins),
            sa.or_(*identity),
            leads.c.received_at >= since,
            leads.c.honeypot_filled.is_(False),
        )
    )  # fmt: skip
    return [KnownLead(*row) for row in rows]


async def find_webinar_lead(conn: AsyncConnection, key: DedupeKey) -> AnyRow | None:
    """The lead of this person for this webinar, registration or attendance, at any time."""
    identity = _identity(key)
    if not identity:
        return None
    return (
        await conn.execute(
            sa.select(leads.c.lead_id, leads.c.snapshot)
            .where(
                leads.c.source.in_([s.value for s in WEBINAR_SOURCES]),
                leads.c.origin_id == key.origin_id,
                sa.or_(*identity),
            )
            .order_by(leads.c.received_at)
            .limit(1)
        )
    ).first()


async def insert_leads(
    conn: AsyncConnection, new: Sequence[tuple[LeadReceived, DedupeKey]]
) -> None:
    """New leads, each with its `lead.received` (whose data is the lead's snapshot), in the
    outbox; each snapshot is serialized once, for its event and (PostgreSQL) its column."""
    if not new:
        return
    snapshots = [event.data.model_dump_json() for event, _ in new]
    payloads = [
        encode_event(event, data_json=data) for (event, _), data in zip(new, snapshots, strict=True)
    ]
    if is_postgres(conn):
        await pg_writes.insert_leads_with_events(
            conn, new, snapshots=snapshots, payloads=payloads, now=utcnow()
        )
        return
    await conn.execute(
        leads.insert(),
        [
            {
                "lead_id": event.data.lead_id,
                "source": key.source,
                "origin_id": key.origin_id,
                "email": key.email,
                "phone": key.phone,
                "snapshot": event.data.model_dump(mode="json"),
                "occurred_at": event.data.occurred_at,
                "received_at": event.data.received_at,
                "erased_at": None,
                "honeypot_filled": event.data.honeypot_filled,
            }
            for event, key in new
        ],
    )
    await add_to_outbox(conn, outbox, [event for event, _ in new], payloads=payloads)


async def update_snapshot(conn: AsyncConnection, snapshot: LeadSnapshot) -> None:
    await conn.execute(
        leads.update()
        .where(leads.c.lead_id == snapshot.lead_id)
        .values(snapshot=snapshot.model_dump(mode="json"))
    )


async def get_lead(
    conn: AsyncConnection, lead_id: str, *, for_update: bool = False
) -> AnyRow | None:
    query = sa.select(leads.c.snapshot, leads.c.erased_at).where(leads.c.lead_id == lead_id)
    if for_update and is_postgres(conn):
        query = query.with_for_update()
    return (await conn.execute(query)).first()


async def erase_lead(conn: AsyncConnection, snapshot: LeadSnapshot, erased_at: datetime) -> None:
    """Store the redacted snapshot and clear the columns that found the person."""
    await conn.execute(
        leads.update()
        .where(leads.c.lead_id == snapshot.lead_id)
        .values(
            snapshot=snapshot.model_dump(mode="json"),
            email=None,
            phone=None,
            erased_at=erased_at,
        )
    )


async def pending_events_of(conn: AsyncConnection, lead_id: str) -> list[AnyRow]:
    """Events of a lead still waiting in the outbox (Kafka was down, or slow), safe to
    rewrite: none is being sent meanwhile (`shared.outbox.pending_of`)."""
    return await pending_of(conn, outbox, lead_id)


async def replace_pending_payload(conn: AsyncConnection, row_id: int, payload: bytes) -> None:
    await conn.execute(outbox.update().where(outbox.c.id == row_id).values(payload=payload))


# --- idempotency keys ----------------------------------------------------------------


async def lock_idempotency_key(conn: AsyncConnection, principal: str, key: str) -> None:
    if is_postgres(conn):
        await conn.execute(
            sa.select(
                sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(f"{principal}|{key}", 0))
            )
        )


async def get_idempotency_record(conn: AsyncConnection, principal: str, key: str) -> AnyRow | None:
    t = idempotency_keys
    return (
        await conn.execute(
            sa.select(
                t.c.request_hash, t.c.status_code, t.c.response, t.c.created_at, t.c.locked_until
            ).where(t.c.principal == principal, t.c.key == key)
        )
    ).first()


async def claim_idempotency_key(
    conn: AsyncConnection,
    *,
    principal: str,
    key: str,
    request_hash: str,
    claim_id: str,
    now: datetime,
    locked_until: datetime,
) -> None:
    t = idempotency_keys
    # An expired key or a lapsed claim may still be stored: this request takes it over.
    await conn.execute(sa.delete(t).where(t.c.principal == principal, t.c.key == key))
    await conn.execute(
        t.insert().values(
            principal=principal,
            key=key,
            request_hash=request_hash,
            claim_id=claim_id,
            created_at=now,
            locked_until=locked_until,
        )
    )


async def complete_idempotency_key(
    conn: AsyncConnection,
    principal: str,
    key: str,
    claim_id: str,
    *,
    status_code: int,
    response: dict[str, Any],
) -> bool:
    """Store the answer on this request's claim; False when another request holds the key."""
    t = idempotency_keys
    result = await conn.execute(
        t.update()
        .where(t.c.principal == principal, t.c.key == key, t.c.claim_id == claim_id)
        .values(status_code=status_code, response=response, locked_until=None)
    )
    return bool(result.rowcount)


async def renew_idempotency_claim(
    conn: AsyncConnection, principal: str, key: str, claim_id: str, *, locked_until: datetime
) -> None:
    t = idempotency_keys
    await conn.execute(
        t.update()
        .where(t.c.principal == principal, t.c.key == key, t.c.claim_id == claim_id)
        .values(locked_until=locked_until)
    )


async def release_idempotency_claim(
    conn: AsyncConnection, principal: str, key: str, claim_id: str
) -> None:
    """Drop this request's claim unless its answer was stored (its transaction committed)."""
    t = idempotency_keys
    await conn.execute(
        sa.delete(t).where(
            t.c.principal == principal,
            t.c.key == key,
            t.c.claim_id == claim_id,
            t.c.status_code.is_(None),
        )
    )


async def delete_idempotency_keys_before(conn: AsyncConnection, before: datetime) -> int:
    t = idempotency_keys
    result = await conn.execute(sa.delete(t).where(t.c.created_at < before))
    return int(result.rowcount or 0)


# --- forms and webinars ----------------------------------------------------------------


async def get_form(conn: AsyncConnection, form_id: str) -> AnyRow | None:
    return (await conn.execute(sa.select(forms).where(forms.c.form_id == form_id))).first()


async def list_forms(conn: AsyncConnection) -> list[AnyRow]:
    return list((await conn.execute(sa.select(forms).order_by(forms.c.form_id))).all())


async def put_form(
    conn: AsyncConnection, form_id: str, values: dict[str, Any], now: datetime
) -> bool:
    """Create or replace a form's configuration; True when it was created."""
    exists = await conn.scalar(sa.select(forms.c.form_id).where(forms.c.form_id == form_id))
    if exists is None:
        await conn.execute(
            forms.insert().values(form_id=form_id, created_at=now, updated_at=now, **values)
        )
        return True
    await conn.execute(
        forms.update().where(forms.c.form_id == form_id).values(updated_at=now, **values)
    )
    return False


async def insert_form_if_absent(
    conn: AsyncConnection, form_id: str, values: dict[str, Any], now: datetime
) -> None:
    await conn.execute(
        insert_ignoring_conflicts(conn, forms).values(
            form_id=form_id, created_at=now, updated_at=now, **values
        )
    )


async def delete_form(conn: AsyncConnection, form_id: str) -> bool:
    result = await conn.execute(sa.delete(forms).where(forms.c.form_id == form_id))
    return bool(result.rowcount)


async def get_webinar(conn: AsyncConnection, webinar_id: str) -> AnyRow | None:
    return (
        await conn.execute(sa.select(webinars).where(webinars.c.webinar_id == webinar_id))
    ).first()


async def get_webinar_by_zoom_id(conn: AsyncConnection, zoom_webinar_id: str) -> AnyRow | None:
    return (
        await conn.execute(sa.select(webinars).where(webinars.c.zoom_webinar_id == zoom_webinar_id))
    ).first()


async def list_webinars(conn: AsyncConnection) -> list[AnyRow]:
    return list((await conn.execute(sa.select(webinars).order_by(webinars.c.webinar_id))).all())


async def zoom_id_taken_by(
    conn: AsyncConnection, zoom_webinar_id: str, webinar_id: str
) -> str | None:
    """Another webinar linked to this Zoom webinar, if any."""
    return await conn.scalar(
        sa.select(webinars.c.webinar_id).where(
            webinars.c.zoom_webinar_id == zoom_webinar_id, webinars.c.webinar_id != webinar_id
        )
    )


async def put_webinar(
    conn: AsyncConnection, webinar_id: str, values: dict[str, Any], now: datetime
) -> bool:
    exists = await conn.scalar(
        sa.select(webinars.c.webinar_id).where(webinars.c.webinar_id == webinar_id)
    )
    if exists is None:
        await conn.execute(
            webinars.insert().values(
                webinar_id=webinar_id, created_at=now, updated_at=now, **values
            )
        )
        return True
    await conn.execute(
        webinars.update()
        .where(webinars.c.webinar_id == webinar_id)
        .values(updated_at=now, **values)
    )
    return False


async def insert_webinar_if_absent(
    conn: AsyncConnection, webinar_id: str, values: dict[str, Any], now: datetime
) -> None:
    await conn.execute(
        insert_ignoring_conflicts(conn, webinars).values(
            webinar_id=webinar_id, created_at=now, updated_at=now, **values
        )
    )


async def delete_webinar(conn: AsyncConnection, webinar_id: str) -> bool:
    result = await conn.execute(sa.delete(webinars).where(webinars.c.webinar_id == webinar_id))
    return bool(result.rowcount)
