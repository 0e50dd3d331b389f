"""The Python producer API, against the real broker."""

from __future__ import annotations

import pytest

from producers import publish
from tests.factories import event
from tests.integration.conftest import published
from touchstream.broker import EmbeddedBroker, free_port
from touchstream.errors import BrokerError


def test_publish_returns_once_kafka_has_every_event(
    broker: EmbeddedBroker, pipeline_env: dict[str, str]
) -> None:
    events = [
        event(event_id="api-1", channel="web", kind="page_view", conversation_id=None),
        event(event_id="api-2", channel="email"),
        event(event_id="api-3", customer_id="cust-2"),
    ]
    prefix = pipeline_env["TOUCHSTREAM_TOPIC_PREFIX"]
    assert publish(events, bootstrap=broker.bootstrap, prefix=prefix) == 3
    records = published(broker, pipeline_env, expected=3)
    assert sorted((record["event_id"], record["channel"]) for record in records) == [
        ("api-1", "web"), ("api-2", "email"), ("api-3", "chat")
    ]  # fmt: skip


def test_publish_raises_when_kafka_does_not_acknowledge() -> None:
    with pytest.raises(BrokerError, match="did not acknowledge"):
        publish([event()], bootstrap=f"127.0.0.1:{free_port()}", timeout=2)
