"""The metric tables (SPEC §6): one step of the metric core's outputs -> ClickHouse.

Erasures first: the customers erased in this step lose their rows in every table
(lightweight DELETE), then the step's rows are inserted, each table with a
deduplication token derived from the step's source offsets, so a retried step is
dropped by ClickHouse and a re-emitted row collapses under `FINAL` (every table is a
ReplacingMergeTree keyed by the row's identity).
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

from sinks.clickhouse import ClickHouse
from sinks.ddl import CUSTOMER_TABLES
from streams.metrics.records import Outputs

COLUMNS: dict[str, list[str]] = {
    "responses": [
        "reply_event_id", "conversation_id", "customer_id", "channel", "agent_id", "response_seconds",
        "is_first_response", "customer_message_at", "replied_at", "response_business_seconds",
    ],
    "waiting": ["conversation_id", "customer_id", "channel", "waiting_since", "answered", "updated_at"],
    "engagement": [
        "customer_id", "score", "level", "interactions_24h", "interactions_7d", "interactions_30d",
        "active_channels_30d", "last_interaction_at", "updated_at",
    ],
    "engagement_changes": ["customer_id", "previous_level", "level", "score", "changed_at"],
    "surveys": [
        "event_id", "customer_id", "channel", "survey_type", "score", "conversation_id", "occurred_at",
    ],
    "late_events": ["event_id", "customer_id", "channel", "occurred_at", "horizon", "lateness_seconds"],
    "erasures": ["request_event_id", "requested_at"],
    "stream_horizons": ["partition", "horizon"],
}  # fmt: skip


_ROW_OF: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def astuple(record: Any) -> tuple[Any, ...]:
    """A flat record dataclass as a row (`dataclasses.astuple` deep-copies every value)."""
    kind = type(record)
    if kind not in _ROW_OF:
        _ROW_OF[kind] = operator.attrgetter(*(item.name for item in fields(kind)))
    return _ROW_OF[kind](record)


def rows(outputs: Outputs) -> dict[str, list[tuple[Any, ...]]]:
    late = [
        (row.event_id, row.customer_id, row.channel, row.occurred_at, row.horizon,
         (row.horizon - row.occurred_at).total_seconds())
        for row in outputs.late
    ]  # fmt: skip
    tables = {
        "responses": [astuple(row) for row in outputs.responses],
        "waiting": [astuple(row) for row in outputs.waiting],
        "engagement": [astuple(row) for row in outputs.engagement],
        "engagement_changes": [astuple(row) for row in outputs.changes],
        "surveys": [astuple(row) for row in outputs.surveys],
        "late_events": late,
        "erasures": [astuple(row) for row in outputs.erasures],
        # Last: a horizon is written only once the rows final before it are.
        "stream_horizons": sorted(outputs.horizons.items()),
    }
    return {table: found for table, found in tables.items() if found}


def erase(clickhouse: ClickHouse, customers: Sequence[str]) -> None:
    for table in CUSTOMER_TABLES:
        clickhouse.command(
            f"DELETE FROM {clickhouse.database}.{table} WHERE has({{customers:Array(String)}}, customer_id)",
            parameters={"customers": list(customers)},
        )


def write(clickhouse: ClickHouse, outputs: Outputs, step: str) -> None:
    """Write one step; `step` identifies it (e.g. its source offsets) for deduplication."""
    if outputs.erased_customers:
        erase(clickhouse, sorted(set(outputs.erased_customers)))
    for table, found in rows(outputs).items():
        token = hashlib.sha256(f"{table}\0{step}".encode()).hexdigest()
        clickhouse.insert(table, found, COLUMNS[table], dedup_token=f"{table}:{token}")
