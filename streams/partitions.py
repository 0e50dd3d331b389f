"""One metric `Engine` per partition, its state kept in a changelog-backed Faust table.

Each customer's engine record (`Engine.export_json`) is stored under the customer's key
in the table `customer-state`, written once per batch for the customers the batch
touched, and beside it its retired conversations under keys of their own
(`Engine.retire`, in the customer's partition: `record_partition`); each partition's
own record (horizon, per-topic watermarks) under a key that hashes to it. The records
are written by `StateWriter` (outside per-event iteration, where Faust's own table
writes have no "current event" to pick the changelog partition) to the changelog
partition their key hashes to with murmur2, the hash of every
Touchstream producer, so customer X's record lives in the changelog partition of X's
input partition and is recovered by whichever worker owns that partition. The table
is declared partitioned by key (`use_partitioner=True`) to match. On the embedded
broker there is no changelog (`StateWriter`).

The table lives in RocksDB (Faust's `rocksdb://` store with the `rocksdict` driver), one
database per partition on the worker's disk: `RocksState` reads and writes it directly.
Faust recovers it from the changelog from the offset last written to it, so a restart
reads only what changed since, not the changelog's whole history. An engine keeps in
memory only the customers with buffered events and the most recently used
(`Engine.evict`, `state_cache` customers per worker); the others are read back from
the database when an event, a decay crossing or a live view needs them.

After a rebalance the engines are dropped and rebuilt lazily from the recovered table:
each notes every customer's next decay crossing from the head of its record
(`Engine.index`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from rocksdict import WriteBatch

from touchstream.producers.publisher import Delivery, Publisher
from touchstream.schemas.errors import BrokerError
from touchstream.schemas.partitioning import partition_of
from touchstream.schemas.touchpoint import TouchpointEvent
from touchstream.streams import faustcompat
from touchstream.streams.metrics import Engine, MetricsConfig, Outputs
from touchstream.streams.metrics.state import customer_of

STATE_TABLE = "customer-state"
_PARTITION_PREFIX = "\x00touchstream.partition:"


def record_partition(key: bytes, partitions: int) -> int:
    """The partition of a table key: its murmur2 partition, but a retired conversation's
    record (`Engine.retire`) lives in its customer's."""
    return partition_of(customer_of(key), partitions)


def partition_key(partition: int, partitions: int) -> bytes:
    """A table key of the partition's own record (horizon, watermarks) that hashes to it."""
    for attempt in range(100_000):
        key = f"{_PARTITION_PREFIX}{partition}:{attempt}".encode()
        if partition_of(key, partitions) == partition:
            return key
    raise AssertionError("no key hashes to this partition")


class State(Protocol):
    """Where the customers' records are kept between steps (`RocksState`)."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]: ...

    def keys(self, partition: int, prefix: bytes) -> Iterator[bytes]: ...


def customer_records(state: State, partition: int) -> Iterator[tuple[bytes, bytes]]:
    """A partition's records of customers (theirs and their retired conversations'), without
    the partition's own."""
    for key, value in state.items(partition):
        if not key.startswith(_PARTITION_PREFIX.encode()):
            yield key, value


class RocksState:
    """The `customer-state` table's RocksDB databases (one per partition), read and written
    directly.

    Faust's own `Table.__setitem__` needs a current event to pick the partition, and its
    reads search every partition's database for a key; here the partition is the key's
    murmur2 partition, as in the changelog. `write` applies a step's acknowledged
    records with the newest changelog offset in one write batch per partition, as
    Faust's recovery (`apply_changelog_batch`) does, so the database never holds a
    record the changelog does not, and recovery resumes after that offset.
    """

    def __init__(self, topic: str, partitions: int, db: Callable[[int], Any], offset_key: bytes) -> None:
        #: The changelog topic.
        self.topic = topic
        self.partitions = partitions
        self._db = db
        self.offset_key = offset_key

    @classmethod
    def of(cls, table: Any, partitions: int) -> RocksState:
        """The databases of a Faust table with the `rocksdb://` store."""
        topic = table.changelog_topic.get_topic_name()
        databases = functools.partial(faustcompat.partition_db, table)
        return cls(topic, partitions, databases, faustcompat.offset_key())

    def get(self, partition: int, key: bytes) -> bytes | None:
        value = self._db(partition).get(key)
        return None if value is None else bytes(value)

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self._db(partition).items():
            if key != self.offset_key:
                yield key, value

    def keys(self, partition: int, prefix: bytes) -> Iterator[bytes]:
        for key in self._db(partition).keys(from_key=prefix):
            if not key.startswith(prefix):
                return
            yield key

    def write(self, records: list[tuple[bytes, bytes | None]], newest: Mapping[int, int]) -> None:
        batches: dict[int, Any] = {}
        for key, value in records:
            partition = record_partition(key, self.partitions)
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = WriteBatch(raw_mode=True)
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        for partition, batch in batches.items():
            if partition in newest:
                batch.put(self.offset_key, str(newest[partition]).encode())
            self._db(partition).write(batch)


