"""The KPI's Kafka handler: a batch, its inbox rows and its folded facts in one transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kpi import service
from services.kpi.config import KpiSettings
from services.kpi.tables import inbox
from shared.consumer import BatchHandler, Delivered, TransientFailure
from shared.events import Event
from shared.inbox import claim_events
from shared.runtime import Runtime

T = TypeVar("T")

# PostgreSQL's "deadlock detected" and "serialization failure": the transaction lost a
# race and may simply run again.
_CONTENTION = {"40P01", "40001"}


async def in_transaction(
    engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]], attempts: int = 5
) -> T:
    """Run `work` in one transaction, again when it lost a race with another writer.

    Should it keep losing, it raises TransientFailure: the consumer loop retries the batch
    later and never parks it.
    """
    for attempt in range(attempts):
        try:
            async with engine.begin() as conn:
                return await work(conn)
        except sa.exc.DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) not in _CONTENTION:
                raise
            if attempt == attempts - 1:
                raise TransientFailure(f"lost {attempts} races for row locks: {exc}") from exc
            await asyncio.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def make_handler(runtime: Runtime) -> BatchHandler:
    settings = runtime.settings
    assert isinstance(settings, KpiSettings)
    currency = settings.currency

    async def handle(batch: Sequence[Delivered]) -> None:
        # A bad event fails the batch; the loop then applies events one at a time and
        # parks the bad one on the dead-letter topic with the reason.
        for item in batch:
            service.check_foldable(item.event, currency)
        # Sorted ids: two replicas claiming overlapping batches lock inbox rows in one order.
        claims = sorted({(d.event.id, d.event.type, d.topic) for d in batch})

        async def work(conn: AsyncConnection) -> None:
            new = await claim_events(conn, inbox, claims)
            unique: dict[str, Event] = {}
            for d in batch:
                if d.event.id in new:
                    unique.setdefault(d.event.id, d.event)
            await service.apply_live(conn, list(unique.values()))

        await in_transaction(runtime.engine, work)

    return handle
