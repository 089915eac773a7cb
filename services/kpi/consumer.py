"""The KPI's Kafka handler: a batch, its inbox rows and its aggregates in one transaction."""

from __future__ import annotations

from collections.abc import Sequence

from services.kpi import service
from services.kpi.tables import inbox
from shared.consumer import BatchHandler, Delivered
from shared.inbox import claim_events
from shared.runtime import Runtime


def make_handler(runtime: Runtime) -> BatchHandler:
    async def handle(batch: Sequence[Delivered]) -> None:
        async with runtime.engine.begin() as conn:
            new = await claim_events(
                conn, inbox, [(d.event.id, d.event.type, d.topic) for d in batch]
            )
            await service.apply_events(conn, [d.event for d in batch if d.event.id in new])

    return handle
