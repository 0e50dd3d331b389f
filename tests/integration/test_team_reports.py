"""The Teams view's reports (`touchstream.dashboard.teams`) in real ClickHouse (chDB) against
the same figures counted by brute force from the definitions' rows (the reference's
conversations, responses and outcome touchpoints), on a simulated history with teams,
agents, surveys and conversations that close by themselves, over two ranges."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.factories import BASE_TIME
from tests.integration.test_metric_sinks import store
from touchstream.dashboard.panels import clean
from touchstream.dashboard.teams import AGENTS, BINDINGS, CHANNELS, TEAMS
from touchstream.producers.simulator import Simulator, SimulatorConfig
from touchstream.schemas.touchpoint import Channel, TouchpointEvent
from touchstream.sinks.clickhouse import ClickHouse
from touchstream.sinks.maintained import MaintainedTables
from touchstream.streams.metrics import MetricsConfig
from touchstream.streams.metrics.config import SlaPolicy
from touchstream.streams.metrics.records import OutcomeTouchpoint
from touchstream.streams.metrics.reference import Tables, outcome_tables, recompute
from touchstream.streams.metrics.schedule import Schedule
from touchstream.streams.partitions import PartitionEngines

OFFICE = Schedule.parse({"timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"}})
CONFIG = MetricsConfig(
    auto_close_after={channel: timedelta(days=2) for channel in Channel},
    business_hours={channel: OFFICE for channel in Channel if channel is not Channel.CHAT},
    # Targets by team, one in the office hours of the channel, one by priority.
    sla_policies=(
        SlaPolicy("care urgent", team="care", priority="urgent", first_response=timedelta(hours=1)),
        SlaPolicy("care", team="care", first_response=timedelta(hours=4), business=True),
        SlaPolicy("frontline", team="frontline", first_response=timedelta(minutes=5)),
        SlaPolicy("social", channel="social", first_response=timedelta(hours=1)),
    ),
)
FIGURES = [
    "conversations", "replies", "first_responses", "first_response_p50", "first_response_p90",
    "first_response_business_p50", "first_response_business_p90", "sla_percent", "resolved",
    "resolution_p50", "resolution_p90", "resolution_business_p50", "resolution_business_p90",
    "closed_without_reply", "abandoned", "nps_answers", "nps",
    "csat_answers", "csat_percent",
]  # fmt: skip


def history() -> list[TouchpointEvent]:
    """About ten days of a small business: conversations close by themselves after 2 days."""
    config = SimulatorConfig(seed=41, customers=400, sessions_per_second=0.0006)
    return list(Simulator(config, BASE_TIME).events(6000))


def quantile(values: list[float], level: float) -> float | None:
    """ClickHouse's `quantileExact`: the value at index floor(level * n) of the sorted values."""
    return sorted(values)[int(level * len(values))] if values else None


