"""The HTTP collector as a user runs it (`touchstream collector`), against the real broker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.topics import input_topics
from tests.factories import event_data
from tests.integration.conftest import read_topics
from touchstream.broker import EmbeddedBroker, free_port
from touchstream.process import wait_until

KEY = "test-key-0123456789"


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
        try:
            return self.get("/healthz")[0] == 200
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
        "TOUCHSTREAM_COLLECTOR_MAX_BATCH": "50",
        "TOUCHSTREAM_COLLECTOR_MAX_BODY_BYTES": "65536",
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


def events(count: int, prefix: str = "evt") -> list[dict[str, Any]]:
    return [
        event_data(event_id=f"{prefix}-{number}", customer_id=f"cust-{number % 7}") for number in range(count)
    ]


def test_accepted_events_are_in_kafka_when_the_answer_comes(
    broker: EmbeddedBroker, collector_env: dict[str, str], start_collector: Callable[..., Collector]
) -> None:
    collector = start_collector()
    single = event_data(event_id="single", received_at="1999-01-01T00:00:00+00:00")
    assert collector.post(single) == (202, {"accepted": 1, "rejected": 0, "errors": []})
    batch = events(50)
    status, answer = collector.post(batch)
    assert (status, answer["accepted"]) == (202, 50)
    # A redelivered event is published again with the same id; the sink collapses it.
    assert collector.post(single)[0] == 202

    records = published(broker, collector_env, expected=52)
    assert sorted(record["event_id"] for record in records) == sorted(
        ["single", "single", *(event["event_id"] for event in batch)]
    )
    stamped = [record["received_at"] for record in records if record["event_id"] == "single"]
    assert all(not stamp.startswith("1999") for stamp in stamped), "received_at is set by the collector"

    status, text = collector.get("/metrics")
    assert status == 200
    assert "touchstream_collector_events_accepted_total 52" in text
    assert "touchstream_collector_publish_seconds_count 3" in text
    status, spec = collector.get("/openapi.json")
    assert status == 200 and "/v1/events" in spec["paths"]
    assert collector.stop() == 0


def test_each_item_is_judged_on_its_own(
    broker: EmbeddedBroker, collector_env: dict[str, str], start_collector: Callable[..., Collector]
) -> None:
    collector = start_collector()
    items = [
        event_data(event_id="good-1"),
        event_data(event_id="naive", occurred_at="2026-03-02T09:00:00"),
        event_data(event_id="pigeon", channel="carrier_pigeon"),
        "not an object",
        event_data(event_id="wrong-type", customer_id=42),
        event_data(event_id="good-2"),
    ]
    status, answer = collector.post(items)
    assert status == 202
    assert answer["accepted"] == 2 and answer["rejected"] == 4
    reasons = {error["index"]: error["reason"] for error in answer["errors"]}
    assert "timezone" in reasons[1] and "channel" in reasons[2]
    assert "JSON object" in reasons[3] and "customer_id" in reasons[4]
    assert [error["event_id"] for error in answer["errors"]] == ["naive", "pigeon", None, "wrong-type"]

    status, answer = collector.post([event_data(event_id="bad", kind="teleport")])
    assert status == 422 and answer["accepted"] == 0 and "kind" in answer["errors"][0]["reason"]

    records = published(broker, collector_env, expected=3, timeout=8)
    assert sorted(record["event_id"] for record in records) == ["good-1", "good-2"]


BAD_REQUESTS: list[tuple[dict[str, Any], int, str]] = [
    ({"key": None}, 401, "API key"),
    ({"key": "forged-key"}, 401, "API key"),
    ({"raw": b'{"event_id": "x",'}, 400, "not valid JSON"),
    ({"raw": b"[]"}, 400, "empty batch"),
    ({"content_type": "text/plain"}, 415, "application/json"),
    ({"raw": json.dumps(events(51)).encode()}, 413, "exceeds the limit of 50"),
    ({"raw": b'[{"pad": "' + b"x" * 70_000 + b'"}]'}, 413, "exceeds 65536 bytes"),
]


def test_bad_requests_get_a_clear_4xx_and_publish_nothing(
    broker: EmbeddedBroker, collector_env: dict[str, str], start_collector: Callable[..., Collector]
) -> None:
    collector = start_collector()
    for request_kwargs, status, says in BAD_REQUESTS:
        answer_status, answer = collector.post([event_data(event_id="would-be")], **request_kwargs)
        assert (answer_status, says in answer["error"]) == (status, True), (request_kwargs.keys(), answer)
    assert published(broker, collector_env, expected=1, timeout=5) == []
    rejected = collector.get("/metrics")[1]
    assert 'touchstream_collector_requests_rejected_total{reason="unauthorized"} 2' in rejected
    assert 'touchstream_collector_requests_rejected_total{reason="body_too_large"} 1' in rejected


def test_unreachable_kafka_is_a_503_not_a_hang(start_collector: Callable[..., Collector]) -> None:
    collector = start_collector(KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
                                TOUCHSTREAM_COLLECTOR_PUBLISH_TIMEOUT_SECONDS="2")  # fmt: skip
    began = time.monotonic()
    status, answer = collector.post([event_data(event_id="stranded")])
    assert status == 503 and "retry" in answer["error"]
    assert time.monotonic() - began < 25, "answered after the publish timeout, not left hanging"
    assert collector.get("/healthz")[0] == 200, "the collector lives on"
    assert "touchstream_collector_publish_failures_total 1" in collector.get("/metrics")[1]
