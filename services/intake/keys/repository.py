"""The key table's queries: keys made with new leads, read for the relay and the key
endpoint, destroyed on erasure."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake.keys.ring import KeyRing
from services.intake.tables import lead_keys
from shared.crypto import LeadKey, new_lead_key


def new_key_columns(ring: KeyRing, lead_ids: Sequence[str]) -> tuple[list[str], list[bytes]]:
    """A fresh key for each new lead, as the insert takes them: kids and wrapped keys."""
    kids: list[str] = []
    wrapped: list[bytes] = []
    for lead_id in lead_ids:
        key = new_lead_key()
        kids.append(key.kid)
        wrapped.append(ring.wrap(lead_id, key))
    return kids, wrapped


async def live_keys(
    conn: AsyncConnection, ring: KeyRing, lead_ids: Collection[str]
) -> tuple[dict[str, LeadKey], set[str]]:
    """The live keys of these leads, and which of them had a key that was destroyed."""
    # An IN list (one id, the relay's usual batch at a steady rate, is an equality on the
    # primary key): with `= ANY($1::text[])` instead, a table not analyzed yet was read by
    # a sequential scan for every batch (20 million rows within 45 s at 200 leads/s).
    query = sa.select(
        lead_keys.c.lead_id, lead_keys.c.kid, lead_keys.c.master_kid, lead_keys.c.wrapped
    ).where(lead_keys.c.lead_id.in_(list(lead_ids)))
    live: dict[str, LeadKey] = {}
    destroyed: set[str] = set()
    for row in (await conn.execute(query)).all():
        key = (
            ring.unwrap(row.lead_id, row.kid, row.master_kid, row.wrapped)
            if row.wrapped is not None
            else None
        )
        if key is None:
            destroyed.add(row.lead_id)
        else:
            live[row.lead_id] = key
    return live, destroyed


async def destroy_key(conn: AsyncConnection, lead_id: str, at: datetime) -> None:
    """Crypto-shredding: the wrapped key is overwritten; what was sealed with it is noise."""
    await conn.execute(
        lead_keys.update()
        .where(lead_keys.c.lead_id == lead_id, lead_keys.c.wrapped.isnot(None))
        .values(wrapped=None, destroyed_at=at)
    )
