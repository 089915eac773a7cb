"""Erasure's queries: the lead's person cleared, its waiting events rewritten."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake.tables import leads, outbox
from shared.db import AnyRow
from shared.events import LeadSnapshot
from shared.outbox import pending_of


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
