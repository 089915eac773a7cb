"""Kafka plumbing: the idempotent producer, manual-commit consumers, topics, and reachability."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.producer.message_accumulator import BatchBuilder

from shared.events import LEAD_TOPICS, TOPIC_DEADLETTER
from shared.partitioner import KeyPartitioner

log = logging.getLogger(__name__)

# The lead topics are the history the KPI service rebuilds from: never expire them.
TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1"}

# The bytes a produce batch (one partition's records in one request) may hold. The
# broker's work is mostly per batch: with aiokafka's 16 KiB a batch held about fifteen
# 1 KiB lead events, and relaying them cost the broker 40-85 us of CPU an event against
# 10 us with batches of 256 KiB (the relay's own cost fell from about 30 to 18 us). A
# batch is still sent after `linger_ms` however little it holds; far below the broker's
# 1 MiB `message.max.bytes`.
PRODUCER_BATCH_BYTES = 256 * 1024
_PARTITIONER = KeyPartitioner()


def make_producer(bootstrap_servers: str, client_id: str) -> AIOKafkaProducer:
    """Idempotent, acks=all: an acknowledged send is on every in-sync replica, once."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
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
    for (topic, partition), mine in by_partition.items():
        batch = producer.create_batch()
        for record in mine:
            if not _append(batch, record):
                deliveries.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                _append(batch, record)
        batch.close()  # nothing else joins it: `send` would otherwise add to an open batch
        deliveries.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*deliveries)


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


def make_consumer(
    bootstrap_servers: str,
    group_id: str,
    topics: Iterable[str],
    client_id: str,
    fetch: FetchPolicy = FetchPolicy(),
) -> AIOKafkaConsumer:
    """Auto-commit off: offsets are committed only after the database transaction."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers,
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
        session_timeout_ms=10000,
        heartbeat_interval_ms=2000,
        retry_backoff_ms=200,
    )


async def ensure_topics(
    bootstrap_servers: str,
    partitions: int,
    topics: Iterable[str] = (*LEAD_TOPICS, TOPIC_DEADLETTER),
    wait_seconds: float = 30.0,
) -> None:
    """Create the topics the project uses (broker auto-create is off); existing ones are kept."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10000)
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        try:
            await admin.start()
            break
        except KafkaError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=t, num_partitions=partitions, replication_factor=1, topic_configs=TOPIC_CONFIG
            )
            for t in topics
            if t not in existing
        ]
        if wanted:
            # Another process may have created one first: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
            log.info("created topics %s", [t.name for t in wanted])
    finally:
        await admin.close()


async def kafka_reachable(producer: AIOKafkaProducer, wait_seconds: float = 2.0) -> bool:
    """True when the cluster answers a metadata request within `wait_seconds`."""
    try:
        async with asyncio.timeout(wait_seconds):
            await producer.client.fetch_all_metadata()
        return True
    except (TimeoutError, KafkaError, OSError):
        return False
