"""The Python producer API, against the real broker."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner

from tests.factories import event
from tests.integration.conftest import PARTITIONS, published, read_topics
from touchstream.broker import EmbeddedBroker, free_port
from touchstream.producers import publish
from touchstream.schemas.errors import BrokerError
from touchstream.schemas.topics import input_topic
from touchstream.schemas.touchpoint import Channel


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


def test_customers_land_where_java_and_faust_partition_them(
    broker: EmbeddedBroker, pipeline_env: dict[str, str]
) -> None:
    """Keys are hashed with murmur2, as aiokafka's DefaultPartitioner (Faust) and Java do."""
    customers = [f"cust-{number}" for number in range(60)] + ["email:3f2a", "anon-5c1e", "Ünïcode-ñ"]
    events = [event(event_id=f"p-{n}", customer_id=customer) for n, customer in enumerate(customers)]
    prefix = pipeline_env["TOUCHSTREAM_TOPIC_PREFIX"]
    publish(events, bootstrap=broker.bootstrap, prefix=prefix)
    messages = read_topics(broker.bootstrap, [input_topic(Channel.CHAT, prefix)], expected=len(events))
    partitions = list(range(PARTITIONS))
    java = DefaultPartitioner()
    landed = {(message.key() or b"").decode(): message.partition() for message in messages}
    assert landed == {customer: java(customer.encode(), partitions, partitions) for customer in customers}


def test_publish_raises_when_kafka_does_not_acknowledge() -> None:
    with pytest.raises(BrokerError, match="did not acknowledge"):
        publish([event()], bootstrap=f"127.0.0.1:{free_port()}", timeout=2)
