"""The docker-compose stack for real: Apache Kafka, ClickHouse server, the worker image.

Needs a Docker engine (testcontainers drives `docker compose`); without one the test
is skipped, saying so.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect
import pytest

from touchstream.kafka import ensure_topics
from touchstream.process import wait_until
from touchstream.producers.publisher import Publisher
from touchstream.producers.simulator import Simulator, SimulatorConfig
from touchstream.schemas.topics import all_topics

ROOT = Path(__file__).parents[2]


def docker_unavailable() -> str | None:
    """Why no Docker engine can be used here, or None when one answers."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30s"
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine answers `docker info` ({reason})"
    return None


pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        (why := docker_unavailable()) is not None,
        reason=f"needs a Docker engine for testcontainers: {why}",
    ),
]


@pytest.fixture(scope="module")
def stack() -> Iterator[None]:
    from testcontainers.compose import DockerCompose

    with DockerCompose(ROOT, compose_file_name="docker-compose.yml", build=True, wait=True):
        yield


def test_compose_stack_moves_events_from_kafka_to_clickhouse(stack: None) -> None:
    bootstrap = "localhost:9092"
    ensure_topics(bootstrap, all_topics(), partitions=4)
    events = list(Simulator(SimulatorConfig(seed=3), datetime(2026, 3, 2, tzinfo=UTC)).events(2000))
    with Publisher(bootstrap) as publisher:
        assert publisher.publish(events, timeout=60).ok
    client = clickhouse_connect.get_client(
        host="localhost", port=8123, username="touchstream", password="touchstream", database="touchstream"
    )

    def count() -> int:
        return int(client.query("SELECT count() FROM touchpoints FINAL").result_rows[0][0])

    wait_until(lambda: count() >= len(events), timeout=180, what="rows in the ClickHouse server")
    stored = {row[0] for row in client.query("SELECT event_id FROM touchpoints FINAL").result_rows}
    assert stored == {event.event_id for event in events}