def percent(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def expected(
    by: str, tables: Tables, touchpoints: list[OutcomeTouchpoint], since: datetime, until: datetime
) -> dict[str, dict[str, Any]]:
    """The report per team or agent, counted row by row."""
    within = lambda at: at is not None and since <= at < until  # noqa: E731
    conversations: dict[str, list[Any]] = defaultdict(list)
    closed: dict[str, list[float]] = defaultdict(list)
    closed_business: dict[str, list[float]] = defaultdict(list)
    without_reply: dict[str, int] = defaultdict(int)
    abandoned: dict[str, int] = defaultdict(int)
    for key, row in tables.conversations.items():
        if key not in tables.waiting:  # a conversation without a customer message
            continue
        who = {"team": row.team_id, "agent": row.last_agent_id, "channel": row.channel}[by] or "(none)"
        opened, closes = within(row.opened_at), row.status == "closed" and within(row.closed_at)
        if not (opened or closes):
            continue
        conversations[who].extend([row] if opened else [])
        if closes:
            assert row.closed_at is not None
            closed[who].append((row.closed_at - row.opened_at).total_seconds())
            if row.resolution_business_seconds is not None:
                closed_business[who].append(row.resolution_business_seconds)
            without_reply[who] += row.closed_without_reply
            abandoned[who] += row.abandoned
    team_of = {(r.customer_id, r.conversation_id): r.team_id for r in tables.conversations.values()}
    replies: dict[str, list[Any]] = defaultdict(list)
    for response in tables.responses.values():
        if within(response.replied_at):
            team = team_of.get((response.customer_id, response.conversation_id))
            who = {"team": team, "agent": response.agent_id, "channel": response.channel}[by] or "(none)"
            replies[who].append(response)
    answers: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for touchpoint in touchpoints:
        named = {"team": touchpoint.team_id, "agent": touchpoint.agent_id, "channel": touchpoint.channel}
        who = named[by] or "(none)"
        if touchpoint.outcome_type in ("nps", "csat") and within(touchpoint.outcome_at):
            answers[who].append((touchpoint.outcome_id, touchpoint.outcome_type, touchpoint.outcome_class))
    report = {}
    for who in set(conversations) | set(replies) | set(answers):
        firsts = [r for r in replies[who] if r.is_first_response]
        business = [r.response_business_seconds for r in firsts if r.response_business_seconds is not None]
        met = [r for r in firsts if r.sla_met is not False]
        surveys = set(answers[who])  # each answer once per group
        nps = [c for _, kind, c in surveys if kind == "nps"]
        csat = [c for _, kind, c in surveys if kind == "csat"]
        report[who] = {
            "conversations": len(conversations[who]), "replies": len(replies[who]),
            "first_responses": len(firsts),
            "first_response_p50": quantile([r.response_seconds for r in firsts], 0.5),
            "first_response_p90": quantile([r.response_seconds for r in firsts], 0.9),
            "first_response_business_p50": quantile(business, 0.5),
            "first_response_business_p90": quantile(business, 0.9),
            "sla_percent": percent(len(met), len(firsts)), "resolved": len(closed[who]),
            "resolution_p50": quantile(closed[who], 0.5), "resolution_p90": quantile(closed[who], 0.9),
            "resolution_business_p50": quantile(closed_business[who], 0.5),
            "resolution_business_p90": quantile(closed_business[who], 0.9),
            "closed_without_reply": without_reply[who], "abandoned": abandoned[who],
            "nps_answers": len(nps), "nps": percent(nps.count("promoter") - nps.count("detractor"), len(nps)),
            "csat_answers": len(csat), "csat_percent": percent(csat.count("satisfied"), len(csat)),
        }  # fmt: skip
    return report


def stored(clickhouse: ClickHouse, query: str, since: datetime, until: datetime) -> dict[str, dict[str, Any]]:
    rows = clickhouse.rows(f"{BINDINGS}{query}", {"since": since, "until": until})
    return {row[0]: dict(zip(FIGURES, (clean(value) for value in row[1:]), strict=True)) for row in rows}


def agree(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return found.keys() == wanted.keys() and all(
        (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b, abs_tol=1e-3))
        for a, b in ((found[name], wanted[name]) for name in found)
    )


@pytest.mark.parametrize("days", [7, 3])
def test_team_and_agent_reports_count_what_the_definitions_give(clickhouse: ClickHouse, days: int) -> None:
    events = history()
    clickhouse.migrate(CONFIG)
    engines = PartitionEngines(CONFIG, None, partitions=1)
    analytics = MaintainedTables(clickhouse.database, CONFIG)
    for start in range(0, len(events), 500):
        batch = events[start : start + 500]
        store(clickhouse, batch, engines.process(((e, 0, "t") for e in batch), {}), start, analytics)
    settled = engines.idle([0], datetime.now(UTC))
    assert settled is not None
    store(clickhouse, [], settled, len(events), analytics)
    newest = max(event.occurred_at for event in events)
    horizon = newest + timedelta(microseconds=1)
    tables = recompute(events, CONFIG, horizon)
    touchpoints = outcome_tables(events, CONFIG, horizon, newest)["outcome_touchpoints"]
    until = newest + timedelta(milliseconds=1)
    since = until - timedelta(days=days)
    for by, query in (("team", TEAMS), ("agent", AGENTS), ("channel", CHANNELS)):
        wanted, found = (
            expected(by, tables, touchpoints, since, until),
            stored(clickhouse, query, since, until),
        )
        assert found.keys() == wanted.keys(), by
        differ = {who: (found[who], wanted[who]) for who in wanted if not agree(found[who], wanted[who])}
        assert not differ, (by, differ)
    # The history has what the report counts: every kind of figure is non-zero somewhere.
    teams = stored(clickhouse, TEAMS, since, until)
    figures = ("conversations", "replies", "resolved", "abandoned", "nps_answers", "csat_answers",
               "first_response_business_p90", "resolution_business_p90")  # fmt: skip
    for figure in figures:
        assert sum(row[figure] or 0 for row in teams.values()) > 0, figure
    assert any(0 < (row["sla_percent"] or 0) < 100 for row in teams.values()), "targets met and missed"
