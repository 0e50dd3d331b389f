"""Real services for integration tests: the embedded broker, and workers owning chDB.

One broker serves the session; each test gets its own topic prefix, consumer group and
data directory, so tests never see each other's records. chDB allows one owner per
directory (and one directory per process), so ClickHouse is always reached through
the worker process that owns it, exactly as `touchstream sql` does.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message

from schemas.topics import all_topics, dead_letter_topic
from touchstream.broker import EmbeddedBroker
from touchstream.kafka import ensure_topics
from touchstream.process import WorkerProcess

PARTITIONS = 4
_counter = itertools.count()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker("noida", tmp_path_factory.mktemp("broker")) as running:
        yield running


@pytest.fixture
def pipeline_env(broker: EmbeddedBroker, tmp_path: Path) -> dict[str, str]:
    """Environment for one isolated pipeline: own topics, group and data dir."""
    run = f"t{os.getpid()}x{next(_counter)}"
    prefix = f"{run}.touchpoints"
    ensure_topics(broker.bootstrap, all_topics(prefix), partitions=PARTITIONS)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": broker.bootstrap,
        "TOUCHSTREAM_DATA_DIR": str(tmp_path / "data"),
        "TOUCHSTREAM_TOPIC_PREFIX": prefix,
        "TOUCHSTREAM_APP_ID": f"{run}-worker",
        "TOUCHSTREAM_PARTITIONS": str(PARTITIONS),
        "TOUCHSTREAM_WORKER_PORT": "0",
        "TOUCHSTREAM_SESSION_TIMEOUT_MS": "6000",
        "TOUCHSTREAM_REBALANCE_TIMEOUT_MS": "8000",
        "TOUCHSTREAM_SINK_FLUSH_SECONDS": "0.3",
        "TOUCHSTREAM_EMPTY_FETCH_WAIT_MS": "100",  # the session broker is noida: see streams/fetchpace.py
        "TOUCHSTREAM_LOG_LEVEL": "info",
    }
    env.pop("CLICKHOUSE_URL", None)
    return env


@pytest.fixture
def start_worker(pipeline_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        worker = WorkerProcess(
            pipeline_env, Path(pipeline_env["TOUCHSTREAM_DATA_DIR"]), tmp_path / "worker.log"
        )
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:
        if worker.process is not None and worker.process.poll() is None:
            worker.stop()


def read_topic(bootstrap: str, topic: str, *, expected: int, timeout: float = 30) -> list[Message]:
    return read_topics(bootstrap, [topic], expected=expected, timeout=timeout)


def read_topics(bootstrap: str, topics: list[str], *, expected: int, timeout: float = 30) -> list[Message]:
    """Records of `topics` from the start: stops at `expected` of them, or at `timeout`."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe(topics)
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if message.error() is None:
                    messages.append(message)
    finally:
        consumer.close()
    return messages


def dlq_topic(env: dict[str, str]) -> str:
    return dead_letter_topic(env["TOUCHSTREAM_TOPIC_PREFIX"])
