"""The embedded broker keeps what the worker has not acknowledged, not all history: input
records below the group's committed offsets are deleted, nothing above them is, and the
real noida broker frees their memory."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from touchstream.broker import EmbeddedBroker
from touchstream.kafka import ensure_topics
from touchstream.retention import InputRetention

TOPICS = ["in.a", "in.b"]
PAYLOAD = b"x" * 1000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def produce(bootstrap: str, count: int, start: int = 0) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for n in range(start, start + count):
        producer.produce(TOPICS[n % 2], key=f"k{n % 50}".encode(), value=PAYLOAD, partition=n // 2 % 2)
        if n % 5000 == 0:
            producer.poll(0)
    producer.flush()


def commit_all_but(bootstrap: str, group: str, left: int) -> dict[tuple[str, int], int]:
    """Commit, per partition, its end offset minus `left`, as the worker does once
    ClickHouse has the records; return the committed offsets."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        offsets = []
        for topic in TOPICS:
            for partition in range(2):
                _, end = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=False)
                offsets.append(TopicPartition(topic, partition, end - left))
        consumer.commit(offsets=offsets, asynchronous=False)
        return {(tp.topic, tp.partition): tp.offset for tp in offsets}
    finally:
        consumer.close()


def watermarks(bootstrap: str) -> dict[tuple[str, int], tuple[int, int]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return {
            (topic, partition): consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=False)
            for topic in TOPICS
            for partition in range(2)
        }
    finally:
        consumer.close()


def test_committed_input_is_deleted_and_unacknowledged_input_kept(tmp_path: Path) -> None:
    with EmbeddedBroker("noida", tmp_path / "broker") as broker:
        assert broker.process is not None
        ensure_topics(broker.bootstrap, TOPICS, partitions=2)
        retention = InputRetention(broker.bootstrap, "worker", TOPICS, partitions=2)
        assert retention.trim() == 0, "nothing committed, nothing deleted"

        produce(broker.bootstrap, 40_000)
        committed = commit_all_but(broker.bootstrap, "worker", left=100)
        assert retention.trim() == 4
        marks = watermarks(broker.bootstrap)
        assert {tp: low for tp, (low, _) in marks.items()} == committed, "deleted up to the commit"
        assert all(high - low == 100 for low, high in marks.values()), "the unacknowledged records stay"
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "worker"})
        consumer.subscribe(TOPICS)
        read = 0
        for _ in range(50):
            read += len([m for m in consumer.consume(500, timeout=0.5) if not m.error()])
            if read == 400:
                break
        consumer.close()
        assert read == 400, "the worker reads on from its committed offsets"

        # History grows, memory does not: more rounds, each committed and trimmed.
        after_first = rss_mb(broker.process.pid)
        rounds = 20
        for round_ in range(1, rounds + 1):
            produce(broker.bootstrap, 40_000, start=round_ * 40_000)
            commit_all_but(broker.bootstrap, "worker", left=0)
            retention.trim()
        grown = rss_mb(broker.process.pid) - after_first
        # Kept, the records would take at least their own size (noida: 2.7 GB of RSS for
        # 660,000 of them); trimmed, the broker's allocator reuses what they took.
        payload_mb = rounds * 40_000 * len(PAYLOAD) / 2**20
        assert grown < payload_mb / 2, f"the broker grew by {grown:.0f} MB for {payload_mb:.0f} MB of records"
        assert all(low == high for low, high in watermarks(broker.bootstrap).values())
