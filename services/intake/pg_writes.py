"""Accepting leads on PostgreSQL: fixed statements over arrays, prepared once.

Built with SQLAlchemy, a group commit's statements took a share of intake's CPU per lead
comparable to the route's (building and compiling them, binding each row, serializing
each snapshot again for its column), and their text depended on the batch's size (an IN
list, a VALUES row per lead), so asyncpg prepared another statement for each new size.
Here the values travel as arrays: every batch runs the same three statements, and a
batch's leads and their events go in with one of them (one round trip). SQLite runs the
SQLAlchemy statements in `repository`, which store the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake.domain import DedupeKey, KnownLead
from shared.db import as_columns
from shared.events import LeadReceived

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


async def lock_in_order(conn: AsyncConnection, ids: list[int]) -> None:
    """Take these advisory locks (transaction-scoped) in the order given; the rest of the
    transaction plans its statements for their values (see `_LOCK_IN_ORDER`)."""
    await conn.exec_driver_sql(_LOCK_IN_ORDER, (ids,))


async def recent_leads_like(
    conn: AsyncConnection,
    *,
    by_email: Sequence[tuple[str, str, str]],
    by_phone: Sequence[tuple[str, str, str]],
    since: datetime,
) -> list[KnownLead]:
    """Leads since `since` with one of these (source, origin, e-mail) or (source, origin,
    phone) identities, bots' submissions left out."""
    result = await conn.exec_driver_sql(
        _RECENT_LIKE, (*as_columns(by_email, 3), *as_columns(by_phone, 3), since)
    )
    rows: list[Any] = list(result)
    return [KnownLead(*row) for row in rows]


async def insert_leads_with_events(
    conn: AsyncConnection,
    new: Sequence[tuple[LeadReceived, DedupeKey]],
    *,
    snapshots: Sequence[str],
    payloads: Sequence[bytes],
    now: datetime,
) -> None:
    """New leads, each with its `lead.received`; `snapshots` and `payloads` are the
    events' data and the events serialized (the data serialized once for both)."""
    rows = [
        (
            event.data.lead_id, key.source, key.origin_id, key.email, key.phone, snapshot,
            event.data.occurred_at, event.data.received_at, event.data.honeypot_filled,
            event.id, event.topic, event.key, event.type, payload,
        )
        for (event, key), snapshot, payload in zip(new, snapshots, payloads, strict=True)
    ]  # fmt: skip
    await conn.exec_driver_sql(
        _INSERT_LEADS_WITH_EVENTS,
        (
            *as_columns(rows, 14),
            now,
        ),
    )
