"""Erasure in ClickHouse (SPEC §5 "Consent and erasure"): a customer's rows are deleted.

Metric rows are derived from the customer's history, so all of them go (the stream
writes again what the events after the request make). `touchpoints` and `late_events`
lose the events ordered at or before the request (the request included); what came
after it stays. Lightweight DELETEs, idempotent: a retried batch runs them again
harmlessly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sinks.clickhouse import ClickHouse
from streams.metrics.records import Erasure

#: Tables of events: only what came before the request is deleted.
EVENT_TABLES = frozenset({"touchpoints", "late_events"})


def erase(clickhouse: ClickHouse, erasures: Sequence[Erasure], tables: Sequence[str]) -> None:
    """Delete the erased customers' rows: all of them from metric tables, those ordered at
    or before the request from `touchpoints` and `late_events` (what came after stays)."""
    db = clickhouse.database
    for table in tables:
        if table not in EVENT_TABLES:
            customers = sorted({erasure.customer_id for erasure in erasures})
            clickhouse.command(
                f"DELETE FROM {db}.{table} WHERE has({{customers:Array(String)}}, customer_id)",
                parameters={"customers": customers},
                doing=f"erasure delete from {db}.{table}",
            )
            continue
        for erasure in latest(erasures):
            at, event_id = erasure.before
            clickhouse.command(
                f"DELETE FROM {db}.{table} WHERE customer_id = {{customer:String}} AND "
                f"(occurred_at, event_id) <= ({{at:DateTime64(3, 'UTC')}}, {{event_id:String}})",
                parameters={"customer": erasure.customer_id, "at": _millis(at), "event_id": event_id},
                doing=f"erasure delete from {db}.{table}",
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
