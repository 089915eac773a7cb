"""The consumer loop every service uses: decode, apply in a transaction, then commit offsets.

A batch is applied by the service's handler (which opens one database transaction
and records event ids in its inbox); offsets are committed only after that, so a
crash anywhere redelivers and the inbox drops what was already applied. Messages
that are not Leadflow events, or that the handler rejects for good, are parked on
the dead-letter topic with the reason, and the loop goes on; so is an event the handler
has not applied within the batch time limit. What the loop logs or parks names a failure
by its type and SQLSTATE, never by its message (a database error quotes its parameters).

When something unexpected escapes the loop, `run` is simply called again (the runtime
supervises it): each run starts a fresh Kafka consumer, as aiokafka's cannot be restarted.
`liveness` says when the loop last made progress, for /readyz and /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Histogram

from shared.consumer_liveness import ConsumerLiveness, export_liveness
from shared.db import error_kind
from shared.deadletter import DeadLetters, undecodable_reason
from shared.delivery import (
    BatchHandler,
    Delivered,
    HandlerTimedOut,
    TransientFailure,
    is_transient,
)
from shared.events import UndecodableEvent
from shared.kafka import ProducerHolder, as_holder
from shared.keys import KeySource, open_records

log = logging.getLogger(__name__)

EVENTS_APPLIED = Counter(
    "leadflow_events_consumed_total", "Events handed to the service's handler", ["service", "topic"]
)
BATCH_SECONDS = Histogram(
    "leadflow_consumer_batch_seconds",
    "Time to apply one batch (its transaction included)",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_RETRIES = Counter(
    "leadflow_consumer_retries_total", "Batches retried after a transient failure", ["service"]
)
CONSUMER_RESTARTS = Counter(
    "leadflow_consumer_restarts_total",
    "Times the consumer loop started again, with a fresh Kafka consumer, after a crash",
    ["service"],
)


Records = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
# Records older than this when handed over waited in aiokafka's buffer (see _top_up).
TOP_UP_AFTER_MS = 20
# How long the database gets to answer when an event alone has outlasted the batch bound.
HEALTH_PROBE_SECONDS = 5.0


class EventConsumer:
    def __init__(
        self,
        *,
        service: str,
        consumer_factory: Callable[[], AIOKafkaConsumer],
        producer: ProducerHolder | AIOKafkaProducer,
        handle_batch: BatchHandler,
        max_records: int = 500,
        top_up_wait_ms: int = 0,
        in_flight: int = 1,
        batch_timeout: float = 30.0,
        healthy: Callable[[], Awaitable[bool]] | None = None,
        keys: KeySource | None = None,
        keyed_types: Sequence[str] = (),
    ) -> None:
        """`consumer_factory` makes the Kafka consumer of each run. `batch_timeout` bounds
        the handler's time for a batch, and then for each of its events alone. `healthy`
        (the database answers) is asked before an event that outlasted it is parked: when
        it says no, the outage is to blame and the batch is retried instead. Sealed fields
        of `keyed_types` events are opened with `keys`; any other's are left out."""
        self._service = service
        self._keys, self._keyed_types = keys, keyed_types
        self._top_up_wait_ms = top_up_wait_ms
        self._in_flight = max(1, in_flight)
        self._new_consumer = consumer_factory
        self._consumer = consumer_factory()
        self._runs = 0
        self._deadletters = DeadLetters(service, as_holder(producer, service))
        self._handle_batch = handle_batch
        self._max_records = max_records
        self._batch_timeout = batch_timeout
        self._healthy = healthy
        self.started = asyncio.Event()
        self._stopping = asyncio.Event()
        self._uncommitted: dict[TopicPartition, int] = {}
        self._committer: asyncio.Task[None] | None = None
        # Liveness: when the loop last polled with success; the partitions rewound after a
        # failure and not applied since (while one is still ours, the loop is stuck); and
        # the next offset to apply of each partition (for the lag).
        self._last_poll = time.monotonic()
        self._rewound: set[TopicPartition] = set()
        self._next: dict[TopicPartition, int] = {}
        export_liveness(service, self)

    def liveness(self) -> ConsumerLiveness:
        assigned = self._assignment()
        lag: int | None = None
        for tp in assigned:
            at = self._next.get(tp)
            end = self._consumer.highwater(tp)  # None until a fetch told it
            if at is not None and end is not None:
                lag = (lag or 0) + max(0, end - at)
        return ConsumerLiveness(
            self._service, time.monotonic() - self._last_poll, len(assigned), lag
        )

    def _assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment())  # empty before the consumer joined

    def _polled(self) -> None:
        """A poll succeeded, unless a partition that is still ours waits to be applied again."""
        if not self._rewound & self._assignment():
            self._last_poll = time.monotonic()

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
        if self._runs:
            # The last run stopped its consumer (it died of something unexpected): aiokafka
            # cannot start a consumer twice, so this run joins the group with a new one.
            CONSUMER_RESTARTS.labels(self._service).inc()
            self._consumer = self._new_consumer()
        self._runs += 1
        # What the last run left is the last consumer's: its partitions are fetched again
        # from their committed offsets (the inbox drops what was applied).
        self._uncommitted, self._committer = {}, None
        self._rewound.clear()
        self._next.clear()
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
                    for tp, records in batches.items():
                        self._next.setdefault(tp, records[0].offset)
                    flights.append((batches, asyncio.create_task(self._timed_apply(batches))))
                elif not flights:
                    self._polled()
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
                        "%s consumer: %s; retrying in %.1fs",
                        self._service,
                        error_kind(failure),
                        backoff,
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
        rewound to its first record among them, and the failure is returned. Timed out: the
        batches after it finish, then its events are applied one at a time (see
        `_apply_one_by_one`). Any other failure is raised."""
        batches, task = flights.popleft()
        try:
            await task
        except Exception as exc:
            rest = list(flights)
            flights.clear()
            later = await asyncio.gather(*(t for _, t in rest), return_exceptions=True)
            if isinstance(exc, HandlerTimedOut):
                # Only now, with nothing else in flight, are its events tried alone: a batch
                # in flight beside a hung one may have waited for its locks, and timed out
                # for no fault of its own events.
                try:
                    await self._apply_one_by_one(exc.batch, exc)
                except Exception as search_exc:
                    if not is_transient(search_exc):
                        raise
                    exc = search_exc
                else:
                    self._count(exc.batch)
                    self._applied(batches)
                    if any(isinstance(outcome, BaseException) for outcome in later):
                        self._rewind([b for b, _ in rest])  # fetched again, timed out or not
                    else:
                        for b, _ in rest:
                            self._applied(b)
                    return None
            elif not is_transient(exc):
                raise
            self._rewind([batches, *(b for b, _ in rest)])
            return exc
        self._applied(batches)
        return None

    def _applied(self, batches: Records) -> None:
        offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
        self._next.update(offsets)
        self._rewound.difference_update(offsets)
        self._polled()
        self._commit_soon(offsets)

    def _rewind(self, failed: Sequence[Records]) -> None:
        """Fetch these batches again: each partition from its first record among them."""
        first: dict[TopicPartition, int] = {}
        for batches in failed:
            for tp, records in batches.items():
                first[tp] = min(first.get(tp, records[0].offset), records[0].offset)
        # A rebalance meanwhile may have given a partition to another replica (aiokafka
        # refuses to seek it): that one starts from the committed offset. One given back
        # to this consumer starts there too, and seeking it skips only applied records.
        assigned = self._assignment()
        for tp, offset in first.items():
            if tp in assigned:
                self._consumer.seek(tp, offset)
                self._rewound.add(tp)
                self._next[tp] = offset

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
                log.info("%s consumer: offset commit failed: %s", self._service, error_kind(exc))

    async def _start(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                await self._consumer.start()
                self.started.set()
                return
            except KafkaError as exc:
                log.warning(
                    "%s consumer: Kafka not reachable (%s); retrying",
                    self._service,
                    error_kind(exc),
                )
                # A start that failed half-way may have left state a second start refuses.
                with contextlib.suppress(Exception):
                    await self._consumer.stop()
                self._consumer = self._new_consumer()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _apply(self, batches: Records) -> None:
        delivered: list[Delivered] = []
        every = [r for records in batches.values() for r in records]
        read = await open_records(self._keys, self._keyed_types, every)
        for record, event in zip(every, read, strict=True):
            if isinstance(event, UndecodableEvent):
                await self._deadletters.park_record(record, undecodable_reason(event))
            else:
                item = Delivered(event, record.topic, record.partition, record.offset, record.value)
                delivered.append(item)
        if not delivered:
            return
        try:
            await self._bounded(delivered)
        except HandlerTimedOut:
            raise  # searched in turn, with nothing else in flight (see _retire)
        except Exception as exc:
            await self._apply_one_by_one(delivered, exc)
        self._count(delivered)

    def _count(self, delivered: Sequence[Delivered]) -> None:
        for item in delivered:
            EVENTS_APPLIED.labels(self._service, item.topic).inc()

    async def _apply_one_by_one(self, delivered: Sequence[Delivered], exc: Exception) -> None:
        """Find the bad event(s) of a batch that failed: apply one by one, park those that
        still fail."""
        if is_transient(exc):
            raise TransientFailure(error_kind(exc)) from exc
        if isinstance(exc, HandlerTimedOut) and not await self._database_answers():
            raise TransientFailure("the database does not answer") from exc
        log.error(
            "%s consumer: a batch of %d events failed (%s); applying them one at a time",
            self._service,
            len(delivered),
            error_kind(exc),
        )
        for item in delivered:
            try:
                await self._bounded([item])
            except Exception as item_exc:
                await self._deadletters.park_delivered(item, await self._park_reason(item_exc))

    async def _park_reason(self, exc: Exception) -> str:
        """Why an event applied alone is parked; raises TransientFailure when the failure
        is not the event's (the batch is retried)."""
        if is_transient(exc):
            raise TransientFailure(error_kind(exc)) from exc
        if isinstance(exc, HandlerTimedOut):
            if not await self._database_answers():
                raise TransientFailure("the database does not answer") from exc
            return f"handler timed out after {self._batch_timeout:g}s"
        return f"handler failed: {error_kind(exc)}"

    async def _bounded(self, batch: Sequence[Delivered]) -> None:
        """The handler on `batch`, given up (and its transaction rolled back) after the bound."""
        bound = asyncio.timeout(self._batch_timeout)
        try:
            async with bound:
                await self._handle_batch(batch)
        except TimeoutError:
            if bound.expired():
                raise HandlerTimedOut(batch, self._batch_timeout) from None
            raise  # the handler's own (a driver's connect timeout): transient

    async def _database_answers(self) -> bool:
        """Whether the handler's dependencies answer, when an event seems to hang it: if
        they do not, it is an outage, and parking every event would lose them all."""
        if self._healthy is None:
            return True
        try:
            async with asyncio.timeout(HEALTH_PROBE_SECONDS):
                return await self._healthy()
        except Exception:
            return False
