"""The project's topics: created with the replication the settings ask for, and existing
ones checked against it at start-up (describe, not assume)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from shared.events import LEAD_TOPICS, TOPIC_DEADLETTER
from shared.kafka_security import Durability, Kafka, client_kwargs

log = logging.getLogger(__name__)

# The lead topics are the history the KPI service rebuilds from: never expire them.
TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1"}
MIN_INSYNC = "min.insync.replicas"


class TopicsUnderReplicated(RuntimeError):
    """Existing topics have less replication than the settings ask for (production).

    Not a KafkaError: retrying will not help until an operator raises it."""


@dataclass(frozen=True)
class TopicDurability:
    """What a topic has: its smallest replica count over its partitions, and its
    min.insync.replicas (None when it could not be read)."""

    topic: str
    replication_factor: int
    min_insync_replicas: int | None

    def shortfall(self, wanted: Durability) -> str | None:
        problems = []
        if self.replication_factor < wanted.replication_factor:
            problems.append(
                f"replication factor {self.replication_factor} < {wanted.replication_factor}"
            )
        if self.min_insync_replicas is None:
            problems.append(f"{MIN_INSYNC} could not be read")
        elif self.min_insync_replicas < wanted.min_insync_replicas:
            problems.append(
                f"{MIN_INSYNC} {self.min_insync_replicas} < {wanted.min_insync_replicas}"
            )
        return f"{self.topic}: {', '.join(problems)}" if problems else None


async def start_admin(kafka: Kafka, wait_seconds: float = 30.0) -> AIOKafkaAdminClient:
    """A started admin client; retries while the cluster cannot be reached."""
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        admin = AIOKafkaAdminClient(**client_kwargs(kafka), request_timeout_ms=10000)
        try:
            await admin.start()
            return admin
        except KafkaError:
            await admin.close()
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def ensure_topics(
    kafka: Kafka,
    partitions: int,
    topics: Iterable[str] = (*LEAD_TOPICS, TOPIC_DEADLETTER),
    wait_seconds: float = 30.0,
    durability: Durability = Durability(),
) -> None:
    """Create the topics the project uses (broker auto-create is off) with `durability`'s
    replication and min.insync.replicas; existing ones are kept, and checked: below
    `durability`, strict (production) raises TopicsUnderReplicated, else a warning."""
    topics = list(topics)
    admin = await start_admin(kafka, wait_seconds)
    try:
        existing = set(await admin.list_topics())
        config = {**TOPIC_CONFIG, MIN_INSYNC: str(durability.min_insync_replicas)}
        wanted = [
            NewTopic(
                name=t,
                num_partitions=partitions,
                replication_factor=durability.replication_factor,
                topic_configs=config,
            )
            for t in topics
            if t not in existing
        ]
        if wanted:
            # Another process may have created one first: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
            log.info("created topics %s", [t.name for t in wanted])
        kept = [t for t in topics if t in existing]
        if kept:
            check_durability(await describe_durability(admin, kept), durability)
    finally:
        await admin.close()


async def describe_durability(
    admin: AIOKafkaAdminClient, topics: Sequence[str]
) -> list[TopicDurability]:
    """Each topic's replica count (the smallest over its partitions) and min.insync.replicas."""
    described = await admin.describe_topics(list(topics))
    replicas: dict[str, int] = {}
    for d in described:
        if d.get("error_code"):
            raise KafkaError(f"describing topic {d['topic']} failed: error {d['error_code']}")
        counts = [len(p.get("replicas", [])) for p in d.get("partitions", [])]
        replicas[d["topic"]] = min(counts) if counts else 0
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, t, configs={MIN_INSYNC: None}) for t in topics
    ]
    min_isr: dict[str, int | None] = dict.fromkeys(topics)
    for response in await admin.describe_configs(resources):
        for resource in response.to_object()["resources"]:
            if resource.get("error_code"):
                continue  # not readable (no DescribeConfigs right): said as such below
            for entry in resource["config_entries"]:
                if entry["config_names"] == MIN_INSYNC:
                    min_isr[resource["resource_name"]] = int(entry["config_value"])
    return [TopicDurability(t, replicas.get(t, 0), min_isr[t]) for t in topics]


def check_durability(found: Sequence[TopicDurability], wanted: Durability) -> None:
    problems = [p for d in found if (p := d.shortfall(wanted)) is not None]
    if not problems:
        return
    message = (
        f"Kafka topics below LEADFLOW_KAFKA_REPLICATION_FACTOR={wanted.replication_factor} / "
        f"LEADFLOW_KAFKA_MIN_INSYNC_REPLICAS={wanted.min_insync_replicas}: {'; '.join(problems)}. "
        "An acknowledged event may then live on fewer brokers than that; raise them "
        "(kafka-reassign-partitions.sh, kafka-configs.sh: docs/kafka.md) or lower the settings"
    )
    if wanted.strict:
        raise TopicsUnderReplicated(message)
    log.warning("%s (dev mode: used anyway)", message)
