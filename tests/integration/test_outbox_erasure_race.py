"""The outbox relay and an erasure at the same time, for intake's and the qualifier's
outboxes: an event the erasure rewrote never goes out with its old bytes once the erasure
has committed.

The relay is held between reading a batch and sending it (`before_send`), and the
erasure runs meanwhile: it must wait for that send (an event read before the erasure
goes out before it commits). An erasure holding the rows when the relay reads makes the
relay wait and send the rewritten event.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.intake.erasure.service import erase_personal_data
from services.intake.keys.source import StoreKeySource
from services.intake.leads.service import accept_lead
from services.intake.tables import outbox as intake_outbox
from services.qualifier.config import DEFAULT_DEFINITION
from services.qualifier.definitions.service import ensure_initial_definition
from services.qualifier.leads.erasure import erase_lead
from services.qualifier.routing.service import qualify_leads
from services.qualifier.tables import outbox as qualifier_outbox
from shared.crypto import new_lead_key, open_event
from shared.db import create_engine, utcnow
from shared.events import TOPIC_RECEIVED, TOPIC_ROUTED, LeadErased, LeadErasedData
from shared.kafka import ensure_topics, make_producer
from shared.keys import KeySource
from shared.migrations import migrate
from shared.outbox import OutboxRelay
from tests.support import StaticKeys, read_topic, received, snapshot


@dataclass(frozen=True)
class Side:
    """One service's outbox: how a lead gets an event there, and how it is erased."""

    service: str
    table: sa.Table
    topic: str
    store: Callable[[AsyncConnection, str], Awaitable[str]]  # (conn, name) -> lead id
    erase: Callable[[AsyncConnection, str], Awaitable[None]]
    # Where its relay gets the lead's key: intake's own store; the qualifier asks intake's
    # key endpoint, here a key the test holds.
    keys: Callable[[AsyncEngine, str], KeySource]


async def _intake_store(conn: AsyncConnection, name: str) -> str:
    lead = snapshot(name=name, email=f"{uuid.uuid4().hex[:10]}@acme-corp.example")
    await accept_lead(conn, lead, dedupe_window=timedelta(0))
    return lead.lead_id


async def _intake_erase(conn: AsyncConnection, lead_id: str) -> None:
    assert await erase_personal_data(conn, lead_id, by="dpo", now=utcnow())


async def _qualifier_store(conn: AsyncConnection, name: str) -> str:
    await ensure_initial_definition(conn, DEFAULT_DEFINITION.read_text(), utcnow())
    event = received(name=name)
    await qualify_leads(conn, [event], now=utcnow())
    return event.subject


async def _qualifier_erase(conn: AsyncConnection, lead_id: str) -> None:
    now = datetime.now(UTC)
    cause = LeadErased(
        source="/intake", time=now, subject=lead_id, data=LeadErasedData(lead_id=lead_id, at=now)
    )
    await erase_lead(conn, cause, now=now)


SIDES = {
    "intake": Side(
        "intake",
        intake_outbox,
        TOPIC_RECEIVED,
        _intake_store,
        _intake_erase,
        lambda engine, _: StoreKeySource(engine),
    ),
    "qualifier": Side(
        "qualifier",
        qualifier_outbox,
        TOPIC_ROUTED,
        _qualifier_store,
        _qualifier_erase,
        lambda _, lead_id: StaticKeys({lead_id: new_lead_key()}),
    ),
}


@pytest.fixture(params=sorted(SIDES))
def side(request: pytest.FixtureRequest) -> Side:
    return SIDES[request.param]


@pytest.fixture
async def engine(database_url: str, side: Side) -> AsyncIterator[AsyncEngine]:
    await asyncio.to_thread(migrate, side.service, database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    await ensure_topics(kafka_bootstrap, 6)
    producer = make_producer(kafka_bootstrap, "test-erasure-race")
    await producer.start()
    yield producer
    await producer.stop()


async def _stored(engine: AsyncEngine, side: Side) -> tuple[str, str]:
    name = f"Zyx Erasable {uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        lead_id = await side.store(conn, name)
    return lead_id, name


async def _published(kafka_bootstrap: str, side: Side, lead_id: str) -> bytes:
    """The value of the lead's one event on the side's topic."""
    (record,) = await read_topic(
        kafka_bootstrap, side.topic, lambda r: r.key == lead_id.encode(), 1
    )
    return record.value or b""


async def test_a_batch_read_before_the_erasure_is_sent_before_it_commits(
    engine: AsyncEngine, side: Side, producer: AIOKafkaProducer, kafka_bootstrap: str
) -> None:
    lead_id, name = await _stored(engine, side)
    read, go = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        read.set()
        await go.wait()

    keys = side.keys(engine, lead_id)
    at_send = await keys.fetch([lead_id])
    relay = OutboxRelay(
        service="test",
        engine=engine,
        table=side.table,
        producer=producer,
        before_send=hold,
        keys=keys,
    )
    sending = asyncio.create_task(relay.publish_batch())
    await read.wait()

    async def erase() -> None:
        async with engine.begin() as conn:
            await side.erase(conn, lead_id)

    erasing = asyncio.create_task(erase())
    # Time enough for an erasure that did not wait to commit (a few statements).
    done, _ = await asyncio.wait({erasing}, timeout=2.0)
    committed_while_the_old_bytes_waited = erasing in done
    go.set()
    assert await sending == 1
    await erasing
    value = await _published(kafka_bootstrap, side, lead_id)
    assert name.encode() not in value  # sealed on the wire
    # Read before the erasure: it went out first, sealed with the key it had then...
    assert getattr(open_event(value, at_send).data, "name", None) == name
    assert not committed_while_the_old_bytes_waited  # ...and the erasure waited for it
    if side.service == "intake":  # the erasure destroyed the key: that copy is noise now
        assert await keys.fetch([lead_id]) == {}
    async with engine.connect() as conn:
        left = (await conn.execute(sa.select(side.table.c.payload))).scalars().all()
    assert not any(name.encode() in payload for payload in left)


async def test_a_relay_reading_during_an_erasure_sends_the_rewritten_event(
    engine: AsyncEngine, side: Side, producer: AIOKafkaProducer, kafka_bootstrap: str
) -> None:
    lead_id, name = await _stored(engine, side)
    keys = side.keys(engine, lead_id)
    relay = OutboxRelay(
        service="test", engine=engine, table=side.table, producer=producer, keys=keys
    )
    async with engine.connect() as conn:
        await conn.begin()
        await side.erase(conn, lead_id)
        sending = asyncio.create_task(relay.publish_batch())
        done, _ = await asyncio.wait({sending}, timeout=1.0)
        assert not done  # it waits for the rows the erasure holds
        await conn.commit()
    assert await sending >= 1
    value = await _published(kafka_bootstrap, side, lead_id)
    assert name.encode() not in value
