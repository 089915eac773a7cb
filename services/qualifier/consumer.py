"""The qualifier's Kafka handler: each batch in one transaction with its inbox rows."""

from __future__ import annotations

from collections.abc import Sequence

from services.qualifier import service
from services.qualifier.tables import inbox
from shared.consumer import BatchHandler, Delivered
from shared.db import utcnow
from shared.events import LeadReceived
from shared.inbox import claim_events
from shared.runtime import Runtime


def make_handler(runtime: Runtime) -> BatchHandler:
    async def handle(batch: Sequence[Delivered]) -> None:
        async with runtime.engine.begin() as conn:
            new = await claim_events(
                conn, inbox, [(d.event.id, d.event.type, d.topic) for d in batch]
            )
            for item in batch:
                event = item.event
                if event.id in new and isinstance(event, LeadReceived):
                    await service.qualify_lead(conn, event, now=utcnow())
        runtime.wake_relay()

    return handle
