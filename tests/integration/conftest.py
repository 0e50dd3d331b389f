"""Real services for integration tests: the embedded broker, and workers owning chDB.

One broker serves the session; each test gets its own topic prefix, consumer group and
data directory, so tests never see each other's records. chDB allows one owner per
directory (and one directory per process), so ClickHouse is always reached through
the worker process that owns it, exactly as `touchstream sql` does.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from touchstream.broker import EmbeddedBroker, free_port
from touchstream.kafka import ensure_topics
from touchstream.process import WorkerProcess, wait_until
from touchstream.schemas.topics import all_topics, dead_letter_topic, input_topics

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


OFFICE_HOURS = {"mon-fri": "09:00-12:00,12:30-17:00"}  # Berlin; a lunch break inside the simulated day


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
        "TOUCHSTREAM_CLICKHOUSE_HTTP_PORT": "0",
        "TOUCHSTREAM_SESSION_TIMEOUT_MS": "6000",
        "TOUCHSTREAM_REBALANCE_TIMEOUT_MS": "8000",
        "TOUCHSTREAM_SINK_FLUSH_SECONDS": "0.3",
        "TOUCHSTREAM_EMPTY_FETCH_WAIT_MS": "100",  # the session broker is noida: see streams/fetchpace.py
        "TOUCHSTREAM_LOG_LEVEL": "info",
        "TOUCHSTREAM_BUSINESS_HOURS": json.dumps({"*": {"timezone": "Europe/Berlin", "hours": OFFICE_HOURS}}),
    }
    env.pop("CLICKHOUSE_URL", None)
    return env


class StartWorker(Protocol):
    def __call__(self, **overrides: str) -> WorkerProcess: ...


#: For the kill tests: batches small enough that the worker is killed with a backlog left.
SMALL_BATCHES = {"TOUCHSTREAM_SINK_BATCH_SIZE": "300"}


@pytest.fixture
def start_worker(pipeline_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    workers: list[WorkerProcess] = []

    def start(**overrides: str) -> WorkerProcess:
        """A worker on the pipeline's environment, with `overrides` (e.g. TOUCHSTREAM_... settings)."""
        worker = WorkerProcess(
            {**pipeline_env, **overrides}, Path(pipeline_env["TOUCHSTREAM_DATA_DIR"]), tmp_path / "worker.log"
        )
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:
        if worker.process is not None and worker.process.poll() is None:
            worker.stop()


def unconsumed(env: dict[str, str]) -> dict[str, int]:
    """Per input topic-partition, how far the worker group's committed offset is behind
    the end of the partition (only those behind)."""
    consumer = Consumer({"bootstrap.servers": env["KAFKA_BOOTSTRAP"], "group.id": env["TOUCHSTREAM_APP_ID"]})
    try:
        partitions = [
            TopicPartition(topic, partition)
            for topic in input_topics(env["TOUCHSTREAM_TOPIC_PREFIX"])
            for partition in range(PARTITIONS)
        ]
        behind = {}
        for tp in consumer.committed(partitions, timeout=10):
            _, end = consumer.get_watermark_offsets(tp, timeout=10)
            committed = max(tp.offset, 0)  # OFFSET_INVALID (-1001) when nothing was committed
            if committed < end:
                behind[f"{tp.topic}/{tp.partition}"] = end - committed
        return behind
    finally:
        consumer.close()


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


# -- the HTTP collector, run as a user runs it (`touchstream collector`) ----------------

KEY = "test-key-0123456789"
WEB_KEY = "web-key-public-0123"
WEBHOOK_SECRET = "webhook-secret-for-tests"
WEBHOOK_SECRETS = {
    name: WEBHOOK_SECRET
    for name in ("generic", "intercom", "messenger", "mailgun", "email/sendgrid", "zendesk")
}


class Collector:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**env, "TOUCHSTREAM_COLLECTOR_PORT": str(self.port)}
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "touchstream.cli", "collector"],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self.log = log
        wait_until(self._up, timeout=30, what=f"collector to answer (log {log})")

    def _up(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        try:  # serving: ready (200), or not ready with its reasons (503)
            return self.get("/healthz")[0] in (200, 503)
        except OSError:
            return False

    def request(
        self, path: str, body: bytes | None = None, *, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, data=body, headers=headers or {},
                                         method="POST" if body is not None else "GET")  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode()

    def get(self, path: str) -> tuple[int, Any]:
        return self.request(path)

    def post(self, payload: object, *, key: str | None = KEY, raw: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, Any]:  # fmt: skip
        headers = {"Content-Type": content_type}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        body = raw if raw is not None else json.dumps(payload).encode()
        return self.request("/v1/events", body, headers=headers)

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=30)


@pytest.fixture
def collector_env(pipeline_env: dict[str, str]) -> dict[str, str]:
    return {
        **pipeline_env,
        "TOUCHSTREAM_COLLECTOR_API_KEYS": f"another-key, {KEY}",
        "TOUCHSTREAM_COLLECTOR_WEB_KEYS": WEB_KEY,
        "TOUCHSTREAM_COLLECTOR_MAX_BATCH": "50",
        "TOUCHSTREAM_COLLECTOR_MAX_BODY_BYTES": "65536",
        "TOUCHSTREAM_COLLECTOR_WEBHOOK_MAX_BODY_BYTES": "262144",
        "TOUCHSTREAM_WEBHOOK_SECRETS": json.dumps(WEBHOOK_SECRETS),
        "TOUCHSTREAM_WEBHOOK_VERIFY_TOKEN": "meta-verify-token",
        "TOUCHSTREAM_EMAIL_BRAND_DOMAINS": "shop.example",
    }


@pytest.fixture
def start_collector(collector_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Collector]]:
    started: list[Collector] = []

    def start(**overrides: str) -> Collector:
        collector = Collector({**collector_env, **overrides}, tmp_path / f"collector-{len(started)}.log")
        started.append(collector)
        return collector

    yield start
    for collector in started:
        if collector.process.poll() is None:
            collector.stop()


def published(
    broker: EmbeddedBroker, env: dict[str, str], expected: int, timeout: float = 20
) -> list[dict[str, Any]]:
    messages = read_topics(broker.bootstrap, input_topics(env["TOUCHSTREAM_TOPIC_PREFIX"]),
                           expected=expected, timeout=timeout)  # fmt: skip
    return [json.loads(message.value() or b"") for message in messages]


# -- chDB in this process: one directory per process, so one per session; a database per test.


@pytest.fixture(scope="session")
def chdb_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import clickhouse_connect

    client = clickhouse_connect.get_client(interface="chdb", path=str(tmp_path_factory.mktemp("chdb")))
    yield client
    client.close()


@pytest.fixture
def clickhouse(chdb_client: Any) -> Any:
    from touchstream.sinks.clickhouse import ClickHouse

    handle = ClickHouse(chdb_client, database=f"test_{os.getpid()}_{next(_counter)}", embedded=True)
    handle.migrate()
    chdb_client.database = handle.database  # unqualified names resolve to this test's database
    return handle
