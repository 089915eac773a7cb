"""Kafka plumbing: the idempotent producer, manual-commit consumers, topics, and reachability."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from shared.events import LEAD_TOPICS, TOPIC_DEADLETTER
from shared.partitioner import KeyPartitioner

log = logging.getLogger(__name__)

# The lead topics are the history the KPI service rebuilds from: never expire them.
TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1"}


def make_producer(bootstrap_servers: str, client_id: str) -> AIOKafkaProducer:
    """Idempotent, acks=all: an acknowledged send is on every in-sync replica, once."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        partitioner=KeyPartitioner(),
        linger_ms=2,
        request_timeout_ms=15000,
        retry_backoff_ms=200,
    )


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
