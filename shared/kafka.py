"""Kafka plumbing: the idempotent producer (and its replacement after a fatal error),
manual-commit consumers and reachability. Topics: shared.topics; how clients connect
(SASL, TLS): shared.kafka_security."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from aiokafka.producer.message_accumulator import BatchBuilder
from prometheus_client import Counter

from shared.db import error_kind
from shared.kafka_security import Kafka, client_kwargs
from shared.partitioner import KeyPartitioner
from shared.topics import ensure_topics as ensure_topics

log = logging.getLogger(__name__)

# The bytes a produce batch (one partition's records in one request) may hold. The
# broker's work is mostly per batch: with aiokafka's 16 KiB a batch held about fifteen
# 1 KiB lead events, and relaying them cost the broker 40-85 us of CPU an event against
# 10 us with batches of 256 KiB (the relay's own cost fell from about 30 to 18 us). A
# batch is still sent after `linger_ms` however little it holds; far below the broker's
# 1 MiB `message.max.bytes`.
PRODUCER_BATCH_BYTES = 256 * 1024
_PARTITIONER = KeyPartitioner()

PRODUCER_RESTARTS = Counter(
    "leadflow_kafka_producer_restarts_total",
    "Kafka producers replaced by a new one (a new producer id) after a fatal error",
    ["service"],
)

# The broker's answers after which an idempotent producer's id and sequence numbers are
# no good (aiokafka 0.14 cannot reset them or bump the epoch, as the Java client does).
_FATAL_ERRORS = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    ProducerFenced,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
)


class ProducerFailed(KafkaError):
    """The producer will deliver nothing more: a delivery failed or its sender stopped.

    A failed delivery already took its sequence numbers, so each later batch to its
    partition is refused (`OutOfOrderSequenceNumber`) however often it is retried; a
    stopped sender delivers nothing at all. The cause is the error that did it."""

    def __str__(self) -> str:
        # The cause by type only: a broker's text is not ours to vouch for.
        reason = str(self.args[0]) if self.args else "failed"
        cause = self.__cause__
        return f"{reason} ({type(cause).__name__})" if cause is not None else reason


def make_producer(kafka: Kafka, client_id: str) -> AIOKafkaProducer:
    """Idempotent, acks=all: an acknowledged send is on every in-sync replica, once
    (at least min.insync.replicas of them, or the send is refused)."""
    return AIOKafkaProducer(
        **client_kwargs(kafka),
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        partitioner=_PARTITIONER,
        linger_ms=2,
        max_batch_size=PRODUCER_BATCH_BYTES,
        request_timeout_ms=15000,
        retry_backoff_ms=200,
    )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A keyed record to publish."""

    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


async def send_all(producer: AIOKafkaProducer, records: Sequence[Outgoing]) -> None:
    """Publish `records`, each on the partition its key maps to (`KeyPartitioner`, the one
    `make_producer`'s `send` uses: the Java client's choice), in order per partition;
    return once Kafka has acknowledged all of them, else raise the first failure.

    Each partition's records go as whole batches (`send_batch`): sent one at a time,
    each record cost aiokafka a future, a partitioner call and an accumulator lookup,
    about half of what relaying an event cost the process.
    """
    partitions: dict[str, list[int]] = {}
    by_partition: dict[tuple[str, int], list[Outgoing]] = {}
    for record in records:
        known = partitions.get(record.topic)
        if known is None:
            # Waits for the topic's metadata, as `send` does.
            known = partitions[record.topic] = sorted(await producer.partitions_for(record.topic))
        partition = _PARTITIONER(record.key, known, known)
        by_partition.setdefault((record.topic, partition), []).append(record)
    deliveries: list[asyncio.Future[object]] = []
    with _sender_checked(producer):
        for (topic, partition), mine in by_partition.items():
            batch = producer.create_batch()
            for record in mine:
                if not _append(batch, record):
                    deliveries.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    _append(batch, record)
            batch.close()  # nothing else joins it: `send` would otherwise add to an open batch
            deliveries.append(await producer.send_batch(batch, topic, partition=partition))
    await _delivered(producer, deliveries)


async def send_one(
    producer: AIOKafkaProducer,
    topic: str,
    value: bytes,
    key: bytes | None,
    headers: list[tuple[str, bytes]],
) -> None:
    """`producer.send_and_wait`, raising `ProducerFailed` as `send_all` does."""
    with _sender_checked(producer):
        delivery = await producer.send(topic, value=value, key=key, headers=headers)
    await _delivered(producer, [delivery])


