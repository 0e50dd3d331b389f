"""Kafka topic names (SPEC §3). These names are contract: other systems produce to them."""

from __future__ import annotations

from schemas.touchpoint import Channel

DEFAULT_PREFIX = "touchpoints"


def input_topic(channel: Channel | str, prefix: str = DEFAULT_PREFIX) -> str:
    """`touchpoints.<channel>`: where adapters publish, keyed by `customer_id`."""
    return f"{prefix}.{Channel(channel).value}"


def input_topics(prefix: str = DEFAULT_PREFIX) -> list[str]:
    return [input_topic(channel, prefix) for channel in Channel]


def dead_letter_topic(prefix: str = DEFAULT_PREFIX) -> str:
    """`touchpoints.dlq`: raw bytes of rejected records, the reason and the source in headers."""
    return f"{prefix}.dlq"


def all_topics(prefix: str = DEFAULT_PREFIX) -> list[str]:
    return [*input_topics(prefix), dead_letter_topic(prefix)]
