"""`streams.batches`: Faust's consumer delivering a fetch at a time (real embedded broker).

A Faust app (tests/integration/batch_consumer.py) takes batches through the inbox and
acknowledges only the first few; stopped and started again, it must resume exactly
after the acknowledged records: every record delivered, in order, none skipped, and
none of the acknowledged ones again. And while the fetcher runs ahead of the batches,
the inbox names exactly the partitions with records not processed yet.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from touchstream.broker import EmbeddedBroker
from touchstream.kafka import ensure_topics
from touchstream.process import wait_until
from touchstream.producers.publisher import Delivery, Publisher

PER_TOPIC = 1_000
MAX_RECORDS = 150
ACKED_BATCHES = 3


Record = tuple[str, int, int]  # topic, partition, offset


def batches(out: Path) -> list[tuple[list[Record], bool]]:
    """The batches the consumer wrote: records and whether it acknowledged them."""
    if not out.exists():
        return []
    found = []
    for line in out.read_text().splitlines():
        batch = json.loads(line)
        found.append(([(t, p, o) for t, p, o in batch["records"]], bool(batch["acked"])))
    return found


def records(out: Path, *, acked: bool | None = None) -> list[Record]:
    return [r for batch, was_acked in batches(out) if acked in (None, was_acked) for r in batch]


def run_consumer(
    broker: EmbeddedBroker,
    topics: list[str],
    group: str,
    out: Path,
    *,
    ack: int,
    until: Callable[[], bool],
    options: tuple[str, ...] = ("--max-records", str(MAX_RECORDS)),
) -> None:
    """Run the batch consumer until `until()`, then stop it (SIGTERM)."""
    command = [
        sys.executable, "-m", "tests.integration.batch_consumer", *topics, "--bootstrap", broker.bootstrap,
        "--group", group, "--out", str(out), "--ack", str(ack), *options,
    ]  # fmt: skip
    with (out.parent / "consumer.log").open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: until() or process.poll() is not None, timeout=90, what="batches")
        assert process.poll() is None, f"the consumer exited; see {out.parent / 'consumer.log'}"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


def committed(broker: EmbeddedBroker, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        found = consumer.committed([TopicPartition(t, p) for t in topics for p in range(2)], timeout=10)
        return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in found}
    finally:
        consumer.close()


def test_batches_resume_after_the_acknowledged_records(broker: EmbeddedBroker, tmp_path: Path) -> None:
    run = f"batches{time.time_ns()}"
    topics = [f"{run}.a", f"{run}.b"]
    ensure_topics(broker.bootstrap, topics, partitions=2)
    with Publisher(broker.bootstrap) as publisher:
        delivery = Delivery()
        for topic in topics:
            for n in range(PER_TOPIC):
                publisher.send_raw(topic, f"key-{n % 7}".encode(), b"{}", delivery)
        publisher.wait(delivery, 2 * PER_TOPIC, 30)
    everything = {(t, p, o) for t, p, o in _written(broker, topics)}
    assert len(everything) == 2 * PER_TOPIC

    first_out, second_out = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    unacked_too = lambda: len(batches(first_out)) > ACKED_BATCHES + 1  # noqa: E731
    run_consumer(broker, topics, f"{run}-group", first_out, ack=ACKED_BATCHES, until=unacked_too)
    assert all(0 < len(batch) <= MAX_RECORDS for batch, _ in batches(first_out))
    acked = records(first_out, acked=True)
    assert len(acked) == len(set(acked)) > 0
    _assert_in_order(records(first_out))

    newest: dict[tuple[str, int], int] = {}
    for topic, partition, offset in acked:
        newest[topic, partition] = max(newest.get((topic, partition), -1), offset)
    commits = committed(broker, f"{run}-group", topics)
    assert commits == {tp: newest.get(tp, -1) + 1 for tp in commits}, "exactly the acknowledged records"

    rest = 2 * PER_TOPIC - len(acked)
    run_consumer(
        broker, topics, f"{run}-group", second_out, ack=10**9, until=lambda: len(records(second_out)) >= rest
    )
    second = records(second_out)
    _assert_in_order(second)
    assert sorted(acked + second) == sorted(everything), "every record once: none skipped, none repeated"
    assert committed(broker, f"{run}-group", topics) == {(t, p): 0 for t in topics for p in range(2)} | {
        tp: end for tp, end in _ends(everything).items()
    }


def test_the_inbox_names_the_partitions_with_records_not_processed(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Small fetches and small batches, and a pause after each batch: the fetcher hands the
    inbox records of partitions no batch has reached yet (the consumer's position is then
    at the end of them). Those are unread until processed, like a partial one."""
    run = f"unread{time.time_ns()}"
    topics = [f"{run}.a", f"{run}.b", f"{run}.c"]
    ensure_topics(broker.bootstrap, topics, partitions=2)
    with Publisher(broker.bootstrap) as publisher:
        delivery = Delivery()
        for topic in topics:
            for n in range(40):
                publisher.send_raw(topic, f"key-{n % 5}".encode(), b"{}", delivery)
        publisher.wait(delivery, 3 * 40, 30)
    ends = _ends(set(_written(broker, topics)))
    out = tmp_path / "unread.jsonl"
    options = ("--max-records", "10", "--max-poll-records", "10", "--unread", "0.3")
    done = lambda: len(records(out)) >= sum(ends.values())  # noqa: E731
    run_consumer(broker, topics, f"{run}-group", out, ack=10**9, until=done, options=options)

    processed: dict[tuple[str, int], int] = {}
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    for number, line in enumerate(lines):
        for topic, partition, offset in line["records"]:
            processed[topic, partition] = offset
        expected = {tp for tp, end in ends.items() if processed.get(tp, -1) + 1 < end}
        assert {(t, p) for t, p in line["unread"]} == expected, f"after batch {number}"
    assert processed == {tp: end - 1 for tp, end in ends.items()}


def _assert_in_order(taken: list[Record]) -> None:
    last: dict[tuple[str, int], int] = {}
    for topic, partition, offset in taken:
        assert offset > last.get((topic, partition), -1)
        last[topic, partition] = offset


def _ends(written: set[Record]) -> dict[tuple[str, int], int]:
    ends: dict[tuple[str, int], int] = {}
    for topic, partition, offset in written:
        ends[topic, partition] = max(ends.get((topic, partition), 0), offset + 1)
    return ends


def _written(broker: EmbeddedBroker, topics: list[str]) -> list[Record]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused"})
    try:
        found = []
        for topic in topics:
            for partition in range(2):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                found += [(topic, partition, offset) for offset in range(low, high)]
        return found
    finally:
        consumer.close()
