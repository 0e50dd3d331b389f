"""The customer-state records reach the changelog partition their key hashes to (a retired
conversation's, and its deletion, its customer's), and `produce` returns only once Kafka
has them, with the newest offset per partition."""

from __future__ import annotations

import time

from tests.integration.conftest import read_topic
from touchstream.broker import EmbeddedBroker
from touchstream.kafka import ensure_topics
from touchstream.schemas.partitioning import partition_of
from touchstream.streams.metrics.state import conversation_key, customer_of
from touchstream.streams.partitions import StateWriter


def test_records_land_in_their_key_partition_and_are_acknowledged(broker: EmbeddedBroker) -> None:
    topic = f"changelog-test-{time.time_ns()}"
    ensure_topics(broker.bootstrap, [topic], partitions=4)
    writer = StateWriter(broker.bootstrap)
    customers = [f"cust-{n:04}".encode() for n in range(500)]
    records: list[tuple[bytes, bytes | None]] = [
        (key, f'{{"n": {n}}}'.encode()) for n, key in enumerate(customers)
    ]
    records += [(conversation_key(key.decode(), "conversation-1"), b"[]") for key in customers[:100]]
    records += [(conversation_key(key.decode(), "conversation-2"), None) for key in customers[:100]]
    newest = writer.produce(topic, records, 4)
    customer = {key: customer_of(key) for key, _ in records}
    expected = {p: sum(1 for key, _ in records if partition_of(customer[key], 4) == p) - 1 for p in range(4)}
    assert newest == expected  # offsets from 0: the last offset per partition, all acknowledged
    messages = read_topic(broker.bootstrap, topic, expected=len(records))
    assert sorted((m.key(), m.value()) for m in messages) == sorted(
        records, key=lambda r: (r[0], r[1] or b"")
    )
    assert all(m.partition() == partition_of(customer[m.key() or b""], 4) for m in messages)
