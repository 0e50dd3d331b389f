"""Kafka topic names and dead-letter headers (SPEC §3). These names are contract: other
systems produce to these topics and read the dead letters' headers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from touchstream.schemas.touchpoint import Channel

DEFAULT_PREFIX = "touchpoints"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record was read from: kept with its row so any row can be traced to Kafka."""

    topic: str
    partition: int
    offset: int


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


#: The headers of a dead letter, beside its raw key and value.
REASON_HEADER = "touchstream.reason"
FAILED_AT_HEADER = "touchstream.failed_at"
#: Where it came from: a Kafka record (topic, partition, offset) or a file (path:line).
SOURCE_TOPIC_HEADER = "touchstream.source.topic"
SOURCE_PARTITION_HEADER = "touchstream.source.partition"
SOURCE_OFFSET_HEADER = "touchstream.source.offset"
SOURCE_FILE_HEADER = "touchstream.source.file"


def dead_letter_headers(
    reason: str,
    *,
    file: str | None = None,
    record: tuple[str, int, int] | None = None,
    now: datetime | None = None,
) -> list[tuple[str, bytes]]:
    """A dead letter's headers: why, where from (`file` "path:line", or `record` (topic,
    partition, offset)), and when."""
    headers = [(REASON_HEADER, reason.encode())]
    if file is not None:
        headers.append((SOURCE_FILE_HEADER, file.encode()))
    if record is not None:
        topic, partition, offset = record
        headers += [
            (SOURCE_TOPIC_HEADER, topic.encode()),
            (SOURCE_PARTITION_HEADER, str(partition).encode()),
            (SOURCE_OFFSET_HEADER, str(offset).encode()),
        ]
    headers.append((FAILED_AT_HEADER, (now or datetime.now(UTC)).isoformat().encode()))
    return headers
