"""The key table's queries: keys made with new leads, read for the relay and the key
endpoint, destroyed on erasure."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

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


# Fixed text, the ids as one array: the relay reads keys for every batch it sends.
_LIVE_KEYS = (
    f"SELECT lead_id, kid, master_kid, wrapped FROM {lead_keys.name} "
    "WHERE lead_id = ANY($1::text[])"
)


async def live_keys(
    conn: AsyncConnection, ring: KeyRing, lead_ids: Collection[str]
) -> tuple[dict[str, LeadKey], set[str]]:
    """The live keys of these leads, and which of them had a key that was destroyed."""
    live: dict[str, LeadKey] = {}
    destroyed: set[str] = set()
    for row in (await conn.exec_driver_sql(_LIVE_KEYS, (list(lead_ids),))).all():
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
