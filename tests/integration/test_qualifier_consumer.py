"""The qualifier's handler on a real database: one decision per lead, whatever is redelivered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa

from services.qualifier import service
from services.qualifier.config import DEFAULT_DEFINITION, QualifierSettings
from services.qualifier.consumer import make_handler
from services.qualifier.tables import decisions, leads, outbox
from shared.consumer import Delivered
from shared.db import utcnow
from shared.events import LeadRouted, decode_event
from shared.migrations import migrate
from shared.runtime import Runtime
from shared.settings import CommonSettings
from tests.support import received


async def test_a_redelivered_lead_is_decided_once(database_url: str, tmp_path: Path) -> None:
    await asyncio.to_thread(migrate, "qualifier", database_url)
    settings = QualifierSettings(
        database_url=database_url,
        common=CommonSettings(data_dir=tmp_path, kafka_bootstrap_servers="127.0.0.1:1"),
    )
    runtime = Runtime(settings, outbox=outbox)
    async with runtime.engine.begin() as conn:
        await service.ensure_initial_definition(
            conn, DEFAULT_DEFINITION.read_text(encoding="utf-8"), utcnow()
        )
    handle = make_handler(runtime)
    events = [received(), received(budget=None), received(services=["smm"])]
    batch = [Delivered(e, "leads.received", 0, i) for i, e in enumerate(events)]
    await handle(batch)
    await handle(batch)  # redelivery of the whole batch
    await handle(batch[1:2])  # and of one event alone

    async with runtime.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(leads)) == 3
        assert await conn.scalar(sa.select(sa.func.count()).select_from(decisions)) == 3
        payloads = (await conn.execute(sa.select(outbox.c.payload))).scalars().all()
        routes = (await conn.execute(sa.select(leads.c.lead_id, leads.c.route))).all()
    routed = [decode_event(p) for p in payloads]
    assert all(isinstance(e, LeadRouted) for e in routed)
    assert len({e.id for e in routed}) == 3
    assert dict(routes) == {
        events[0].subject: "sales", events[1].subject: "processing", events[2].subject: "partner",
    }  # fmt: skip
    # The routed event carries the business time of its cause.
    assert {e.time for e in routed} == {e.time for e in events}
    await runtime.stop()