@contextlib.contextmanager
def _sender_checked(producer: AIOKafkaProducer) -> Iterator[None]:
    """A send refused because the sender stopped (aiokafka raises its error again) becomes
    `ProducerFailed`; others (no metadata yet, a full buffer) are the producer's to retry."""
    if (failure := _sender_failure(producer)) is not None:
        raise ProducerFailed("the producer's sender stopped") from failure
    try:
        yield
    except KafkaError as exc:
        if _sender_failure(producer) is not None:
            raise ProducerFailed("the producer's sender stopped") from exc
        raise


async def _delivered(producer: AIOKafkaProducer, deliveries: Sequence[asyncio.Future[Any]]) -> None:
    """Wait for `deliveries`; `ProducerFailed` when one fails (the idempotent producer
    retries what can be retried itself) or when the sender stops first (what it had not
    sent yet would never be delivered nor failed)."""
    delivered = asyncio.gather(*deliveries)
    sender = _sender_task(producer)
    if sender is not None and not delivered.done():
        watched: list[asyncio.Future[Any]] = [delivered, sender]
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if not delivered.done():
            # Left to the producer's closing; its failure, if it comes, is not news.
            delivered.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise ProducerFailed("the producer's sender stopped") from _sender_failure(producer)
    try:
        await delivered
    except KafkaError as exc:
        raise ProducerFailed("a delivery failed") from exc


def _sender_task(producer: AIOKafkaProducer) -> asyncio.Task[None] | None:
    # aiokafka keeps the task that sends the batches private; None before `start`.
    task: asyncio.Task[None] | None = getattr(
        getattr(producer, "_sender", None), "sender_task", None
    )
    return task


def _sender_failure(producer: AIOKafkaProducer) -> BaseException | None:
    """Why the producer's sender stopped, if it did (a fatal error, or the producer stopped)."""
    task = _sender_task(producer)
    if task is None or not task.done():
        return None
    if task.cancelled():
        return ProducerFailed("the producer was stopped")
    return task.exception() or ProducerFailed("the producer's sender returned")


