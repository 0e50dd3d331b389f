"""Splitting a batch of raw records into accepted events and dead letters (no Kafka here)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from touchstream.schemas.codec import Rejected, decode
from touchstream.schemas.topics import Source, dead_letter_headers
from touchstream.schemas.touchpoint import MAX_CLOCK_SKEW, TouchpointEvent


@dataclass(frozen=True, slots=True)
class RawRecord:
    key: bytes | None
    value: bytes | None
    source: Source


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected record: the raw bytes as received, why, and where from."""

    key: bytes | None
    value: bytes | None
    reason: str
    source: Source

    def headers(self, now: datetime | None = None) -> list[tuple[str, bytes]]:
        where = (self.source.topic, self.source.partition, self.source.offset)
        return dead_letter_headers(self.reason, record=where, now=now)


@dataclass(slots=True)
class Split:
    accepted: list[tuple[TouchpointEvent, Source]] = field(default_factory=list)
    rejected: list[DeadLetter] = field(default_factory=list)


def split(
    records: Iterable[RawRecord],
    *,
    expected_channel: dict[str, str],
    max_skew: timedelta = MAX_CLOCK_SKEW,
    now: datetime | None = None,
) -> Split:
    """Decode every record; reject the invalid ones and those on the wrong channel topic.

    `expected_channel` maps an input topic to the channel its events must carry, so an
    event published to `touchpoints.email` claiming `channel=web` is a dead letter, not
    silently counted under another channel. With `now`, an event dated more than
    `max_skew` after it is a dead letter too (`schemas.codec.decode`).
    """
    result = Split()
    for record in records:
        decoded = decode(record.value, max_skew=max_skew, now=now)
        if isinstance(decoded, Rejected):
            result.rejected.append(DeadLetter(record.key, record.value, decoded.reason, record.source))
            continue
        channel = expected_channel.get(record.source.topic)
        if channel is not None and decoded.channel.value != channel:
            reason = f"channel: event says {decoded.channel.value!r} but arrived on {record.source.topic}"
            result.rejected.append(DeadLetter(record.key, record.value, reason, record.source))
            continue
        result.accepted.append((decoded, record.source))
    return result
