"""Everything the qualifier publishes goes through `publish`: the events into the outbox
(for Kafka), and in the same transaction whatever each event owes outside Kafka (CRM
pushes, webhook subscriptions). So a decision, a stage change or an SLA breach commits
with every delivery it owes, or with none."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.crm import pushes as crm_pushes
from services.qualifier.subscriptions import service as subscriptions
from services.qualifier.tables import outbox
from shared.events import Event
from shared.outbox import add_to_outbox


async def publish(conn: AsyncConnection, events: Sequence[Event], *, now: datetime) -> None:
    if not events:
        return
    await add_to_outbox(conn, outbox, events)
    await subscriptions.owe(conn, events, now=now)
    await crm_pushes.owe(conn, events, now=now)
