"""Batches in flight: the next batch is applied while the last one's transaction runs, and
offsets are still committed in order; a transient failure rewinds to the failed batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from aiokafka import TopicPartition

from shared.consumer import EventConsumer
from shared.delivery import Delivered, TransientFailure
from shared.events import TOPIC_RECEIVED
from tests.support import ReceivedRecord

TP = TopicPartition(TOPIC_RECEIVED, 0)


class _Partition:
    """One partition of single-record batches, with a position that `seek` moves."""

    def __init__(self, records: int) -> None:
        self.records = records
        self.position = 0
        self.commits: list[int] = []
        self.seeks: list[int] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, Any]:
        await asyncio.sleep(0)
        if self.position < self.records:
            self.position += 1
            return {TP: [ReceivedRecord(self.position - 1)]}
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)
        self.position = offset

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets[TP])


def _loop(kafka: _Partition, handle: Any, in_flight: int) -> EventConsumer:
    return EventConsumer(
        service="test",
        consumer_factory=lambda: cast(Any, kafka),
        producer=cast(Any, None),
        handle_batch=handle,
        in_flight=in_flight,
    )


async def _run_until(loop: EventConsumer, done: asyncio.Event) -> None:
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(done.wait(), 5)
    loop.request_stop()
    await asyncio.wait_for(task, 5)


async def test_the_next_batch_is_applied_while_the_first_is_in_its_transaction() -> None:
    kafka = _Partition(records=2)
    second_started, done = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def handle(batch: Sequence[Delivered]) -> None:
        offset = batch[0].offset
        order.append(f"start {offset}")
        if offset == 0:
            # The first batch's transaction ends only once the second batch has begun.
            await asyncio.wait_for(second_started.wait(), 5)
        else:
            second_started.set()
        order.append(f"end {offset}")
        if len(order) == 4:
            done.set()

    await _run_until(_loop(kafka, handle, in_flight=2), done)
    assert order == ["start 0", "start 1", "end 1", "end 0"]
    # Offsets in order all the same: the second batch's only with or after the first's.
    assert kafka.commits and kafka.commits[-1] == 2
    assert kafka.commits == sorted(kafka.commits)


async def test_one_in_flight_applies_batches_one_after_another() -> None:
    kafka = _Partition(records=3)
    active, most, done = 0, 0, asyncio.Event()
    applied: list[int] = []

    async def handle(batch: Sequence[Delivered]) -> None:
        nonlocal active, most
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.01)
        active -= 1
        applied.append(batch[0].offset)
        if len(applied) == 3:
            done.set()

    await _run_until(_loop(kafka, handle, in_flight=1), done)
    assert most == 1 and applied == [0, 1, 2]


async def test_a_transient_failure_rewinds_to_the_failed_batch() -> None:
    kafka = _Partition(records=3)
    attempts: dict[int, int] = {}
    done = asyncio.Event()

    async def handle(batch: Sequence[Delivered]) -> None:
        offset = batch[0].offset
        attempts[offset] = attempts.get(offset, 0) + 1
        if offset == 0 and attempts[offset] == 1:
            await asyncio.sleep(0.05)  # batch 1 finishes first, then batch 0 fails
            raise TransientFailure("database restarting")
        if set(attempts) == {0, 1, 2} and attempts[0] == 2:
            done.set()

    await _run_until(_loop(kafka, handle, in_flight=2), done)
    # Both batches in flight ran; the failed one and the one after it came again.
    assert kafka.seeks == [0]
    assert attempts[0] == 2 and attempts[1] == 2
    # Nothing was committed past the failed batch before it was applied.
    assert kafka.commits == sorted(kafka.commits) and kafka.commits[-1] == 3
    assert kafka.commits[0] >= 1
