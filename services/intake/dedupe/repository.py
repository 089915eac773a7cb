"""De-duplication's queries: the identities' locks, the lookup of possible originals, and a
webinar person's lead.

A group commit's statements (the identities' locks, the duplicate lookup, the insert of
leads with their events) are fixed SQL over arrays, prepared once. Built with SQLAlchemy
they took a share of intake's CPU per lead comparable to the route's (building and
compiling them, binding each row, serializing each snapshot again for its column), and
their text depended on the batch's size (an IN list, a VALUES row per lead), so asyncpg
prepared another statement for each new size. Here the values travel as arrays: every
batch runs the same three statements, and a batch's leads and their events go in with one
of them (one round trip, `leads.repository.insert_leads`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake.dedupe.identity import DedupeKey, KnownLead
from services.intake.normalize.fields import WEBINAR_SOURCES
from services.intake.tables import leads
from shared.db import AnyRow, as_columns

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
