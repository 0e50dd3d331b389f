"""The embedded broker cannot compact the state changelog, so the worker does
(`streams.compaction`): after compaction the changelog holds one record per key, the
newest, also for keys a step wrote while the compaction was copying, and recovery from
it gives the local state; the real noida broker deletes the rest."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from rocksdict import Options, Rdict

from schemas.partitioning import partition_of
from streams.compaction import ChangelogCompaction
from streams.partitions import ChangelogWriter, RocksState
from tests.integration.conftest import read_topic
from touchstream.broker import EmbeddedBroker
from touchstream.kafka import ensure_topics

PARTITIONS = 2
KEYS = [f"cust-{n:03}".encode() for n in range(200)]


@pytest.fixture
def state(tmp_path: Path, broker: EmbeddedBroker) -> Iterator[RocksState]:
    topic = f"state-changelog-{time.time_ns()}"
    ensure_topics(broker.bootstrap, [topic], partitions=PARTITIONS)
    dbs = {p: Rdict(str(tmp_path / f"p{p}"), options=Options(raw_mode=True)) for p in range(PARTITIONS)}
    yield RocksState(topic, PARTITIONS, dbs.__getitem__, b"__offset__")
    for db in dbs.values():
        db.close()


def low_watermarks(bootstrap: str, topic: str) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), cached=False)[0]
            for p in range(PARTITIONS)
        ]
    finally:
        consumer.close()


def test_compaction_keeps_the_newest_record_of_every_key(broker: EmbeddedBroker, state: RocksState) -> None:
    writer = ChangelogWriter(broker.bootstrap)
    compaction = ChangelogCompaction(broker.bootstrap, writer, state)
    compaction.CHUNK = 30  # several chunks per partition, so steps write between them
    compaction.MINIMUM = 100

    async def scenario() -> None:
        for version in range(5):  # five steps, each writing every key
            await writer.write(state, [(key, f"{key.decode()} v{version}".encode()) for key in KEYS])
        ends = {}
        for partition in range(PARTITIONS):
            end = compaction.due(partition)
            assert end is not None, "5 records per key is more than 3 times the keys"
            ends[partition] = end

        async def steps() -> None:  # a step between chunks: newer records of some keys
            for version in (5, 6):
                await asyncio.sleep(0.05)
                await writer.write(state, [(key, f"{key.decode()} v{version}".encode()) for key in KEYS[::7]])

        stepping = asyncio.ensure_future(steps())
        for partition in range(PARTITIONS):
            assert await compaction.compact(partition, ends[partition])
        await stepping
        for partition in range(PARTITIONS):
            assert compaction.due(partition) is None

    asyncio.run(scenario())
    lows = low_watermarks(broker.bootstrap, state.topic)
    assert all(low > 0 for low in lows), "the records below the compaction's start are deleted"
    held = 2 * len(KEYS[::7]) * 2 + len(KEYS)  # at most: every key once, the steps' records twice
    messages = read_topic(broker.bootstrap, state.topic, expected=held, timeout=10)
    assert len(messages) <= held
    recovered: dict[bytes, bytes] = {}
    for message in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        recovered[message.key() or b""] = message.value() or b""
    local = {key: value for p in range(PARTITIONS) for key, value in state.items(p)}
    assert recovered == local
    assert all(local[key].endswith(b" v6") for key in KEYS[::7])
    assert all(local[key].endswith(b" v4") for key in KEYS if key not in KEYS[::7])
    assert all(partition_of(m.key() or b"", PARTITIONS) == m.partition() for m in messages)


def test_a_partition_no_longer_owned_is_not_deleted(broker: EmbeddedBroker, state: RocksState) -> None:
    writer = ChangelogWriter(broker.bootstrap)
    compaction = ChangelogCompaction(broker.bootstrap, writer, state)

    async def scenario() -> bool:
        for version in range(2):
            await writer.write(state, [(key, f"v{version}".encode()) for key in KEYS])
        newest = state.newest_offset(0)
        assert newest is not None
        return await compaction.compact(0, newest + 1, owned=lambda: False)

    assert asyncio.run(scenario()) is False
    assert low_watermarks(broker.bootstrap, state.topic) == [0, 0]
