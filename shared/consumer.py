"""The consumer loop every service uses: decode, apply in a transaction, then commit offsets.

A batch is applied by the service's handler (which opens one database transaction
and records event ids in its inbox); offsets are committed only after that, so a
crash anywhere redelivers and the inbox drops what was already applied. Messages
that are not Leadflow events, or that the handler rejects for good, are parked on
the dead-letter topic with the reason, and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db import is_unavailable
from shared.events import TOPIC_DEADLETTER, Event, UndecodableEvent, decode_event

log = logging.getLogger(__name__)

EVENTS_APPLIED = Counter(
    "leadflow_events_consumed_total", "Events handed to the service's handler", ["service", "topic"]
)
EVENTS_PARKED = Counter(
    "leadflow_events_deadlettered_total", "Messages parked on the dead-letter topic", ["service"]
)
BATCH_SECONDS = Histogram(
    "leadflow_consumer_batch_seconds", "Time to apply one batch (its transaction included)",
    ["service"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)  # fmt: skip
CONSUMER_RETRIES = Counter(
    "leadflow_consumer_retries_total", "Batches retried after a transient failure", ["service"]
)


Records = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
# Records older than this when handed over waited in aiokafka's buffer (see _top_up).
TOP_UP_AFTER_MS = 20


class TransientFailure(Exception):
    """The database or Kafka cannot serve now: retry the same batch later."""


def is_transient(exc: BaseException) -> bool:
    """Failures that say "try again later", not "this event is bad"."""
    return isinstance(exc, KafkaError | TransientFailure) or is_unavailable(exc)


@dataclass(frozen=True)
class Delivered:
    """A decoded event with where it came from."""

    event: Event
    topic: str
    partition: int
    offset: int


BatchHandler = Callable[[Sequence[Delivered]], Awaitable[None]]


class HeldConnection:
    """One database connection kept for a consumer's transactions, one batch at a time.

    A pool checkout pings the connection first (on asyncpg three round trips: BEGIN, a
    query, ROLLBACK); batches apply one after another, so their handler keeps one
    connection instead. A transaction that fails drops it, so a connection the database
    closed is replaced when the batch is retried.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A transaction on the kept connection: committed on exit, rolled back on error."""
        async with self._lock:
            if self._conn is None:
                self._conn = await self._engine.connect()
            conn = self._conn
            try:
                async with conn.begin():
                    yield conn
            except BaseException:
                self._conn = None
                with contextlib.suppress(Exception):
                    await conn.close()
                raise

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await conn.close()


class EventConsumer:
    def __init__(
        self,
        *,
        service: str,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        handle_batch: BatchHandler,
        max_records: int = 500,
        top_up_wait_ms: int = 0,
        in_flight: int = 1,
    ) -> None:
        self._service = service
        self._top_up_wait_ms = top_up_wait_ms
        self._in_flight = max(1, in_flight)
        self._consumer = consumer
        self._producer = producer
        self._handle_batch = handle_batch
        self._max_records = max_records
        self.started = asyncio.Event()
        self._stopping = asyncio.Event()
        self._uncommitted: dict[TopicPartition, int] = {}
        self._committer: asyncio.Task[None] | None = None

    def request_stop(self) -> None:
        """Finish the batch under way (and commit its offsets), then return from `run`."""
        self._stopping.set()

    async def run(self) -> None:
        """Fetch, apply and commit batches until asked to stop.

        With `in_flight` > 1 the next batches are fetched, decoded and applied while earlier
        ones are still in their transactions, for a handler whose result does not depend on
        the order batches commit in (the KPI fold: any order, the same numbers). Offsets are
        still committed in order, each batch's once it and every batch before it committed;
        when one fails for a transient reason, every batch after it is let finish, then
        all of them are fetched again from the failed one on (the inbox drops what a
        finished one applied).
        """
        await self._start()
        flights: deque[tuple[Records, asyncio.Task[None]]] = deque()
        try:
            backoff = 0.2
            while not self._stopping.is_set():
                batches = await self._consumer.getmany(
                    timeout_ms=500, max_records=self._max_records
                )
                if batches:
                    batches = await self._top_up(batches)
                    flights.append((batches, asyncio.create_task(self._timed_apply(batches))))
                # Retire in order: the oldest batch when no more may fly, when nothing
                # new came, or when it is done anyway.
                while flights and (
                    len(flights) >= self._in_flight or not batches or flights[0][1].done()
                ):
                    failure = await self._retire(flights)
                    if failure is None:
                        backoff = 0.2
                        continue
                    CONSUMER_RETRIES.labels(self._service).inc()
                    log.warning(
                        "%s consumer: %s; retrying in %.1fs", self._service, failure, backoff
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
        except BaseException:
            # Cancelled, or Kafka failed: what is in flight is cancelled (rolled back) too;
            # its offsets were not committed, so it is fetched again.
            for _, task in flights:
                task.cancel()
            await asyncio.gather(*(task for _, task in flights), return_exceptions=True)
            flights.clear()
            raise
        finally:
            try:
                # Stopping: the batches under way finish, and those that committed have
                # their offsets committed.
                while flights:
                    if await self._retire(flights) is not None:
                        break
                if self._committer is not None:
                    await self._committer
            finally:
                await self._consumer.stop()

    async def _timed_apply(self, batches: Records) -> None:
        with BATCH_SECONDS.labels(self._service).time():
            await self._apply(batches)

    async def _retire(self, flights: deque[tuple[Records, asyncio.Task[None]]]) -> Exception | None:
        """Wait for the oldest batch in flight. Applied: its offsets go to be committed
        (None). A transient failure: the batches after it finish, every partition is
        rewound to its first record among them, and the failure is returned. Any other
        failure is raised."""
        batches, task = flights.popleft()
        try:
            await task
        except Exception as exc:
            rest = list(flights)
            flights.clear()
            await asyncio.gather(*(t for _, t in rest), return_exceptions=True)
            if not is_transient(exc):
                raise
            first: dict[TopicPartition, int] = {}
            for failed in (batches, *(b for b, _ in rest)):
                for tp, records in failed.items():
                    first[tp] = min(first.get(tp, records[0].offset), records[0].offset)
            for tp, offset in first.items():
                self._consumer.seek(tp, offset)
            return exc
        self._commit_soon({tp: records[-1].offset + 1 for tp, records in batches.items()})
        return None

    async def _top_up(self, batches: Records) -> Records:
        """Add what the broker got while the last batch was applied.

        aiokafka fetches a partition again only once its fetched records are consumed. So
        while a batch is applied, a fetch returns with the first new records that come,
        and everything after them waits at the broker until that little batch is applied
        in turn: under steady load a record waited for two batches, not one. When the
        records handed over are already old (they waited in the buffer), the fetch sent
        as they were taken brings the rest: one short wait for it joins them to this batch.
        """
        if not self._top_up_wait_ms:
            return batches
        count = sum(len(records) for records in batches.values())
        newest = max(records[-1].timestamp for records in batches.values())
        if count >= self._max_records or time.time() * 1000 - newest < TOP_UP_AFTER_MS:
            return batches
        more = await self._consumer.getmany(
            timeout_ms=self._top_up_wait_ms, max_records=self._max_records - count
        )
        for tp, records in more.items():
            batches.setdefault(tp, []).extend(records)  # later offsets of the same partition
        return batches

    def _commit_soon(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit an applied batch's offsets while the next batch is fetched and applied.

        Its transaction has committed, so waiting for Kafka's answer would only delay the
        next batch. One commit is in flight at a time; offsets applied meanwhile go out
        together in the next one, so commits stay in order.
        """
        if self._committer is not None and self._committer.done():
            self._committer.result()  # an unexpected failure of the last commit surfaces here
        self._uncommitted.update(offsets)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_uncommitted())

    async def _commit_uncommitted(self) -> None:
        while self._uncommitted:
            offsets, self._uncommitted = self._uncommitted, {}
            try:
                await self._consumer.commit(offsets)
            except KafkaError as exc:
                # CommitFailedError after a rebalance, or Kafka gone: the batch is applied
                # (inbox), so redelivery to whoever owns the partition next changes nothing.
                log.info("%s consumer: offset commit failed: %s", self._service, exc)

    async def _start(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                await self._consumer.start()
                self.started.set()
                return
            except KafkaError as exc:
                log.warning("%s consumer: Kafka not reachable (%s); retrying", self._service, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _apply(self, batches: Records) -> None:
        delivered: list[Delivered] = []
        for records in batches.values():
            for record in records:
                try:
                    event = decode_event(record.value or b"")
                except UndecodableEvent as exc:
                    await self._park(record, f"undecodable: {exc}")
                    continue
                delivered.append(Delivered(event, record.topic, record.partition, record.offset))
        if not delivered:
            return
        try:
            await self._handle_batch(delivered)
        except Exception as exc:
            if is_transient(exc):
                raise TransientFailure(str(exc)) from exc
            # Find the bad event(s): apply one by one, parking those that still fail.
            log.exception("%s consumer: batch failed; applying one event at a time", self._service)
            for item in delivered:
                try:
                    await self._handle_batch([item])
                except Exception as item_exc:
                    if is_transient(item_exc):
                        raise TransientFailure(str(item_exc)) from item_exc
                    await self._park_delivered(item, f"handler failed: {item_exc!r}")
        for item in delivered:
            EVENTS_APPLIED.labels(self._service, item.topic).inc()

    async def _park(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        await self._send_deadletter(
            record.value or b"", record.key, record.topic, record.partition, record.offset, reason
        )

    async def _park_delivered(self, item: Delivered, reason: str) -> None:
        await self._send_deadletter(
            item.event.model_dump_json().encode(),
            item.event.subject.encode(),
            item.topic,
            item.partition,
            item.offset,
            reason,
        )

    async def _send_deadletter(
        self, value: bytes, key: bytes | None, topic: str, partition: int, offset: int, reason: str
    ) -> None:
        EVENTS_PARKED.labels(self._service).inc()
        log.error(
            "%s consumer: parked %s[%d]@%d: %s",
            self._service,
            topic,
            partition,
            offset,
            reason[:500],
        )
        await self._producer.send_and_wait(
            TOPIC_DEADLETTER,
            value=value,
            key=key,
            headers=[
                ("dlq_reason", reason[:1000].encode()),
                ("dlq_service", self._service.encode()),
                ("dlq_topic", topic.encode()),
                ("dlq_partition", str(partition).encode()),
                ("dlq_offset", str(offset).encode()),
            ],
        )
