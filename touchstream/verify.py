"""`touchstream verify`: recompute the metrics from `touchpoints` and diff them with what
the stream wrote.

The recomputation is the brute-force definition (`streams.metrics.reference`) over the
stored events, minus those the stream reported late, each partition up to the horizon
the stream recorded for it in `stream_horizons` (where none is recorded: its newest
event - grace, the stream's horizon once every input topic is caught up). Run it when
the worker is stopped or has nothing left to read: while it writes, the tables are read
at slightly different moments. Events are stored to the millisecond, so response
times are compared within 2 ms. Loads every event into memory.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.touchpoint import TouchpointEvent
from streams.metrics import MetricsConfig
from streams.metrics.reference import Tables, recompute
from streams.partitions import partition_of

Fetch = Callable[[str], list[dict[str, Any]]]
SECONDS_TOLERANCE = 0.002

EVENTS = """
    SELECT event_id, schema_version, customer_id, channel, kind, direction, actor, conversation_id,
           agent_id, occurred_at, received_at, survey_type, survey_score, consent_analytics, attributes
    FROM touchpoints FINAL"""
STREAM = {
    "responses": "SELECT reply_event_id, customer_id, response_seconds, response_business_seconds, "
    "is_first_response "
    "FROM responses FINAL",
    "engagement": "SELECT customer_id, level, interactions_30d FROM engagement FINAL",
    "waiting": "SELECT customer_id, conversation_id, answered FROM waiting FINAL",
    "engagement_changes": "SELECT customer_id, previous_level, level FROM engagement_changes FINAL",
    "surveys": "SELECT event_id, score FROM surveys FINAL",
}


@dataclass
class TableDiff:
    table: str
    expected: int
    actual: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def event_from_row(row: dict[str, Any]) -> TouchpointEvent:
    survey = {"type": row["survey_type"], "score": row["survey_score"]} if row["survey_type"] else None
    consent = {"analytics": bool(row["consent_analytics"])} if row["consent_analytics"] is not None else None
    return TouchpointEvent.model_validate({
        **{key: row[key] for key in ("event_id", "schema_version", "customer_id", "channel", "kind",
                                     "direction", "actor", "conversation_id", "agent_id", "attributes")},
        "occurred_at": _time(row["occurred_at"]),
        "received_at": _time(row["received_at"]),
        "survey": survey,
        "consent": consent,
    })  # fmt: skip


def expected_tables(
    events: list[TouchpointEvent],
    late: set[str],
    config: MetricsConfig,
    partitions: int,
    horizons: dict[int, datetime] | None = None,
) -> Tables:
    kept = [event for event in events if event.event_id not in late]
    merged = Tables()
    for partition in range(partitions):
        mine = [e for e in kept if partition_of(e.customer_id.encode(), partitions) == partition]
        if not mine:
            continue
        horizon = (horizons or {}).get(partition)
        if horizon is None:  # nothing recorded: the stream's horizon once caught up
            horizon = max(event.occurred_at for event in mine) - config.grace
        tables = recompute(mine, config, horizon)
        merged.responses |= tables.responses
        merged.engagement |= tables.engagement
        merged.waiting |= tables.waiting
        merged.changes += tables.changes
        merged.surveys |= tables.surveys
    return merged


def _diff(table: str, expected: Counter[str], actual: Counter[str]) -> TableDiff:
    missing = sorted((expected - actual).elements())
    unexpected = sorted((actual - expected).elements())
    return TableDiff(table, sum(expected.values()), sum(actual.values()), missing, unexpected)


def verify(fetch: Fetch, config: MetricsConfig, partitions: int) -> list[TableDiff]:
    events = [event_from_row(row) for row in fetch(EVENTS)]
    late = {row["event_id"] for row in fetch("SELECT event_id FROM late_events FINAL")}
    horizons = {
        int(row["partition"]): _time(row["horizon"])
        for row in fetch("SELECT partition, max(horizon) AS horizon FROM stream_horizons GROUP BY partition")
    }
    tables = expected_tables(events, late, config, partitions, horizons)
    stream = {name: fetch(query) for name, query in STREAM.items()}

    def keys(rows: list[tuple[Any, ...]]) -> Counter[str]:
        return Counter(json.dumps(row) for row in rows)

    # Response times: the same record must exist, and its seconds (also within business
    # hours) agree within the tolerance.
    times = {
        r.reply_event_id: (r.response_seconds, r.response_business_seconds) for r in tables.responses.values()
    }

    def close(value: Any, wanted: float | None) -> bool:
        if value is None or wanted is None:
            return value is None and wanted is None
        return abs(float(value) - wanted) <= SECONDS_TOLERANCE

    def close_enough(row: dict[str, Any]) -> bool:
        wanted = times.get(row["reply_event_id"])
        return (
            wanted is not None
            and close(row["response_seconds"], wanted[0])
            and close(row["response_business_seconds"], wanted[1])
        )

    rows = stream
    pairs: dict[str, tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]] = {
        "responses": (
            [(r.reply_event_id, r.customer_id, r.is_first_response, True) for r in tables.responses.values()],
            [(row["reply_event_id"], row["customer_id"], bool(row["is_first_response"]), close_enough(row))
             for row in stream["responses"]],
        ),
        "engagement": (
            [(r.customer_id, r.level, r.interactions_30d) for r in tables.engagement.values()],
            [(row["customer_id"], row["level"], int(row["interactions_30d"])) for row in rows["engagement"]],
        ),
        "waiting": (
            [(r.customer_id, r.conversation_id, r.answered) for r in tables.waiting.values()],
            [(row["customer_id"], row["conversation_id"], bool(row["answered"])) for row in rows["waiting"]],
        ),
        "engagement_changes": (
            [(c.customer_id, c.previous_level, c.level) for c in tables.changes],
            [(row["customer_id"], row["previous_level"], row["level"]) for row in rows["engagement_changes"]],
        ),
        "surveys": (
            [(r.event_id, r.score) for r in tables.surveys.values()],
            [(row["event_id"], int(row["score"])) for row in stream["surveys"]],
        ),
    }  # fmt: skip
    return [_diff(name, keys(wanted), keys(found)) for name, (wanted, found) in pairs.items()]
