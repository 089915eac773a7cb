"""Everything the qualifier publishes goes through `publish`: the events into the outbox
(for Kafka), and in the same transaction whatever each event owes outside Kafka (CRM
pushes, webhook subscriptions). So a decision, a stage change or an SLA breach commits
with every delivery it owes, or with none."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.tables import outbox
from shared.events import Event
from shared.outbox import add_to_outbox


async def publish(conn: AsyncConnection, events: Sequence[Event], *, now: datetime) -> None:
    if not events:
        return
    await add_to_outbox(conn, outbox, events)
