"""Erasure in ClickHouse (SPEC §5 "Consent and erasure"): a customer's rows are deleted.

Metric rows are derived from the customer's history, so all of them go (the stream
writes again what the events after the request make). `touchpoints` and `late_events`
lose the events ordered at or before the request (the request included); what came
after it stays. Lightweight DELETEs, idempotent: a retried batch runs them again
harmlessly. A table's time-ordered copy (`sinks.ddl.MIRRORS`) loses the same rows; a table
feeding running totals (`outcome_touchpoints`) first has its live rows deleted as the
maintained tables delete them, so that the totals take them away.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

from touchstream.sinks.clickhouse import ClickHouse
from touchstream.sinks.ddl import MAINTAINED, MIRRORS
from touchstream.streams.metrics.records import Erasure

#: Tables of events: only what came before the request is deleted.
EVENT_TABLES = frozenset({"touchpoints", "late_events"})


def erase(clickhouse: ClickHouse, erasures: Sequence[Erasure], tables: Sequence[str]) -> None:
    """Delete the erased customers' rows: all of them from metric tables, those ordered at
    or before the request from `touchpoints` and `late_events` (what came after stays)."""
    db = clickhouse.database
    customers = sorted({erasure.customer_id for erasure in erasures})
    for table in tables:
        copies = [name for name, mirror in MIRRORS.items() if mirror.source == table]
        if table not in EVENT_TABLES:
            whose = "has({customers:Array(String)}, customer_id)"
            if table in MAINTAINED and MAINTAINED[table].feeds:
                clickhouse.command(
                    f"INSERT INTO {db}.{table} SELECT * REPLACE ({time.time_ns() // 1000} AS version, "
                    f"1 AS is_deleted) FROM {db}.{table} FINAL WHERE {whose}",
                    parameters={"customers": customers},
                    doing=f"erasure of {db}.{table}'s live rows",
                )
            for target in (table, *copies):
                clickhouse.command(
                    f"DELETE FROM {db}.{target} WHERE {whose}",
                    parameters={"customers": customers},
                    doing=f"erasure delete from {db}.{target}",
                )
            continue
        for erasure in latest(erasures):
            at, event_id = erasure.before
            for target in (table, *copies):
                clickhouse.command(
                    f"DELETE FROM {db}.{target} WHERE customer_id = {{customer:String}} AND "
                    f"(occurred_at, event_id) <= ({{at:DateTime64(3, 'UTC')}}, {{event_id:String}})",
                    parameters={"customer": erasure.customer_id, "at": _millis(at), "event_id": event_id},
                    doing=f"erasure delete from {db}.{target}",
                )


def latest(erasures: Sequence[Erasure]) -> list[Erasure]:
    """The latest request per customer (it covers the earlier ones)."""
    newest: dict[str, Erasure] = {}
    for erasure in erasures:
        if erasure.customer_id not in newest or erasure.before > newest[erasure.customer_id].before:
            newest[erasure.customer_id] = erasure
    return [newest[customer] for customer in sorted(newest)]


def _millis(at: datetime) -> str:
    """An instant as ClickHouse stores it in DateTime64(3): to the millisecond."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
