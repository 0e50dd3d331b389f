"""The embedded broker keeps what is not yet in ClickHouse, not all history.

The noida broker holds every record of a topic in memory until it is deleted (measured:
2.7 GB of RSS after 660,000 records of 1 KB). It honours `retention.ms` and the
DeleteRecords request, but not `cleanup.policy=compact`. Time retention could drop events
the worker has not read (a worker stopped for longer than the retention), so the input
topics are trimmed by what the worker has acknowledged instead: offsets are committed
only once ClickHouse has the batch (`streams.step`), so every record below the worker
group's committed offset is in ClickHouse, and `InputRetention` deletes those records
every `interval` seconds (measured: 600,000 records of 1 KB produced and deleted in six
rounds, the broker stayed at 72 MB of RSS).

Only the embedded broker is trimmed; a Kafka of one's own (`KAFKA_BOOTSTRAP`) keeps its
own retention settings. The dead-letter topic is kept whole: it is the record of rejected
input, small by nature.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

log = logging.getLogger(__name__)


class InputRetention(threading.Thread):
    """Deletes the input records the worker group has committed, every `interval` seconds."""

    def __init__(
        self, bootstrap: str, group: str, topics: Iterable[str], partitions: int, *, interval: float = 30.0
    ) -> None:
        super().__init__(name="input-retention", daemon=True)
        self.admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        self.group = group
        self.partitions = [TopicPartition(topic, p) for topic in sorted(topics) for p in range(partitions)]
        self.interval = interval
        self.deleted_below: dict[tuple[str, int], int] = {}
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.trim()
            except KafkaException as error:  # the broker stopping or busy: try again later
                log.debug("input retention skipped: %s", error)

    def trim(self) -> int:
        """Delete every input record below the group's committed offset; return how many
        partitions moved."""
        request = [ConsumerGroupTopicPartitions(self.group, self.partitions)]
        committed = self.admin.list_consumer_group_offsets(request)[self.group].result(timeout=10)
        due = [
            TopicPartition(tp.topic, tp.partition, tp.offset)
            for tp in committed.topic_partitions
            if tp.offset > self.deleted_below.get((tp.topic, tp.partition), 0) and not tp.error
        ]
        if not due:
            return 0
        for tp, future in self.admin.delete_records(due, request_timeout=10).items():
            future.result()
            self.deleted_below[tp.topic, tp.partition] = tp.offset
        return len(due)

    def stop(self) -> None:
        self._stopped.set()
