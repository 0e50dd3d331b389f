"""Which partition a key belongs to: murmur2, as Kafka's Java client, aiokafka, Faust and
every Touchstream producer (librdkafka's `murmur2_random`) hash keys (SPEC §3: one
customer's events from every channel meet in one partition number).

Pure Python and dependency-free, so anything that needs a customer's partition (the
worker's state table, `touchstream verify`) can ask without importing a Kafka client.
"""

from __future__ import annotations

import functools

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as an unsigned 32-bit
    int (aiokafka's convention; partitioning masks the sign bit either way)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    for i in range(0, length - length % 4, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & ~3
    extra = length % 4
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


@functools.lru_cache(maxsize=1 << 17)
def partition_of(key: bytes, partitions: int) -> int:
    """The partition Java clients, aiokafka and Touchstream's producers give `key`
    (remembered for the most recent keys: customers come back, and murmur2 in Python
    costs microseconds a key)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
