"""A producer that can deliver nothing more is replaced, on real Kafka.

aiokafka's idempotent producer numbers each partition's batches; a batch that failed
(here the broker refuses it as too large for its topic) took its numbers all the same,
so every later batch to that partition is refused with `OutOfOrderSequenceNumber`, the
broker's real answer, however often it is retried: the relay retrying it stayed stuck
(the fault test saw 1,277 acknowledged leads never routed). A new producer (a new
producer id) starts its numbers afresh; the relay sends the outbox again from its first
row, in order, so each event arrives at least once with its id, in order per key.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from services.qualifier.tables import metadata, outbox
from shared.db import create_engine, utcnow
from shared.events import encode_event
from shared.kafka import ProducerFailed, ProducerHolder, make_producer, send_one
from shared.outbox import OutboxRelay
from tests.support import header, read_topic, received

# Small events (about 1 KiB) fit; a 30 KB one does not, until the limit is raised.
SMALL_LIMIT = {"max.message.bytes": "20000"}
BIG = b" " * 30000


@pytest.fixture
async def topic(kafka_bootstrap: str) -> AsyncIterator[str]:
    name = f"test-producer-restart-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 3, 1, topic_configs=SMALL_LIMIT)])
        yield name
    finally:
        await admin.close()


async def _raise_limit(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        limit = {"max.message.bytes": str(1024 * 1024)}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, limit)])
    finally:
        await admin.close()


def _restarts(service: str) -> float:
    value = REGISTRY.get_sample_value(
        "leadflow_kafka_producer_restarts_total", {"service": service}
    )
    return value or 0.0


async def _engine(database_url: str) -> AsyncEngine:
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    return engine


async def _stage(
    engine: AsyncEngine, topic: str, leads: list[str], steps: int
) -> list[tuple[str, str]]:
    """`steps` events a lead, interleaved, in the outbox for `topic`: (lead, id) in order."""
    events = [received(lead_id=lead) for _ in range(steps) for lead in leads]
    async with engine.begin() as conn:
        await conn.execute(
            outbox.insert(),
            [
                {
                    "event_id": e.id,
                    "topic": topic,
                    "key": e.key,
                    "event_type": e.type,
                    "payload": encode_event(e),
                    "created_at": utcnow(),
                }
                for e in events
            ],
        )
    return [(e.key, e.id) for e in events]


async def _read_all(
    bootstrap: str, topic: str, ids: set[str]
) -> list[ConsumerRecord[bytes, bytes]]:
    """The topic from the beginning until each of `ids` was read (copies included)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(60):
            while not ids <= {header(r, "ce_id") for r in found}:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    found.extend(batch)
    finally:
        await consumer.stop()
    return found


async def _outbox_empty(engine: AsyncEngine, seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while True:
            async with engine.connect() as conn:
                if not await conn.scalar(sa.select(sa.func.count()).select_from(outbox)):
                    return
            await asyncio.sleep(0.2)


async def test_a_relay_whose_producer_is_refused_for_good_replaces_it_and_sends_all(
    database_url: str, kafka_bootstrap: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    service = f"test-restart-{uuid.uuid4().hex[:6]}"
    engine = await _engine(database_url)
    holder = ProducerHolder(
        functools.partial(make_producer, kafka_bootstrap, "test-producer-restart"),
        service=service,
    )
    relay = OutboxRelay(
        service=service,
        engine=engine,
        table=outbox,
        producer=holder,
        batch_size=7,
        poll_interval=0.2,
    )
    leads = [str(uuid.uuid4()) for _ in range(6)]
    try:
        before = await _stage(engine, topic, leads, 2)
        while await relay.publish_batch():
            pass
        # A record the broker refuses, sent through the service's producer by a user that
        # does not have it replaced: each lead's partition now has a gap in the producer's
        # numbering (the state the fault test's relay was stuck in), and from now on the
        # broker would take the record.
        first = holder.current
        for lead in leads:
            with pytest.raises(ProducerFailed):
                async with asyncio.timeout(30):
                    await send_one(first, topic, BIG, lead.encode(), [])
        await _raise_limit(kafka_bootstrap, topic)
        after = await _stage(engine, topic, leads, 5)

        restarts = _restarts(service)
        caplog.set_level(logging.WARNING)
        task = asyncio.create_task(relay.run())
        try:
            await _outbox_empty(engine, 90)
        finally:
            relay.request_stop()
            await asyncio.wait_for(task, 30)
        assert holder.current is not first
        assert _restarts(service) >= restarts + 1
        replaced = [r.getMessage() for r in caplog.records if "replacing it" in r.getMessage()]
        assert replaced and all("OutOfOrderSequenceNumber" in m for m in replaced)
        # By type only: none of the broker's text.
        assert not any("out of order sequence" in r.getMessage().lower() for r in caplog.records)
    finally:
        await holder.stop()
        await engine.dispose()

    staged = before + after
    mine = {event_id for _, event_id in staged}
    records = await _read_all(kafka_bootstrap, topic, mine)
    # Every event, with the id it had in the outbox (a resend adds a copy, never a new id).
    assert {header(r, "ce_id") for r in records} == mine
    for lead in leads:
        arrived = [header(r, "ce_id") for r in records if r.key == lead.encode()]
        # In order per key: a resend repeats what came before it, which inboxes drop.
        assert list(dict.fromkeys(arrived)) == [i for key, i in staged if key == lead]


async def test_a_dead_letter_send_refused_for_good_is_retried_on_a_new_producer(
    kafka_bootstrap: str, topic: str
) -> None:
    """The consumer parks through the holder (`send_and_wait`): the send that meets the
    refusal fails (the consumer retries its batch), the retry goes out on a new producer."""
    service = f"test-restart-{uuid.uuid4().hex[:6]}"
    holder = ProducerHolder(
        functools.partial(make_producer, kafka_bootstrap, "test-producer-restart-dlq"),
        service=service,
    )
    try:
        first = await holder.ready()
        await send_one(first, topic, b"before", b"k", [])  # the broker knows the producer
        with pytest.raises(ProducerFailed):
            await send_one(first, topic, BIG, b"k", [])  # a gap on k's partition
        await _raise_limit(kafka_bootstrap, topic)
        with pytest.raises(ProducerFailed):
            await holder.send_and_wait(topic, value=b"parked", key=b"k", headers=[])
        restarts = _restarts(service)
        await holder.send_and_wait(topic, value=b"parked", key=b"k", headers=[])
        assert holder.current is not first
        assert _restarts(service) == restarts + 1
    finally:
        await holder.stop()
    records = await read_topic(kafka_bootstrap, topic, lambda r: r.value == b"parked", 1)
    assert [r.key for r in records] == [b"k"]


async def test_a_producer_whose_sender_stopped_is_replaced_before_the_next_send(
    kafka_bootstrap: str, topic: str
) -> None:
    service = f"test-restart-{uuid.uuid4().hex[:6]}"
    holder = ProducerHolder(
        functools.partial(make_producer, kafka_bootstrap, "test-producer-restart-sender"),
        service=service,
    )
    try:
        first = await holder.ready()
        await first.stop()  # its sender task is over: nothing sent through it would go out
        with pytest.raises(ProducerFailed):
            await send_one(first, topic, b"lost", b"k", [])
        restarts = _restarts(service)
        second = await holder.ready()
        assert second is not first
        assert _restarts(service) == restarts + 1
        await holder.send_and_wait(topic, value=b"sent", key=b"k", headers=[])
    finally:
        await holder.stop()
    records = await read_topic(kafka_bootstrap, topic, lambda r: r.value == b"sent", 1)
    assert len(records) == 1
