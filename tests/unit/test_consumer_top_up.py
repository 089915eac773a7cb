"""When the consumer loop asks the broker again before applying a batch (see
EventConsumer._top_up; the real broker's side is tests/integration/test_consumer_top_up.py)."""

from __future__ import annotations

import time
from typing import Any, cast

from aiokafka import TopicPartition

from shared.consumer import TOP_UP_AFTER_MS, EventConsumer

TP = TopicPartition("t", 0)


class _Record:
    def __init__(self, offset: int, age_ms: float) -> None:
        self.offset = offset
        self.timestamp = int(time.time() * 1000 - age_ms)


class _Broker:
    """What a second fetch would bring: records 10 and 11."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, int]] = []

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, Any]:
        self.asked.append((timeout_ms, max_records))
        return {TP: [_Record(10, 0), _Record(11, 0)]}


def _loop(broker: _Broker, *, top_up_wait_ms: int, max_records: int = 500) -> EventConsumer:
    return EventConsumer(
        service="test",
        consumer_factory=lambda: cast(Any, broker),
        producer=cast(Any, None),
        handle_batch=cast(Any, None),
        max_records=max_records,
        top_up_wait_ms=top_up_wait_ms,
    )


async def _offsets(loop: EventConsumer, age_ms: float, count: int = 2) -> list[int]:
    batches: Any = {TP: [_Record(i, age_ms) for i in range(count)]}
    topped = await loop._top_up(batches)
    return [r.offset for r in topped[TP]]


async def test_records_that_waited_are_joined_by_what_came_meanwhile() -> None:
    broker = _Broker()
    loop = _loop(broker, top_up_wait_ms=10, max_records=5)
    assert await _offsets(loop, age_ms=TOP_UP_AFTER_MS + 50) == [0, 1, 10, 11]
    assert broker.asked == [(10, 3)]  # a short wait, for no more than the batch has room for


async def test_fresh_records_full_batches_and_batch_consumers_do_not_wait() -> None:
    broker = _Broker()
    assert await _offsets(_loop(broker, top_up_wait_ms=10), age_ms=0) == [0, 1]
    full = _loop(broker, top_up_wait_ms=10, max_records=2)
    assert await _offsets(full, age_ms=1000) == [0, 1]
    assert await _offsets(_loop(broker, top_up_wait_ms=0), age_ms=1000) == [0, 1]
    assert broker.asked == []
