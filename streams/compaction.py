"""Compaction of the state changelog where the broker does not compact: the embedded one.

Kafka compacts `customer-state` (Faust declares it `cleanup.policy=compact`): for each
customer only its newest record need be kept. The embedded noida broker honours
DeleteRecords and `retention.ms` but not compaction, and holds every record in memory,
so a step writing the records of the customers it touched would grow the broker with
history. The worker compacts its own partitions instead, the way a log-structured store
does: once a partition's changelog holds more than `FACTOR` times its live records
(and at least `MINIMUM`), it takes the changelog's end offset E, writes every current
record of the partition's local database (`RocksState`) to the changelog again, in
chunks that take turns with the steps' writes (`ChangelogWriter.lock`), then deletes
the records below E. Every key's newest record before E is then either written again
after E or superseded by a step's, so recovery from the changelog gives the same
state; a worker stopped midway has deleted nothing. The broker holds at most about
`FACTOR + 1` times the live state, whatever the history.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from streams.partitions import ChangelogWriter, RocksState

log = logging.getLogger(__name__)


def _holds(assigned: Callable[[], set[int]], partition: int) -> bool:
    return partition in assigned()


class ChangelogCompaction:
    FACTOR = 3
    MINIMUM = 50_000
    CHUNK = 5_000
    LOOK_SECONDS = 30.0

    def __init__(self, bootstrap: str, writer: ChangelogWriter, state: RocksState) -> None:
        self.admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        self.writer = writer
        self.state = state
        #: Per partition, the changelog's first offset (records below it are deleted).
        self.start: dict[int, int] = {}
        #: Per partition, its records in the local database, as counted at start and by the
        #: last compaction (new customers since make it low: a compaction comes sooner).
        self.live: dict[int, int] = {}
        self.compactions = 0

    def _earliest(self, partition: int) -> int:
        tp = TopicPartition(self.state.topic, partition)
        return int(self.admin.list_offsets({tp: OffsetSpec.earliest()})[tp].result(timeout=10).offset)

    def due(self, partition: int) -> int | None:
        """The changelog end offset to compact below, if the partition is due."""
        newest = self.state.newest_offset(partition)
        if newest is None:
            return None
        if partition not in self.start:
            self.start[partition] = self._earliest(partition)
            self.live[partition] = self.state.count(partition)
        held = newest + 1 - self.start[partition]
        if held > max(self.FACTOR * self.live[partition], self.MINIMUM):
            return newest + 1
        return None

    async def compact(self, partition: int, end: int, owned: Callable[[], bool] = lambda: True) -> bool:
        """Write the partition's records again, then delete the changelog below `end`.
        False (nothing deleted) if the partition stopped being `owned` meanwhile."""
        after: bytes | None = None
        copied = 0
        while True:
            if not owned():
                return False
            chunk = await self.writer.republish(self.state, partition, after, self.CHUNK)
            if chunk is None:
                break
            after, count = chunk
            copied += count
        tp = TopicPartition(self.state.topic, partition, end)
        loop = asyncio.get_running_loop()
        futures = await loop.run_in_executor(
            None, lambda: self.admin.delete_records([tp], request_timeout=10)
        )
        for future in futures.values():
            await loop.run_in_executor(None, future.result)
        self.start[partition] = end
        self.live[partition] = copied
        self.compactions += 1
        return True

    async def run(self, assigned: Callable[[], set[int]]) -> None:
        """Every `LOOK_SECONDS`, compact each assigned partition that is due."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.LOOK_SECONDS)
            for partition in sorted(assigned()):
                try:
                    end = await loop.run_in_executor(None, self.due, partition)
                    if end is not None:
                        await self.compact(
                            partition, end, owned=functools.partial(_holds, assigned, partition)
                        )
                except KafkaException as error:  # the broker stopping or busy: next time
                    log.debug("changelog compaction of partition %d skipped: %s", partition, error)
