"""The outbox relay on real Kafka: every event arrives once in effect, keyed, in order per key."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kpi.store.tables import inbox as kpi_inbox
from services.qualifier.tables import metadata, outbox
from shared.crypto import new_lead_key
from shared.db import create_engine
from shared.events import TOPIC_RECEIVED, LeadReceived
from shared.inbox import claim_events
from shared.kafka import ensure_topics, make_producer
from shared.outbox import OutboxRelay, add_to_outbox
from tests.support import StaticKeys, event_of, read_topic, received


async def _relay_setup(database_url: str) -> AsyncEngine:
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    return engine


async def test_events_arrive_keyed_and_in_order_per_key(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    await ensure_topics(kafka_bootstrap, 6)
    engine = await _relay_setup(database_url)
    leads = [str(uuid.uuid4()) for _ in range(5)]
    # Ten events per lead, interleaved, each lead's in a known order.
    events = [received(lead_id=lead, name=f"step-{i}") for i in range(10) for lead in leads]
    keys = {lead: new_lead_key() for lead in leads}
    async with engine.begin() as conn:
        await add_to_outbox(conn, outbox, events)
    producer = make_producer(kafka_bootstrap, "test-relay")
    await producer.start()
    try:
        relay = OutboxRelay(
            service="test",
            engine=engine,
            table=outbox,
            producer=producer,
            batch_size=7,
            keys=StaticKeys(keys),
        )
        while await relay.publish_batch():
            pass
    finally:
        await producer.stop()
    async with engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(outbox)) == 0
    await engine.dispose()

    wanted = {lead.encode() for lead in leads}
    records = await read_topic(kafka_bootstrap, TOPIC_RECEIVED, lambda r: r.key in wanted, 50)
    assert len(records) == 50
    for lead in leads:
        # Sealed on the wire; opened with the lead's key.
        assert not any(b"step-" in (r.value or b"") for r in records)
        mine = [event_of(r, keys) for r in records if r.key == lead.encode()]
        assert [e.data.name for e in mine if isinstance(e, LeadReceived)] == [
            f"step-{i}" for i in range(10)
        ]
        assert len({r.partition for r in records if r.key == lead.encode()}) == 1


async def test_a_relay_restarted_mid_batch_publishes_nothing_twice_in_effect(
    database_url: str, kafka_bootstrap: str
) -> None:
    """Crash after Kafka acknowledged but before the rows were deleted: the restarted
    relay sends the same events again, with the same ids, and an inbox applies each once."""
    await ensure_topics(kafka_bootstrap, 6)
    engine = await _relay_setup(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: kpi_inbox.create(c, checkfirst=True))
    events = [received() for _ in range(20)]
    async with engine.begin() as conn:
        await add_to_outbox(conn, outbox, events)
        rows = [dict(r._mapping) for r in await conn.execute(sa.select(outbox))]

    producer = make_producer(kafka_bootstrap, "test-relay-crash")
    await producer.start()
    try:
        first = OutboxRelay(service="test", engine=engine, table=outbox, producer=producer)
        assert await first.publish_batch() == 20
        # The crash: the delete never happened, so the rows are still there on restart.
        async with engine.begin() as conn:
            await conn.execute(outbox.insert(), rows)
        restarted = OutboxRelay(service="test", engine=engine, table=outbox, producer=producer)
        task = asyncio.create_task(restarted.run())
        for _ in range(100):
            async with engine.connect() as conn:
                if not await conn.scalar(sa.select(sa.func.count()).select_from(outbox)):
                    break
            await asyncio.sleep(0.1)
        task.cancel()
    finally:
        await producer.stop()

    ids = {e.id for e in events}
    records = await read_topic(kafka_bootstrap, TOPIC_RECEIVED, lambda r: event_of(r).id in ids, 40)
    assert len(records) == 40  # at least once on the wire: each event twice
    applied: list[str] = []
    for record in records:  # as a consumer would: one claim per delivery
        async with engine.begin() as conn:
            event_id = event_of(record).id
            applied += await claim_events(conn, kpi_inbox, [(event_id, "lead.received", "t")])
    assert sorted(applied) == sorted(ids)  # exactly once in effect
    await engine.dispose()


async def test_the_leader_relays_on_its_own_connection(
    database_url: str, kafka_bootstrap: str
) -> None:
    """On PostgreSQL the relay holding the leader lock reads and deletes on that connection,
    each statement committing on its own: no pool checkout (and ping) per batch."""
    await ensure_topics(kafka_bootstrap, 6)
    engine = await _relay_setup(database_url)
    producer = make_producer(kafka_bootstrap, "test-relay-leader")
    await producer.start()
    checkouts: list[Any] = []
    event.listen(engine.sync_engine.pool, "checkout", lambda dbapi, *_: checkouts.append(dbapi))
    relay = OutboxRelay(service="test", engine=engine, table=outbox, producer=producer)
    try:
        assert await relay._lead()
        for _ in range(3):
            async with engine.begin() as conn:
                await add_to_outbox(conn, outbox, [received(), received()])
            assert await relay.publish_batch() == 2
        async with engine.connect() as conn:
            assert await conn.scalar(sa.select(sa.func.count()).select_from(outbox)) == 0
        # The leader's checkout, then one per write above and the count: none by the relay.
        assert len(checkouts) == 1 + 3 + 1
    finally:
        await relay._drop_leadership()
        await producer.stop()
        await engine.dispose()
