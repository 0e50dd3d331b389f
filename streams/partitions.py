"""One metric `Engine` per partition, its state kept in a changelog-backed Faust table.

Each customer's engine record (`Engine.export`) is stored under the customer's key in
the table `customer-state`, written once per batch for the customers the batch
touched; each partition's own record (horizon, per-topic watermarks) under a key that
hashes to it. The records are written by `ChangelogWriter` (outside per-event iteration,
where Faust's own table writes have no "current event" to pick the changelog partition)
to the changelog partition their key hashes to with murmur2, the hash of every
Touchstream producer, so customer X's record lives in the changelog partition of X's
input partition and is recovered by whichever worker owns that partition. The table
is declared partitioned by key (`use_partitioner=True`) to match.

After a rebalance the engines are dropped and rebuilt lazily from the recovered table.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping, MutableMapping
from datetime import datetime
from typing import Any

from faust.types import TP

from producers.publisher import Delivery, Publisher
from schemas.errors import BrokerError
from schemas.partitioning import partition_of
from schemas.touchpoint import TouchpointEvent
from streams.metrics import Engine, MetricsConfig, Outputs

STATE_TABLE = "customer-state"
_PARTITION_PREFIX = "\x00touchstream.partition:"


def partition_key(partition: int, partitions: int) -> bytes:
    """A table key of the partition's own record (horizon, watermarks) that hashes to it."""
    for attempt in range(100_000):
        key = f"{_PARTITION_PREFIX}{partition}:{attempt}".encode()
        if partition_of(key, partitions) == partition:
            return key
    raise AssertionError("no key hashes to this partition")


class PartitionEngines:
    def __init__(
        self, config: MetricsConfig, table: MutableMapping[bytes, bytes | None], partitions: int
    ) -> None:
        self.config = config
        self.table = table
        self.partitions = partitions
        self.engines: dict[int, Engine] = {}
        self._stepped: list[int] = []

    def engine(self, partition: int) -> Engine:
        if partition not in self.engines:
            engine = Engine(self.config)
            engine.restore(self._records(partition))
            own = self.table.get(partition_key(partition, self.partitions))
            if own is not None:
                engine.restore_partition(json.loads(own))
            self.engines[partition] = engine
        return self.engines[partition]

    def _records(self, partition: int) -> Iterable[dict[str, Any]]:
        for key, value in list(self.table.items()):
            if value is None or key.startswith(_PARTITION_PREFIX.encode()):
                continue
            if partition_of(key, self.partitions) == partition:
                yield json.loads(value)

    def process(
        self, events: Iterable[tuple[TouchpointEvent, int, str]], lagging: Mapping[int, set[str]]
    ) -> Outputs:
        """Events with their partition and topic, in arrival order; `lagging`: per partition,
        the topics with unread records. Returns the outputs of every partition's step."""
        by_partition: dict[int, list[tuple[TouchpointEvent, str]]] = {}
        for event, partition, topic in events:
            by_partition.setdefault(partition, []).append((event, topic))
        steps = {
            partition: self.engine(partition).process_sources(
                by_partition[partition], lagging=lagging.get(partition, set())
            )
            for partition in sorted(by_partition)
        }
        return self._combine(steps)

    def idle(self, partitions: Iterable[int], wall_clock: datetime) -> Outputs | None:
        """The idle rule for `partitions` (caught up, nothing read for the idle time);
        None when it changes nothing."""
        steps = {}
        for partition in sorted(partitions):
            step = self.engine(partition).idle(wall_clock)
            if step is not None:
                steps[partition] = step
        return self._combine(steps) if steps else None

    def _combine(self, steps: Mapping[int, Outputs]) -> Outputs:
        """One step's outputs of several partitions, under a version above any of theirs.

        The version is the wall clock in microseconds, or one more than the highest
        version the partitions wrote if that is later (a clock set back, a partition
        moved to a worker whose clock is behind): it only grows per partition, so a
        later step's row replaces an earlier one's whatever the clocks say.
        """
        out = Outputs()
        self._stepped = list(steps)
        version = max([time.time_ns() // 1000, *(self.engines[p].version + 1 for p in steps)])
        for partition, step in steps.items():
            engine = self.engines[partition]
            engine.version = version
            out.extend(step)
            if engine.horizon is not None and engine.newest is not None:
                out.horizons[partition] = (engine.horizon, engine.newest)
        out.version = version
        return out

    def changed_records(self) -> list[tuple[bytes, bytes]]:
        """(key, value) of every record the last step changed, for the table."""
        records = []
        for partition in self._stepped:
            engine = self.engines[partition]
            for customer_id in sorted(engine.touched):
                records.append((customer_id.encode(), engine.export_json(customer_id)))
            engine.touched = set()
            own = json.dumps(engine.export_partition()).encode()
            records.append((partition_key(partition, self.partitions), own))
        self._stepped = []
        return records

    def forget(self) -> None:
        """Partitions moved: rebuild from the (recovered) table on next use."""
        self.engines.clear()


class ChangelogWriter:
    """Writes `customer-state` records to the table's changelog topic with confluent-kafka.

    Faust's own path (`Table.__setitem__`, `send_changelog`) queues each message in its
    producer buffer and hands them to aiokafka one event-loop pass at a time, about
    250 µs per record here, which made the state writes the slowest step of a batch.
    librdkafka takes a record in a few microseconds. The records go through the
    project's `Publisher`, whose producer hashes keys with murmur2 like the table's
    partitioner, so each lands in the changelog partition of its key; the local store
    is set beside it, and `write` returns once Kafka acknowledged them all; then it
    records the newest changelog offsets in the store as the table's own send callback
    does (a RocksDB store resumes recovery from there). The worker commits the batch's
    offsets only after this returns. Faust's recovery reads the changelog whoever wrote it.
    """

    def __init__(self, bootstrap: str, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.publisher = Publisher(bootstrap)

    def produce(self, topic: str, records: list[tuple[bytes, bytes]]) -> dict[int, int]:
        """Blocking: send `records`, wait for every acknowledgement; the newest offset per partition."""
        delivery = Delivery()
        for key, value in records:
            self.publisher.send_raw(topic, key, value, delivery)
        self.publisher.wait(delivery, len(records), self.timeout)
        if not delivery.ok:
            raise BrokerError(f"changelog write failed: {delivery.errors[0]}")
        return {partition: offset for (_, partition), offset in delivery.newest.items()}

    async def write(self, table: Any, records: list[tuple[bytes, bytes]]) -> None:
        topic = table.changelog_topic.get_topic_name()
        for key, value in records:
            table.data[key] = value
        newest = await asyncio.get_running_loop().run_in_executor(None, self.produce, topic, records)
        for partition, offset in newest.items():
            table.data.set_persisted_offset(TP(topic, partition), offset)
