"""The metric tables (SPEC §6): one step of the metric core's outputs -> ClickHouse.

Every metric table is a `ReplacingMergeTree(version, is_deleted)` ordered by the row's
key (`streams.metrics.records.KEY_COLUMNS`, a function of the events alone), so a row is an
upsert: `FROM t FINAL` shows, per key, the row of the highest version unless that row
is a deletion. A step writes all its rows with one version (`Outputs.version`, higher
than any the partition wrote before), in this order:

1. erasures: the erased customers' metric rows are deleted (lightweight DELETE), those of
   the maintained tables too (the step marks the customers, and the worker computes their
   rows again from what the erasure left);
2. per table, one insert of the step's rows by key: retractions (`is_deleted = 1`),
   then final rows (`final = 1`), then live rows (`final = 0`), a later one replacing
   an earlier one of the same key;
3. late events, erasure proofs, and last each stepped partition's horizon.

A restatement (`write_restated`) writes its rows the same way, then deletes every row of
its customers that it did not write again: one whose version is below its own.

No insert carries a deduplication token: a retried step writes the same rows under
the same version, which `FINAL` collapses, and a retry after a DELETE must insert its
rows again (a token would have ClickHouse drop them inside its deduplication window).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from touchstream.sinks.clickhouse import ClickHouse
from touchstream.sinks.ddl import MAINTAINED
from touchstream.sinks.erasure import erase
from touchstream.streams.metrics.records import KEY_COLUMNS, Outputs, RowKey

COLUMNS: dict[str, list[str]] = {
    "responses": [
        "reply_event_id", "conversation_id", "customer_id", "channel", "agent_id", "response_seconds",
        "is_first_response", "customer_message_at", "replied_at", "response_business_seconds", "sla_met",
    ],
    "waiting": [
        "conversation_id", "customer_id", "channel", "waiting_since", "answered", "updated_at", "team_id",
        "status", "closed_at",
    ],
    "conversations": [
        "conversation_id", "customer_id", "channel", "team_id", "status", "opened_at", "closed_at",
        "closed_without_reply", "abandoned", "last_agent_id", "updated_at", "resolution_business_seconds",
    ],
    "sla_events": [
        "conversation_id", "customer_id", "metric", "started_at", "started_by", "channel", "team_id",
        "priority", "policy", "target_seconds", "business", "due_at", "status", "met_at", "breached_at",
        "ended_at", "agent_id", "updated_at",
    ],
    "engagement": [
        "customer_id", "score", "level", "interactions_24h", "interactions_7d", "interactions_30d",
        "active_channels_30d", "last_interaction_at", "updated_at",
    ],
    "engagement_changes": ["customer_id", "previous_level", "level", "score", "changed_at"],
    "surveys": [
        "event_id", "customer_id", "channel", "survey_type", "score", "conversation_id", "occurred_at",
    ],
}  # fmt: skip
LATE_COLUMNS = [
    "event_id", "customer_id", "channel", "occurred_at", "horizon", "lateness_seconds", "restated_at",
]  # fmt: skip
ERASURE_COLUMNS = ["request_event_id", "requested_at"]
HORIZON_COLUMNS = ["partition", "horizon", "newest"]

_ROW_OF: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def astuple(record: Any) -> tuple[Any, ...]:
    """A flat record dataclass as a row (`dataclasses.astuple` deep-copies every value)."""
    kind = type(record)
    if kind not in _ROW_OF:
        _ROW_OF[kind] = operator.attrgetter(*(item.name for item in fields(kind)))
    return _ROW_OF[kind](record)


def upserts(outputs: Outputs) -> dict[str, tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """Per table, (rows to write, keys to retract), with `final` and `version` appended to
    each row and `version` to each key."""
    version = outputs.version
    written: dict[RowKey, tuple[Any, ...]] = {}
    retracted: dict[RowKey, None] = dict.fromkeys(outputs.retracted)
    for final, rows in ((1, outputs.final), (0, outputs.live)):
        for key, row in rows.keyed().items():
            retracted.pop(key, None)
            written[key] = (*astuple(row), final, version)  # a live row replaces a final one
    tables: dict[str, tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]] = {}
    for (table, _), row in written.items():
        tables.setdefault(table, ([], []))[0].append(row)
    for table, key in retracted:
        tables.setdefault(table, ([], []))[1].append((*key, 1, version))
    return tables


def late_rows(outputs: Outputs) -> list[tuple[Any, ...]]:
    return [
        (row.event_id, row.customer_id, row.channel, row.occurred_at, row.horizon,
         (row.horizon - row.occurred_at).total_seconds(), row.restated_at)
        for row in outputs.late
    ]  # fmt: skip


def write(clickhouse: ClickHouse, outputs: Outputs) -> None:
    """Write one step's metric rows (see the module docstring for the order)."""
    if outputs.erased:
        erase(clickhouse, outputs.erased, [*COLUMNS, *MAINTAINED, "late_events"])
    for table, (rows, keys) in upserts(outputs).items():
        if rows:
            clickhouse.insert(table, rows, [*COLUMNS[table], "final", "version"])
        if keys:
            clickhouse.insert(table, keys, [*KEY_COLUMNS[table], "is_deleted", "version"])
    if late := late_rows(outputs):
        clickhouse.insert("late_events", late, LATE_COLUMNS)
    proofs = [astuple(proof) for proof in [*outputs.final.erasures, *outputs.live.erasures]]
    if proofs:
        clickhouse.insert("erasures", proofs, ERASURE_COLUMNS)
    if outputs.horizons:
        # Last: a horizon is written only once the rows final before it are.
        horizons = [(partition, *marks) for partition, marks in sorted(outputs.horizons.items())]
        clickhouse.insert("stream_horizons", horizons, HORIZON_COLUMNS)


def write_restated(clickhouse: ClickHouse, outputs: Outputs, customers: set[str]) -> None:
    """A restatement's rows (`PartitionEngines.restate`: every current row of `customers`),
    then per metric table a deletion of each row of theirs it did not write again, with
    that row's values (the copies ordered by the hour, fed from these inserts, find it)."""
    write(clickhouse, outputs)
    for table, columns in COLUMNS.items():
        names = ", ".join(columns)
        clickhouse.command(
            f"INSERT INTO {clickhouse.database}.{table} ({names}, final, version, is_deleted) "
            f"SELECT {names}, final, {{version:UInt64}}, 1 FROM {clickhouse.database}.{table} FINAL "
            "WHERE customer_id IN {customers:Array(String)} AND version < {version:UInt64}",
            parameters={"customers": sorted(customers), "version": outputs.version},
            doing=f"restatement of {table}",
        )
