"""Every query of the intake service.

A group commit's statements (the identities' locks, the duplicate lookup, the insert of
leads with their events) are fixed SQL over arrays, prepared once. Built with SQLAlchemy
they took a share of intake's CPU per lead comparable to the route's (building and
compiling them, binding each row, serializing each snapshot again for its column), and
their text depended on the batch's size (an IN list, a VALUES row per lead), so asyncpg
prepared another statement for each new size. Here the values travel as arrays: every
batch runs the same three statements, and a batch's leads and their events go in with one
of them (one round trip).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake.domain import WEBINAR_SOURCES, DedupeKey, KnownLead
from services.intake.tables import forms, leads, outbox, webinars
from shared.db import AnyRow, as_columns, utcnow
from shared.events import LeadReceived, LeadSnapshot, encode_event
from shared.outbox import pending_of

# --- leads ---------------------------------------------------------------------------

# One statement for the lot; unnest yields the sorted array in order. It also makes the
# rest of the transaction plan each statement for its values (SET LOCAL): a prepared
# statement's generic plan is made once and kept, and one made while `leads` was new and
# empty scanned the whole table for every batch (11 ms at 50,000 leads) until autovacuum
# first analyzed it, a minute later. Planning the batch's few statements afresh costs a
# fraction of a millisecond and sees the table as it is now.
_LOCK_IN_ORDER = (
    "SELECT count(pg_advisory_xact_lock(id)), "
    "set_config('plan_cache_mode', 'force_custom_plan', true) FROM "
    "(SELECT id FROM unnest($1::bigint[]) WITH ORDINALITY AS t(id, n) ORDER BY n) AS s"
)

# Each branch looks up exact (source, form, e-mail) or (source, form, phone) triples
# through its index. The generic plan PostgreSQL settles on for a prepared statement must
# not depend on the arrays' contents: with `email = ANY($n)` beside `source = ANY(...)` it
# scanned every lead of the source within the dedupe window and filtered them (7 ms at
# 30,000 leads a day, growing with the day's leads), while a join on unnested triples
# costs an index probe a lead whatever the table holds. Empty arrays match nothing.
_RECENT_LIKE = (
    "SELECT lead_id, source, origin_id, email, phone, received_at FROM leads "
    "WHERE received_at >= $7 AND honeypot_filled IS false AND (source, origin_id, email) IN "
    "(SELECT * FROM unnest($1::text[], $2::text[], $3::text[])) "
    "UNION "
    "SELECT lead_id, source, origin_id, email, phone, received_at FROM leads "
    "WHERE received_at >= $7 AND honeypot_filled IS false AND (source, origin_id, phone) IN "
    "(SELECT * FROM unnest($4::text[], $5::text[], $6::text[]))"
)

# The events keep the batch's order in the outbox's ids (ORDER BY n): the relay publishes
# by id, so a lead's events go out in the order they were written.
_INSERT_LEADS_WITH_EVENTS = (
    "WITH new_leads AS (INSERT INTO leads (lead_id, source, origin_id, email, phone, "
    "snapshot, occurred_at, received_at, erased_at, honeypot_filled) "
    "SELECT u.lead_id, u.source, u.origin_id, u.email, u.phone, u.snapshot::jsonb, "
    "u.occurred_at, u.received_at, NULL, u.honeypot_filled "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], "
    "$7::timestamptz[], $8::timestamptz[], $9::bool[]) "
    "AS u(lead_id, source, origin_id, email, phone, snapshot, occurred_at, received_at, "
    "honeypot_filled)) "
    "INSERT INTO outbox (event_id, topic, key, event_type, payload, created_at) "
    "SELECT e.event_id, e.topic, e.key, e.event_type, e.payload, $15 "
    "FROM unnest($10::text[], $11::text[], $12::text[], $13::text[], $14::bytea[]) "
    "WITH ORDINALITY AS e(event_id, topic, key, event_type, payload, n) ORDER BY e.n"
)


async def lock_identities(conn: AsyncConnection, keys: Iterable[DedupeKey]) -> None:
    """Serialize writers on the same people, and plan the rest of the transaction's
    statements for their values (see `_LOCK_IN_ORDER`).

    All ids of a transaction are taken at once, in one global order, so two transactions
    holding several people (a batch, an import chunk) can never wait on each other.
    """
    ids = sorted({i for key in keys for i in key.lock_ids()})
    if ids:
        await conn.exec_driver_sql(_LOCK_IN_ORDER, (ids,))


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
    result = await conn.exec_driver_sql(
        _RECENT_LIKE, (*as_columns(by_email, 3), *as_columns(by_phone, 3), since)
    )
    rows: list[Any] = list(result)
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
    outbox: one statement; each snapshot is serialized once, for its event and its column."""
    if not new:
        return
    snapshots = [event.data.model_dump_json() for event, _ in new]
    rows = [
        (
            event.data.lead_id,
            key.source,
            key.origin_id,
            key.email,
            key.phone,
            snapshot,
            event.data.occurred_at,
            event.data.received_at,
            event.data.honeypot_filled,
            event.id,
            event.topic,
            event.key,
            event.type,
            encode_event(event, data_json=snapshot),
        )
        for (event, key), snapshot in zip(new, snapshots, strict=True)
    ]
    await conn.exec_driver_sql(_INSERT_LEADS_WITH_EVENTS, (*as_columns(rows, 14), utcnow()))


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
    if for_update:
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
        postgresql.insert(forms)
        .on_conflict_do_nothing()
        .values(form_id=form_id, created_at=now, updated_at=now, **values)
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
        postgresql.insert(webinars)
        .on_conflict_do_nothing()
        .values(webinar_id=webinar_id, created_at=now, updated_at=now, **values)
    )


async def delete_webinar(conn: AsyncConnection, webinar_id: str) -> bool:
    result = await conn.execute(sa.delete(webinars).where(webinars.c.webinar_id == webinar_id))
    return bool(result.rowcount)
