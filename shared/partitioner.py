"""Which partition a keyed event goes to: Kafka's own choice, computed in fewer steps.

A lead's events must land where every Kafka client puts that key (the Java client's
murmur2, then modulo the partitions), so consumers see each lead's events in order
whatever wrote them. aiokafka's pure-Python murmur2 takes about 5 µs a key, a twentieth
of a relayed event's cost; reading the key's 4-byte words in one `struct` call and
masking once per step halves that and gives the same numbers.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

_MASK = 0xFFFFFFFF
_M = 0x5BD1E995
_SEED = 0x9747B28C
_WORDS: dict[int, struct.Struct] = {}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of `data` as an unsigned 32-bit number (aiokafka's value)."""
    length = len(data)
    words = _WORDS.get(length >> 2)
    if words is None:
        words = _WORDS[length >> 2] = struct.Struct(f"<{length >> 2}I")
    h = _SEED ^ length
    for k in words.unpack_from(data):
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        at = length - tail
        if tail == 3:
            h ^= data[at + 2] << 16
        if tail >= 2:
            h ^= data[at + 1] << 8
        h = ((h ^ data[at]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


class KeyPartitioner:
    """aiokafka's DefaultPartitioner with the faster murmur2: a key's partition is the one
    the Java client picks; an event without a key goes to a random available partition."""

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        return all_partitions[(murmur2(key) & 0x7FFFFFFF) % len(all_partitions)]
