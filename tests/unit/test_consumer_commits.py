"""The consumer loop commits a batch's offsets after its transaction, without waiting for them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from aiokafka import TopicPartition

from shared.consumer import EventConsumer
from shared.delivery import BatchHandler, Delivered
from shared.events import TOPIC_RECEIVED
from tests.support import ReceivedRecord

TP = TopicPartition(TOPIC_RECEIVED, 0)


class _SlowCommitConsumer:
    """Hands out one single-record batch per getmany; commits wait for `release`."""

    def __init__(self, batches: int) -> None:
        self.queue = [{TP: [ReceivedRecord(offset)]} for offset in range(batches)]
        self.release = asyncio.Event()
        self.commits: list[dict[TopicPartition, int]] = []
        self.stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, Any]:
        await asyncio.sleep(0)  # a real fetch yields to the loop
        if self.queue:
            return self.queue.pop(0)
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await self.release.wait()
        self.commits.append(dict(offsets))


def _loop(kafka: _SlowCommitConsumer, handle: BatchHandler) -> EventConsumer:
    return EventConsumer(
        service="test",
        consumer_factory=lambda: cast(Any, kafka),
        producer=cast(Any, None),
        handle_batch=handle,
    )


async def test_batches_go_on_while_offsets_commit_in_order() -> None:
    kafka = _SlowCommitConsumer(batches=3)
    applied: list[int] = []
    all_applied = asyncio.Event()

    async def handle(batch: Sequence[Delivered]) -> None:
        applied.extend(d.offset for d in batch)
        if len(applied) == 3:
            all_applied.set()

    loop = _loop(kafka, handle)
    task = asyncio.create_task(loop.run())
    # The first commit has not been answered, yet every batch was applied.
    await asyncio.wait_for(all_applied.wait(), 5)
    assert applied == [0, 1, 2] and kafka.commits == []
    loop.request_stop()
    kafka.release.set()
    await asyncio.wait_for(task, 5)
    # One commit at a time, in order; what was applied meanwhile went out together.
    assert kafka.commits == [{TP: 1}, {TP: 3}]
    assert kafka.stopped


async def test_stopping_waits_for_the_last_commit() -> None:
    kafka = _SlowCommitConsumer(batches=1)
    done = asyncio.Event()

    async def handle(batch: Sequence[Delivered]) -> None:
        done.set()

    loop = _loop(kafka, handle)
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(done.wait(), 5)
    loop.request_stop()
    await asyncio.sleep(0.6)  # past getmany's timeout: the loop is only waiting for Kafka
    assert not task.done() and not kafka.stopped
    kafka.release.set()
    await asyncio.wait_for(task, 5)
    assert kafka.commits == [{TP: 1}] and kafka.stopped
