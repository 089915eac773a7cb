"""Queries of stored leads: a batch of new leads with their events, one lead read or updated."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake.dedupe.identity import DedupeKey
from services.intake.keys import ring as keys_ring
from services.intake.keys.repository import new_key_columns
from services.intake.tables import leads
from shared.db import AnyRow, as_columns, utcnow
from shared.events import LeadReceived, LeadSnapshot, encode_event

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
    "honeypot_filled)), "
    "new_keys AS (INSERT INTO lead_keys (lead_id, kid, master_kid, wrapped, created_at) "
    "SELECT k.lead_id, k.kid, $18, k.wrapped, $15 "
    "FROM unnest($1::text[], $16::text[], $17::bytea[]) AS k(lead_id, kid, wrapped)) "
    "INSERT INTO outbox (event_id, topic, key, event_type, payload, created_at) "
    "SELECT e.event_id, e.topic, e.key, e.event_type, e.payload, $15 "
    "FROM unnest($10::text[], $11::text[], $12::text[], $13::text[], $14::bytea[]) "
    "WITH ORDINALITY AS e(event_id, topic, key, event_type, payload, n) ORDER BY e.n"
)


async def insert_leads(
    conn: AsyncConnection, new: Sequence[tuple[LeadReceived, DedupeKey]]
) -> None:
    """New leads, each with its `lead.received` (whose data is the lead's snapshot), in the
    outbox, and its data key: one statement; each snapshot is serialized once, for its
    event and its column."""
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
    ring = keys_ring.ring()
    kids, wrapped = new_key_columns(ring, [event.data.lead_id for event, _ in new])
    await conn.exec_driver_sql(
        _INSERT_LEADS_WITH_EVENTS,
        (*as_columns(rows, 14), utcnow(), kids, wrapped, ring.current),
    )


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
