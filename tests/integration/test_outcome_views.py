"""Tickets, churns and outcome touchpoints (SPEC §5b) in real ClickHouse (chDB) against
their brute-force definitions, after a stream of any arrival order within the grace period,
with redeliveries and any batching, and again once the idle rule has settled it."""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import event
from tests.integration.test_behaviour_views import streamed, utc
from tests.unit.test_metrics_core import GRACE, arrivals
from touchstream.schemas.touchpoint import Channel, TouchpointEvent
from touchstream.sinks.clickhouse import ClickHouse
from touchstream.sinks.ddl import ATTRIBUTION_GROUP, WEIGHT_UNITS
from touchstream.streams.metrics import MetricsConfig
from touchstream.streams.metrics.reference import Group, attribution, churn_rates, outcome_tables

CONFIG = MetricsConfig(
    grace=GRACE,
    churn_after=timedelta(days=1),
    lookback=timedelta(hours=12),
    sla={Channel.CHAT: timedelta(minutes=10), Channel.HELPDESK: timedelta(hours=2)},
)
#: Histories span a month's start, where churn rates count the active customers.
T0 = datetime(2026, 2, 27, tzinfo=UTC)
VIEWS = settings(
    max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "150")) // 10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
_CUSTOMER = {"direction": "inbound", "actor": "customer"}
_AGENT = {"direction": "outbound", "actor": "agent"}
SHAPES: dict[str, dict[str, Any]] = {
    "open": {"channel": "helpdesk", "kind": "ticket_opened", **_CUSTOMER},
    "resolve": {"channel": "helpdesk", "kind": "ticket_resolved", "direction": "none", "actor": "agent",
                "agent_id": "agent-2"},
    "desk_reply": {"channel": "helpdesk", "kind": "message", **_AGENT, "agent_id": "agent-2"},
    "desk_message": {"channel": "helpdesk", "kind": "message", **_CUSTOMER},
    "chat": {"channel": "chat", "kind": "message", **_CUSTOMER},
    "chat_reply": {"channel": "chat", "kind": "message", **_AGENT, "agent_id": "agent-1"},
    "bot": {"channel": "chat", "kind": "message", "direction": "outbound", "actor": "bot"},
    "page_view": {"channel": "web", "kind": "page_view", **_CUSTOMER},
    "purchase": {"channel": "web", "kind": "purchase", "direction": "none", "actor": "customer"},
    "nps": {"channel": "email", "kind": "survey_response", **_CUSTOMER},
    "csat": {"channel": "chat", "kind": "survey_response", **_CUSTOMER},
    "opt_out": {"channel": "web", "kind": "consent_updated", **_CUSTOMER, "consent": {"analytics": False}},
    "opt_in": {"channel": "web", "kind": "consent_updated", **_CUSTOMER, "consent": {"analytics": True}},
    "erase": {"channel": "web", "kind": "erasure_requested", **_CUSTOMER},
}  # fmt: skip
COMMON = ["open", "resolve", "desk_reply", "desk_message", "chat", "chat_reply", "page_view", "nps", "csat"]
RARE = ["bot", "purchase", "opt_out", "opt_in", "erase"]


@st.composite
def histories(draw: st.DrawFn) -> list[TouchpointEvent]:
    """Customers over five days: tickets opened, answered, resolved and reopened, chats,
    surveys and quiet spells longer than the churn threshold."""
    events = []
    for number in range(draw(st.integers(1, 40))):
        shape = dict(SHAPES[draw(st.sampled_from(COMMON) | st.sampled_from(RARE))])
        if shape["kind"] == "survey_response":
            survey_type = "nps" if shape["channel"] == "email" else "csat"
            top = 10 if survey_type == "nps" else 5
            shape["survey"] = {"type": survey_type, "score": draw(st.integers(0 if top == 10 else 1, top))}
        if shape["kind"] == "ticket_opened":
            shape["attributes"] = {
                key: value
                for key, value in (("category", draw(st.sampled_from(["", "billing", "login"]))),
                                   ("priority", draw(st.sampled_from(["", "high"]))))
                if value
            }  # fmt: skip
        if shape["actor"] == "agent" or shape["kind"] == "ticket_opened":
            shape["team_id"] = draw(st.sampled_from([None, "billing", "tech"]))
        seconds = draw(st.integers(0, 5 * 86400) | st.integers(0, 4 * 3600))
        events.append(event(
            event_id=f"e{number:03d}", customer_id=draw(st.sampled_from(["ann", "bob", "cy"])),
            occurred_at=(T0 + timedelta(seconds=seconds)).isoformat(),
            conversation_id=draw(st.sampled_from([None, None, "t-1", "t-2"])), **shape,
        ))  # fmt: skip
    events.append(event(event_id="tail", customer_id="zed", channel="web", kind="page_view",
                        occurred_at=(T0 + timedelta(days=7)).isoformat(), conversation_id=None))  # fmt: skip
    return events