def is_fatal(producer: AIOKafkaProducer, exc: BaseException) -> bool:
    """Whether `exc`, raised by a send through `producer`, means the producer must go."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (ProducerFailed, *_FATAL_ERRORS)):
            return True
        seen = seen.__cause__
    return _sender_failure(producer) is not None


class ProducerHolder:
    """A service's one idempotent producer, replaced by a new one (a new producer id) once
    it can deliver nothing more; its users take `ready()`'s producer for each send.

    Whoever sees a send fail calls `failed`; the next `ready()` closes the producer and
    starts a new one (the old is closed first, so no batch of it lands after the new
    one's). What the old one had not delivered is sent again by its users: the outbox
    relay deletes rows only once acknowledged and resends from its first row, in order;
    a resend is a duplicate with the same event id, which consumers' inboxes drop.
    """

    def __init__(
        self, factory: Callable[[], AIOKafkaProducer], *, service: str, replaceable: bool = True
    ) -> None:
        """`factory` makes each producer (unstarted); see `of` for one never replaced."""
        self._factory: Callable[[], AIOKafkaProducer] | None = factory if replaceable else None
        self._service = service
        self._producer = factory()
        self._started = not replaceable
        self._failed: AIOKafkaProducer | None = None
        self._stopped = False
        self._lock = asyncio.Lock()

    @classmethod
    def of(cls, producer: AIOKafkaProducer, service: str) -> ProducerHolder:
        """A started producer, never replaced: its owner's (a test's) to start and stop."""
        return cls(lambda: producer, service=service, replaceable=False)

    @property
    def current(self) -> AIOKafkaProducer:
        return self._producer

    def failed(self, producer: AIOKafkaProducer, exc: BaseException) -> None:
        """A send through `producer` raised `exc`: if that is fatal, the next `ready()`
        replaces it. Logged by type only (a broker's text is not ours to vouch for)."""
        if producer is not self._producer or self._factory is None:
            return
        if self._failed is not producer and is_fatal(producer, exc):
            self._failed = producer
            log.warning(
                "%s: the Kafka producer can deliver nothing more (%s); replacing it",
                self._service,
                error_kind(exc),
            )

    async def ready(self) -> AIOKafkaProducer:
        """The current producer, started; a failed one (or one whose sender stopped) is
        replaced first. Raises (KafkaError, OSError) while Kafka cannot be reached."""
        async with self._lock:
            if self._factory is None:
                return self._producer
            if self._stopped:  # a user still running at shut-down: no new producer for it
                raise ProducerFailed("the producer was stopped")
            if (
                self._failed is None
                and self._started
                and (failure := _sender_failure(self._producer)) is not None
            ):
                self.failed(self._producer, failure)
            if self._failed is self._producer:
                await _close(self._producer)
                self._producer, self._failed, self._started = self._factory(), None, False
                PRODUCER_RESTARTS.labels(self._service).inc()
            if not self._started:
                await self._producer.start()
                self._started = True
            return self._producer

    async def send_and_wait(
        self, topic: str, *, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        """Publish one record through the current producer (`send_one`); a fatal failure
        has the producer replaced before the caller's retry."""
        producer = await self.ready()
        try:
            await send_one(producer, topic, value, key, headers)
        except KafkaError as exc:
            self.failed(producer, exc)
            raise

    async def stop(self) -> None:
        async with self._lock:
            self._stopped = True
            if self._factory is not None:
                await self._producer.stop()


def as_holder(producer: AIOKafkaProducer | ProducerHolder, service: str) -> ProducerHolder:
    return (
        producer if isinstance(producer, ProducerHolder) else ProducerHolder.of(producer, service)
    )


async def _close(producer: AIOKafkaProducer, seconds: float = 5.0) -> None:
    """Stop a producer being replaced; one that will not flush in time is closed without."""
    try:
        async with asyncio.timeout(seconds):
            await producer.stop()
        return
    except TimeoutError:
        log.warning("a failed Kafka producer did not stop in %.0fs; closing it", seconds)
    except Exception as exc:
        log.warning("stopping a failed Kafka producer raised %s; closing it", error_kind(exc))
    task = _sender_task(producer)
    if task is not None and not task.done():
        task.cancel()
    with contextlib.suppress(Exception):
        await producer.client.close()


def _append(batch: BatchBuilder, record: Outgoing) -> bool:
    """False when the batch is full; a new batch always takes its first record."""
    added = batch.append(timestamp=None, key=record.key, value=record.value, headers=record.headers)
    return added is not None


@dataclass(frozen=True)
class FetchPolicy:
    """How a consumer fetches.

    A fetch returns once `min_bytes` are there or `max_wait_ms` have passed. The defaults
    suit a consumer whose latency matters (the qualifier's decisions): a fetch returns with
    the first new record, and `top_up_wait_ms` lets a batch take in what came meanwhile (see
    shared.consumer.EventConsumer). A consumer whose readers can wait fetches in batches.
    """

    max_wait_ms: int = 50
    min_bytes: int = 1
    top_up_wait_ms: int = 10
    # The most a fetch takes of one partition (aiokafka's default: 1 MB). A response of a
    # few partitions is held whole while decoded, so a backlog costs this many bytes times
    # the partitions in memory at once.
    max_partition_bytes: int = 1024 * 1024
    # The most one fetch response holds across its partitions (aiokafka's default: 50 MB).
    max_bytes: int = 50 * 1024 * 1024


def make_consumer(
    kafka: Kafka,
    group_id: str,
    topics: Iterable[str],
    client_id: str,
    fetch: FetchPolicy = FetchPolicy(),
) -> AIOKafkaConsumer:
    """Auto-commit off: offsets are committed only after the database transaction."""
    return AIOKafkaConsumer(
        *topics,
        **client_kwargs(kafka),
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=500,
        # aiokafka leaves a partition out of the next fetch while its records wait to be
        # consumed for over 100 ms (a slow batch); its new records then wait for that
        # fetch to return, so a short wait bounds the stall (at aiokafka's default 500 ms
        # it was the e2e p99).
        fetch_max_wait_ms=fetch.max_wait_ms,
        fetch_min_bytes=fetch.min_bytes,
        max_partition_fetch_bytes=fetch.max_partition_bytes,
        fetch_max_bytes=fetch.max_bytes,
        session_timeout_ms=10000,
        heartbeat_interval_ms=2000,
        retry_backoff_ms=200,
    )


async def kafka_reachable(producer: AIOKafkaProducer, wait_seconds: float = 2.0) -> bool:
    """True when the cluster answers a metadata request within `wait_seconds`."""
    try:
        async with asyncio.timeout(wait_seconds):
            await producer.client.fetch_all_metadata()
        return True
    except (TimeoutError, KafkaError, OSError):
        return False
