"""The `touchpoints` table: one row per accepted event."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
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
    """Same records -> same token, so ClickHouse drops an identical retried insert.

    A batch holds every record its consumer read of a partition between two offsets, so
    per (topic, partition) the first and last offset, the count and the sum name its
    records (one pass; hashing each offset cost more than the rest of the insert's rows)."""
    spans: dict[tuple[str, int], list[int]] = {}
    for source in sources:
        offset = source.offset
        span = spans.get((source.topic, source.partition))
        if span is None:
            spans[source.topic, source.partition] = [offset, offset, 1, offset]
        else:
            if offset > span[1]:
                span[1] = offset
            elif offset < span[0]:
                span[0] = offset
            span[2] += 1
            span[3] += offset
    digest = hashlib.sha256()
    for (topic, partition), (first, last, count, total) in sorted(spans.items()):
        digest.update(f"{topic}\0{partition}\0{first}\0{last}\0{count}\0{total}\n".encode())
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


#: The stored event columns a `TouchpointEvent` is made of again.
EVENT_COLUMNS = [
    "event_id", "schema_version", "customer_id", "channel", "kind", "direction", "actor", "conversation_id",
    "agent_id", "team_id", "occurred_at", "received_at", "survey_type", "survey_score", "consent_analytics",
    "attributes",
]  # fmt: skip


def event_of(row: dict[str, Any]) -> TouchpointEvent:
    """A stored touchpoint as the event it was (times at the stored millisecond)."""
    survey = {"type": row["survey_type"], "score": row["survey_score"]} if row["survey_type"] else None
    consent = {"analytics": bool(row["consent_analytics"])} if row["consent_analytics"] is not None else None
    return TouchpointEvent.model_validate({
        **{key: row[key] for key in ("event_id", "schema_version", "customer_id", "channel", "kind",
                                     "direction", "actor", "conversation_id", "agent_id", "team_id",
                                     "attributes")},
        "occurred_at": _utc(row["occurred_at"]),
        "received_at": _utc(row["received_at"]),
        "survey": survey,
        "consent": consent,
    })  # fmt: skip


def _utc(value: datetime | str) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def stored_events(clickhouse: ClickHouse, customers: set[str]) -> dict[str, list[TouchpointEvent]]:
    """Every stored event of `customers` (a restatement's input), by customer."""
    found: dict[str, list[TouchpointEvent]] = {customer: [] for customer in customers}
    rows = clickhouse.rows(
        f"SELECT {', '.join(EVENT_COLUMNS)} FROM {clickhouse.database}.touchpoints FINAL "
        "WHERE customer_id IN {customers:Array(String)}",
        {"customers": sorted(customers)},
    )
    for values in rows:
        event = event_of(dict(zip(EVENT_COLUMNS, values, strict=True)))
        found[event.customer_id].append(event)
    return found
