"""The KPI's Kafka handler: a batch, its inbox rows and its folded facts in one transaction."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kpi.config import KpiSettings
from services.kpi.fold.apply import apply_live, check_foldable
from services.kpi.store import writes
from shared.delivery import BatchHandler, Delivered, TransientFailure
from shared.events import Event
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
                # Not the error's text: it quotes the statement's parameters.
                raise TransientFailure(f"lost {attempts} races for row locks") from exc
            await asyncio.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def make_handler(runtime: Runtime) -> BatchHandler:
    settings = runtime.settings
    assert isinstance(settings, KpiSettings)
    currency = settings.currency

    async def apply(batch: Sequence[Delivered]) -> None:
        # Sorted ids: two replicas claiming overlapping batches lock inbox rows in one order.
        claims = sorted({(d.event.id, d.event.type, d.topic) for d in batch})

        async def work(conn: AsyncConnection) -> None:
            new = await writes.claim_events(conn, claims)
            unique: dict[str, Event] = {}
            for d in batch:
                if d.event.id in new:
                    unique.setdefault(d.event.id, d.event)
            await apply_live(conn, list(unique.values()))

        await in_transaction(runtime.engine, work)

    async def handle(batch: Sequence[Delivered]) -> None:
        # A bad event fails the batch; the loop then applies events one at a time and
        # parks the bad one on the dead-letter topic with the reason.
        for item in batch:
            check_foldable(item.event, currency)
        parts = settings.fold_parallelism
        if parts <= 1 or len(batch) < 2 * parts:
            await apply(batch)
            return
        # Leads split into parts folded in concurrent transactions: while the database
        # writes one part, this process folds the next. A lead's events stay in one part
        # (its rows are locked by one transaction), and each part claims its own events in
        # its own transaction, so each event is still applied exactly once; the offsets are
        # committed only after every part is.
        split: list[list[Delivered]] = [[] for _ in range(parts)]
        for d in batch:
            split[zlib.crc32(d.event.subject.encode()) % parts].append(d)
        await asyncio.gather(*(apply(part) for part in split if part))

    return handle
