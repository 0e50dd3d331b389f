"""The HTTP collector as a user runs it (`touchstream collector`), against the real broker."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from typing import Any

from tests.factories import event_data
from tests.integration.conftest import Collector, published
from touchstream.broker import EmbeddedBroker, free_port


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
    assert 'touchstream_collector_events_accepted_total{source="events"} 52' in text
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
        event_data(event_id="y9999", occurred_at="9999-12-31T00:00:00+00:00"),
    ]
    status, answer = collector.post(items)
    assert status == 202
    assert answer["accepted"] == 2 and answer["rejected"] == 5
    reasons = {error["index"]: error["reason"] for error in answer["errors"]}
    assert "timezone" in reasons[1] and "channel" in reasons[2]
    assert "JSON object" in reasons[3] and "customer_id" in reasons[4]
    assert "clock skew" in reasons[6]
    assert [error["event_id"] for error in answer["errors"]] == [
        "naive",
        "pigeon",
        None,
        "wrong-type",
        "y9999",
    ]

    status, answer = collector.post(event_data(event_id="bad", kind="teleport"))
    assert status == 422 and answer["accepted"] == 0 and "kind" in answer["errors"][0]["reason"]
    status, answer = collector.post([event_data(event_id="bad", kind="teleport")])
    assert status == 202, "a batch's items are judged one by one, even when none is valid"
    assert answer["accepted"] == 0 and "kind" in answer["errors"][0]["reason"]

    records = published(broker, collector_env, expected=3, timeout=8)
    assert sorted(record["event_id"] for record in records) == ["good-1", "good-2"]


BAD_REQUESTS: list[tuple[dict[str, Any], int, str]] = [
    ({"key": None}, 401, "API key"),
    ({"key": "forged-key"}, 401, "API key"),
    ({"raw": b'{"event_id": "x",'}, 400, "not valid JSON"),
    ({"raw": b"[]"}, 400, "empty batch"),
    ({"content_type": "text/plain"}, 415, "application/json"),
    ({"raw": json.dumps(events(51)).encode()}, 422, "exceeds the limit of 50"),
    ({"raw": b'[{"pad": "' + b"x" * 70_000 + b'"}]'}, 413, "exceeds 65536 bytes"),
    ({"raw": b"[" * 30_000 + b"]" * 30_000}, 400, "nested too deeply"),
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
    metric = "touchstream_collector_requests_rejected_total"
    assert metric + '{source="events",reason="unauthorized"} 2' in rejected
    assert metric + '{source="events",reason="body_too_large"} 1' in rejected
    assert metric + '{source="events",reason="invalid_json"} 2' in rejected


def test_an_api_key_that_is_not_utf8_is_a_401(start_collector: Callable[..., Collector]) -> None:
    collector = start_collector()
    connection = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=10)
    connection.putrequest("POST", "/v1/events")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("X-API-Key", b"\xff\xfe\x80key")
    connection.putheader("Content-Length", "2")
    connection.endheaders(b"{}")
    answer = connection.getresponse()
    assert answer.status == 401 and "API key" in json.loads(answer.read())["error"]
    rejected = collector.get("/metrics")[1]
    assert (
        'touchstream_collector_requests_rejected_total{source="events",reason="unauthorized"} 1' in rejected
    )


def test_unreachable_kafka_is_a_503_not_a_hang(start_collector: Callable[..., Collector]) -> None:
    collector = start_collector(KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
                                TOUCHSTREAM_COLLECTOR_PUBLISH_TIMEOUT_SECONDS="2")  # fmt: skip
    began = time.monotonic()
    status, answer = collector.post([event_data(event_id="stranded")])
    assert status == 503 and "retry" in answer["error"]
    assert time.monotonic() - began < 25, "answered after the publish timeout, not left hanging"
    status, health = collector.get("/healthz")
    assert status == 503, "the collector lives on, and says it is not ready"
    assert health["status"] == "not ready" and "does not answer" in health["reasons"][0]
    assert 'touchstream_collector_publish_failures_total{source="events"} 1' in collector.get("/metrics")[1]