class PartitionEngines:
    """`state` None: engines hold every customer in memory and start empty (tests of the
    core on ClickHouse); otherwise they read customers back from it and keep at most
    `cache` customers without buffered events in memory."""

    def __init__(
        self, config: MetricsConfig, state: State | None, partitions: int, cache: int = 20_000
    ) -> None:
        self.config = config
        self.state = state
        self.partitions = partitions
        self.cache = cache
        self.engines: dict[int, Engine] = {}
        self._stepped: list[int] = []

    def engine(self, partition: int) -> Engine:
        if partition not in self.engines:
            state = self.state
            if state is None:
                engine = Engine(self.config)
            else:
                engine = Engine(
                    self.config,
                    load=lambda key: state.get(partition, key),
                    keys=lambda prefix: state.keys(partition, prefix),
                )
                engine.index(customer_records(state, partition))
                own = state.get(partition, partition_key(partition, self.partitions))
                if own is not None:
                    engine.restore_partition(json.loads(own))
            self.engines[partition] = engine
        return self.engines[partition]

    def process(
        self,
        events: Iterable[tuple[TouchpointEvent, int, str]],
        lagging: Mapping[int, set[str]],
        *,
        live: bool = True,
    ) -> Outputs:
        """Events with their partition and topic, in arrival order; `lagging`: per partition,
        the topics with unread records; `live` False defers live views (`Engine._defer`).
        Returns the outputs of every partition's step."""
        by_partition: dict[int, list[tuple[TouchpointEvent, str]]] = {}
        if live:  # a partition with deferred live views steps even without records
            by_partition = {partition: [] for partition, engine in self.engines.items() if engine.deferred}
        for event, partition, topic in events:
            by_partition.setdefault(partition, []).append((event, topic))
        steps = {
            partition: self.engine(partition).process_sources(
                by_partition[partition], lagging=lagging.get(partition, set()), live=live
            )
            for partition in sorted(by_partition)
        }
        return self._combine(steps)

    def restate(self, stored: Mapping[str, list[TouchpointEvent]]) -> Outputs:
        """Customers recomputed from all their stored events (`Engine.restate`) in their
        partitions, under a version above the step's; their records are written with the
        step's."""
        stepped = self._stepped
        by_partition: dict[int, dict[str, list[TouchpointEvent]]] = {}
        for customer_id, events in stored.items():
            partition = partition_of(customer_id.encode(), self.partitions)
            by_partition.setdefault(partition, {})[customer_id] = events
        steps = {
            partition: self.engine(partition).restate(found) for partition, found in by_partition.items()
        }
        out = self._combine(steps)
        self._stepped = sorted({*stepped, *self._stepped})
        return out

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

    def changed_records(self) -> list[tuple[bytes, bytes | None]]:
        """(key, value) of every record the last step changed, for the table; a value of
        None deletes the record."""
        records: list[tuple[bytes, bytes | None]] = []
        for partition in self._stepped:
            engine = self.engines[partition]
            customers = [(c.encode(), engine.export_json(c)) for c in sorted(engine.touched)]
            engine.touched = set()
            # A customer's retired conversations before the record that no longer holds them:
            # a changelog cut short after the record would have lost them.
            records += sorted(engine.retired.items())
            records += customers
            engine.retired = {}
            own = json.dumps(engine.export_partition()).encode()
            records.append((partition_key(partition, self.partitions), own))
            engine.evict(self.cache // max(len(self.engines), 1))
        self._stepped = []
        return records

    def forget(self) -> None:
        """Partitions moved: rebuild from the (recovered) table on next use."""
        self.engines.clear()


class StateWriter:
    """Writes a step's `customer-state` records: to the table's changelog topic with
    confluent-kafka, then, once Kafka acknowledged them all, into the local databases
    with the newest changelog offsets (`RocksState.write`), where recovery resumes. The
    worker commits the batch's offsets only after `write` returns.

    Faust's own path (`Table.__setitem__`, `send_changelog`) queues each message in its
    producer buffer and hands them to aiokafka one event-loop pass at a time, about
    250 µs per record here; librdkafka takes a record in a few microseconds. The
    project's `Publisher` hashes keys with murmur2 like the table's partitioner, so each
    record lands in the changelog partition of its key. Faust's recovery reads the
    changelog whoever wrote it.

    Without a bootstrap (the embedded broker) the records go to the local databases
    only. The embedded broker serves one worker, on the machine that holds the
    databases, so a changelog would add no copy that outlives them; and noida, which
    cannot compact, snapshots every record it holds as JSON (1.7 GB of snapshot for the
    changelog of 1M events, longer to rewrite than a stop allows). A batch whose
    records were not written is read again from the input, as with a changelog.
    """

    def __init__(self, bootstrap: str | None, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.publisher = Publisher(bootstrap) if bootstrap is not None else None

    def produce(
        self, topic: str, records: Sequence[tuple[bytes, bytes | None]], partitions: int
    ) -> dict[int, int]:
        """Blocking: send `records` (None: a tombstone) each to its key's partition
        (`record_partition`), wait for every acknowledgement; the newest offset per partition."""
        if self.publisher is None:
            return {}
        delivery = Delivery()
        for key, value in records:
            self.publisher.send_raw(topic, key, value, delivery, partition=record_partition(key, partitions))
        self.publisher.wait(delivery, len(records), self.timeout)
        if not delivery.ok:
            raise BrokerError(f"changelog write failed: {delivery.errors[0]}")
        return {partition: offset for (_, partition), offset in delivery.newest.items()}

    async def write(self, state: RocksState, records: list[tuple[bytes, bytes | None]]) -> None:
        def written() -> None:
            state.write(records, self.produce(state.topic, records, state.partitions))

        await asyncio.get_running_loop().run_in_executor(None, written)
