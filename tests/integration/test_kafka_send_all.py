"""Publishing in whole batches (shared.kafka.send_all) on real Kafka: every record once, on
its key's partition, in order per key, however many batches a partition's records fill."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from shared.kafka import Outgoing, ensure_topics, send_all
from shared.partitioner import KeyPartitioner
from tests.support import read_topic

PARTITIONS = 6


async def test_records_land_on_their_keys_partitions_in_order(kafka_bootstrap: str) -> None:
    topic = f"test-send-all-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, PARTITIONS, topics=[topic])
    keys = [str(uuid.uuid4()).encode() for _ in range(12)]
    # Eight records a key, interleaved; batches of 2 KiB hold a few 300-byte records, so
    # each partition's records fill several batches.
    records = [
        Outgoing(topic, key, b"%d:" % step + b"x" * 300, [("ce_id", f"{key!r}{step}".encode())])
        for step in range(8)
        for key in keys
    ]
    # One record bigger than a whole batch: a batch always takes its first record.
    records.append(Outgoing(topic, keys[0], b"8:" + b"y" * 5000, []))
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        enable_idempotence=True,
        acks="all",
        partitioner=KeyPartitioner(),
        max_batch_size=2048,
    )
    await producer.start()
    try:
        await send_all(producer, records)
    finally:
        await producer.stop()

    found = await read_topic(kafka_bootstrap, topic, lambda r: True, len(records))
    assert len(found) == len(records)
    reference = DefaultPartitioner()  # aiokafka's own choice for a keyed `send`
    for key in keys:
        mine = [r for r in found if r.key == key]
        steps = [int((r.value or b"").split(b":")[0]) for r in mine]
        assert sorted(steps) == steps == list(range(9 if key == keys[0] else 8))
        partitions = {r.partition for r in mine}
        assert partitions == {reference(key, list(range(PARTITIONS)), [])}
    assert {h for r in found for h in r.headers if r.key == keys[1]} == {
        ("ce_id", f"{keys[1]!r}{step}".encode()) for step in range(8)
    }