def _time(value: Any) -> Any:
    return utc(value) if isinstance(value, datetime) else value


def _round(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def stored(clickhouse: ClickHouse, view: str, columns: list[str]) -> list[tuple[Any, ...]]:
    rows = clickhouse.rows(f"SELECT {', '.join(columns)} FROM {view} FINAL")
    return sorted(tuple(_round(_time(tuple(v) if isinstance(v, list) else v)) for v in row) for row in rows)


def wanted(rows: list[Any], columns: list[str]) -> list[tuple[Any, ...]]:
    return sorted(tuple(_round(_time(getattr(row, column))) for column in columns) for row in rows)


TICKET_COLUMNS = [
    "conversation_id", "customer_id", "channel", "category", "priority", "opened_at", "first_response_at",
    "first_response_seconds", "first_response_agent_id", "first_resolved_at", "resolved_at", "reopened",
    "status", "first_resolution_seconds", "full_resolution_seconds", "resolved_on_first_reply", "final",
]  # fmt: skip
CHURN_COLUMNS = [
    "customer_id", "churned_at", "last_interaction_at", "returned_at", "level_at_churn", "signals", "final",
]  # fmt: skip
OUTCOME_COLUMNS = [
    "outcome_id", "outcome_type", "outcome_class", "outcome_at", "customer_id", "event_id", "channel", "kind",
    "agent_id", "team_id", "quality", "position", "n", "weight_last", "weight_first", "weight_linear",
    "weight_time_decay", "weight_position", "final",
]  # fmt: skip


def attribution_totals(clickhouse: ClickHouse) -> dict[Group, dict[str, float]]:
    """The running totals per group, weights back in units of one outcome (groups whose
    rows have all been taken away again are left out)."""
    names = [name for (name,) in clickhouse.rows(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'attribution_totals' "
        f"AND name NOT IN {ATTRIBUTION_GROUP} ORDER BY position"
    )]  # fmt: skip
    rows = clickhouse.rows(
        f"SELECT {', '.join(ATTRIBUTION_GROUP)}, {', '.join(f'sum({name})' for name in names)} "
        f"FROM attribution_totals GROUP BY {', '.join(ATTRIBUTION_GROUP)} HAVING sum(touchpoints) != 0"
    )
    return {
        tuple(row[: len(ATTRIBUTION_GROUP)]): {
            name: value if name.endswith("outcomes") or name == "touchpoints" else value / WEIGHT_UNITS
            for name, value in zip(names, row[len(ATTRIBUTION_GROUP) :], strict=True)
        }
        for row in rows
    }


@VIEWS
@given(data=st.data())
def test_tickets_churns_and_attribution_equal_their_definitions(
    clickhouse: ClickHouse, data: st.DataObject
) -> None:
    events = data.draw(histories())
    for horizon, newest in streamed(clickhouse, CONFIG, data.draw(arrivals(events))):
        defined = outcome_tables(events, CONFIG, horizon, newest)
        assert stored(clickhouse, "tickets", TICKET_COLUMNS) == wanted(defined["tickets"], TICKET_COLUMNS)
        assert stored(clickhouse, "churn_events", CHURN_COLUMNS) == wanted(
            defined["churn_events"], CHURN_COLUMNS
        )
        rates = clickhouse.rows(
            "SELECT month, signal, customers, churned, churn_rate, final FROM churn_rates"
        )
        assert sorted(
            (month, signal, customers, churned, bool(final))
            for month, signal, customers, churned, _, final in rates
        ) == sorted(
            (month.date(), signal, customers, churned, final)
            for month, signal, customers, churned, final in churn_rates(events, CONFIG, horizon, newest)
        )
        assert all(
            rate == (churned / customers if customers else None)
            for _, _, customers, churned, rate, _ in rates
        )
        attributed = defined["outcome_touchpoints"]
        assert stored(clickhouse, "outcome_touchpoints", OUTCOME_COLUMNS) == wanted(
            attributed, OUTCOME_COLUMNS
        )
        running, expected = attribution_totals(clickhouse), attribution(attributed)
        assert running.keys() == expected.keys()
        for key, sums in expected.items():
            assert running[key].keys() == sums.keys(), key
            close = [math.isclose(running[key][name], value, abs_tol=1e-6) for name, value in sums.items()]
            assert all(close), (key, running[key], sums)
        for model in ("last", "first", "linear", "time_decay", "position"):
            totals: dict[str, float] = {}
            for row in attributed:
                totals[row.outcome_id] = totals.get(row.outcome_id, 0.0) + getattr(row, f"weight_{model}")
            assert all(math.isclose(total, 1.0) for total in totals.values()), model
