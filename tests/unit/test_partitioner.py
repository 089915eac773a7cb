"""Keyed events land where every Kafka client puts the key: Java's murmur2, then modulo."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from shared.partitioner import KeyPartitioner, murmur2

# org.apache.kafka.common.utils.UtilsTest#testMurmur2: the Java client's values (signed).
JAVA = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize(("key", "signed"), JAVA.items())
def test_java_client_values(key: str, signed: int) -> None:
    assert murmur2(key.encode()) == signed & 0xFFFFFFFF


def test_same_hash_as_aiokafka_for_every_length_and_byte() -> None:
    rng = random.Random(7)
    keys = [bytes(rng.randrange(256) for _ in range(n)) for n in range(0, 80) for _ in range(40)]
    keys += [bytes([b]) * n for b in (0, 0x7F, 0x80, 0xFF) for n in range(0, 12)]
    for key in keys:
        assert murmur2(key) == aiokafka_murmur2(key), key


def test_same_partition_as_aiokafka() -> None:
    rng = random.Random(11)
    ours, theirs = KeyPartitioner(), DefaultPartitioner()
    for count in (1, 3, 6, 7, 64):
        partitions = list(range(count))
        for _ in range(300):
            key = str(rng.getrandbits(128)).encode()
            assert ours(key, partitions, partitions) == theirs(key, partitions, partitions)


def test_unkeyed_goes_to_an_available_partition() -> None:
    partitioner = KeyPartitioner()
    assert {partitioner(None, [0, 1, 2], [2]) for _ in range(20)} == {2}
    assert {partitioner(None, [0, 1, 2], []) for _ in range(200)} == {0, 1, 2}
