"""The `touchpoints` table: one row per accepted event."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from touchstream.schemas.topics import Source
from touchstream.schemas.touchpoint import TouchpointEvent
from touchstream.sinks.clickhouse import ClickHouse
from touchstream.sinks.erasure import erase
from touchstream.streams.metrics.records import Erasure

TABLE = "touchpoints"
COLUMNS = [
    "event_id", "schema_version", "customer_id", "channel", "kind", "direction", "actor",
    "conversation_id", "agent_id", "team_id", "occurred_at", "received_at", "survey_type", "survey_score",
    "consent_analytics", "attributes", "source_topic", "source_partition", "source_offset",
]  # fmt: skip


def row(event: TouchpointEvent, source: Source) -> tuple[Any, ...]:
    return (
        event.event_id,
        event.schema_version,
        event.customer_id,
        event.channel.value,
        event.kind.value,
        event.direction.value,
        event.actor.value,
        event.conversation_id,
        event.agent_id,
        event.team_id,
        event.occurred_at,
        event.received_at,
        event.survey.type if event.survey else None,
        event.survey.score if event.survey else None,
        event.consent.analytics if event.consent else None,
        dict(event.attributes),
        source.topic,
        source.partition,
        source.offset,
    )


def dedup_token(sources: Sequence[Source]) -> str:
    """Same records -> same token, so ClickHouse drops an identical retried insert."""
    digest = hashlib.sha256()
    for source in sorted(sources, key=lambda s: (s.topic, s.partition, s.offset)):
        digest.update(f"{source.topic}\0{source.partition}\0{source.offset}\n".encode())
    return f"{TABLE}:{digest.hexdigest()}"


def write(
    clickhouse: ClickHouse,
    events: Sequence[tuple[TouchpointEvent, Source]],
    sources: Sequence[Source],
    erasures: Sequence[Erasure] = (),
) -> None:
    """Insert a batch's touchpoints (`sources`: every record of the batch, for the insert's
    deduplication token); first, the touchpoints the batch's erasures cover go."""
    if erasures:
        erase(clickhouse, erasures, [TABLE])
    rows = [row(event, source) for event, source in events]
    if rows:
        clickhouse.insert(TABLE, list(rows), COLUMNS, dedup_token=dedup_token(sources))
