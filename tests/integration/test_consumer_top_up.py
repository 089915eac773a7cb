"""On a real broker: records that arrive while a batch is applied make up the next batch
together, instead of the first of them going alone and the rest waiting a batch more."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from shared.consumer import EventConsumer
from shared.delivery import Delivered
from shared.events import encode_event
from shared.kafka import FetchPolicy, ensure_topics, make_consumer
from tests.support import received

ARRIVING = 5


async def _batches_applied(kafka_bootstrap: str, top_up_wait_ms: int) -> list[int]:
    """Sizes of the batches applied: one record, then ARRIVING records sent 50 ms apart
    while that first one is applied (it takes half a second)."""
    topic = f"top-up-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, partitions=1, topics=[topic])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    sizes: list[int] = []
    applying, done = asyncio.Event(), asyncio.Event()

    async def handle(batch: Sequence[Delivered]) -> None:
        sizes.append(len(batch))
        if len(sizes) == 1:
            applying.set()
            await asyncio.sleep(0.5)
        if sum(sizes) == 1 + ARRIVING:
            done.set()

    loop = EventConsumer(
        service="test",
        consumer_factory=lambda: make_consumer(
            kafka_bootstrap, f"g-{topic}", [topic], "test", FetchPolicy(max_wait_ms=500)
        ),
        producer=producer,
        handle_batch=handle,
        top_up_wait_ms=top_up_wait_ms,
    )
    task = asyncio.create_task(loop.run())
    try:
        await asyncio.wait_for(loop.started.wait(), 30)
        await asyncio.sleep(1)  # the group is joined and the fetcher waits at the broker
        await producer.send_and_wait(topic, encode_event(received()))
        await asyncio.wait_for(applying.wait(), 30)
        for _ in range(ARRIVING):
            await producer.send_and_wait(topic, encode_event(received()))
            await asyncio.sleep(0.05)
        await asyncio.wait_for(done.wait(), 30)
    finally:
        loop.request_stop()
        await asyncio.wait_for(task, 30)
        await producer.stop()
    return sizes


async def test_what_arrived_during_a_batch_is_applied_together(kafka_bootstrap: str) -> None:
    # Without topping up, aiokafka's fetch during the batch returned with the first record
    # that arrived, and the others waited for that one to be applied.
    assert (await _batches_applied(kafka_bootstrap, top_up_wait_ms=0))[:2] == [1, 1]
    assert await _batches_applied(kafka_bootstrap, top_up_wait_ms=1000) == [1, ARRIVING]
