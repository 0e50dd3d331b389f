"""The metric tables in real ClickHouse (chDB): live and final rows, retractions, retries, erasure, views."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.factories import event
from touchstream.dashboard import experience, teams
from touchstream.schemas.errors import ClickHouseError, ConfigError
from touchstream.schemas.topics import Source
from touchstream.schemas.touchpoint import TouchpointEvent
from touchstream.sinks import metric_rows, touchpoints
from touchstream.sinks.clickhouse import ClickHouse
from touchstream.sinks.maintained import CHUNK, MaintainedTables
from touchstream.streams.metrics import Engine, MetricsConfig, Outputs
from touchstream.streams.partitions import PartitionEngines
from touchstream.verify import verify

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


AGENT = {"direction": "outbound", "actor": "agent"}
WEB = {"channel": "web", "conversation_id": None}
EVENTS = [
    event(event_id="q1", occurred_at=at(0), conversation_id="c1"),
    event(event_id="a1", occurred_at=at(4), conversation_id="c1", agent_id="kim", **AGENT),
    event(event_id="q2", occurred_at=at(10), conversation_id="c2", channel="email"),
    event(event_id="buy", occurred_at=at(11), kind="purchase", direction="none", **WEB),
    event(event_id="nps", occurred_at=at(12), kind="survey_response", survey={"type": "nps", "score": 10}),
    event(event_id="q3", customer_id="cust-2", occurred_at=at(13), conversation_id="c3"),
    event(event_id="a3", customer_id="cust-2", occurred_at=at(15), conversation_id="c3", direction="outbound",
          actor="agent", agent_id="lee"),
    event(event_id="tick", customer_id="cust-3", occurred_at=at(60), kind="page_view", channel="web",
          conversation_id=None),
]  # fmt: skip


def store(
    clickhouse: ClickHouse,
    events: list[TouchpointEvent],
    out: Outputs,
    offset: int = 0,
    analytics: MaintainedTables | None = None,
    *,
    catch_up: bool = True,
) -> None:
    """One step as the worker writes it: touchpoints (minus what an erasure covers), then
    rows, then the maintained tables of the customers it touched (`analytics`: made with
    the views' config; the defaults without one), unless `catch_up` is false: then they
    stay marked for a later step."""
    kept = [e for e in events if (e.customer_id, e.event_id) not in out.forgotten]
    sources = [Source("t", 0, offset + n) for n in range(len(events))]
    touchpoints.write(clickhouse, list(zip(kept, sources, strict=False)),
                      sources, out.erased)  # fmt: skip
    metric_rows.write(clickhouse, out)
    analytics = analytics or MaintainedTables(clickhouse.database)
    analytics.mark(clickhouse, dict.fromkeys(out.customers() | {e.customer_id for e in events}, 0))
    while catch_up and analytics.catch_up(clickhouse, {0}) == CHUNK:
        pass


def step(engines: PartitionEngines, events: list[TouchpointEvent]) -> Outputs:
    return engines.process(((e, 0, "t") for e in events), {})


def engines_for(config: MetricsConfig) -> PartitionEngines:
    return PartitionEngines(config, None, partitions=1)


def test_live_rows_become_final_and_retried_steps_collapse(clickhouse: ClickHouse) -> None:
    engines = engines_for(MetricsConfig(grace=timedelta(minutes=10)))
    outputs = step(engines, EVENTS)
    late = step(engines, [event(event_id="old", occurred_at=at(1), conversation_id="c1")])
    store(clickhouse, EVENTS, outputs)
    metric_rows.write(clickhouse, outputs)  # a retried step
    store(clickhouse, [], late)

    assert clickhouse.rows(
        "SELECT reply_event_id, customer_id, channel, agent_id, response_seconds, is_first_response, final "
        "FROM responses FINAL ORDER BY reply_event_id"
    ) == [("a1", "cust-1", "chat", "kim", 240.0, True, 1), ("a3", "cust-2", "chat", "lee", 120.0, True, 1)]
    assert clickhouse.scalar("SELECT count() FROM responses FINAL") == 2, "the retried step collapsed"
    waiting = "SELECT conversation_id, answered, final FROM waiting FINAL ORDER BY conversation_id"
    assert clickhouse.rows(waiting) == [("c1", True, 1), ("c2", False, 1), ("c3", True, 1)]
    # 3 + 3 + 5 + 2 (two messages, a purchase, a survey) is medium; cust-3's page view is
    # within the grace period (horizon = 60 - 10 minutes): shown live, not final yet.
    engagement = "SELECT customer_id, level, final FROM engagement FINAL ORDER BY customer_id"
    assert clickhouse.rows(engagement) == [
        ("cust-1", "medium", 1),
        ("cust-2", "low", 1),
        ("cust-3", "dormant", 0),
    ]
    assert clickhouse.rows(f"{engagement.replace('FINAL', 'FINAL WHERE final')}") == [
        ("cust-1", "medium", 1), ("cust-2", "low", 1)]  # fmt: skip
    assert clickhouse.rows("SELECT event_id, lateness_seconds, final FROM late_events FINAL") == [
        ("old", 49 * 60.0, 1)]  # fmt: skip
    hourly = "SELECT channel, responses, p50_seconds, final FROM response_times_hourly ORDER BY channel"
    assert clickhouse.rows(hourly) == [("chat", 2, 240.0, 1)]
    # Rolling response times (1 h, 24 h, 7 d ending at the newest event, 60 min): overall,
    # per channel and per customer.
    rolling = clickhouse.rows(
        "SELECT scope, window, channel, customer_id, responses, mean_seconds, p50_seconds, p90_seconds "
        "FROM response_times_rolling WHERE window = '1h' ORDER BY scope, channel, customer_id"
    )
    assert rolling == [
        ("channel", "1h", "chat", "", 2, 180.0, 240.0, 240.0),
        ("customer", "1h", "", "cust-1", 1, 240.0, 240.0, 240.0),
        ("customer", "1h", "", "cust-2", 1, 120.0, 120.0, 120.0),
        ("overall", "1h", "", "", 2, 180.0, 240.0, 240.0),
    ]
    assert clickhouse.rows("SELECT promoters, detractors, final FROM experience_hourly") == [(1, 0, 1)]
    assert clickhouse.scalar("SELECT sum(events) FROM volumes_hourly") == len(EVENTS)

    # A question within the grace period shows at once, provisional; the agent's reply
    # answers it; an earlier reply arriving out of order takes the response over, and the
    # later reply's record is retracted. The horizon passes: the rows are final.
    question = event(event_id="q4", customer_id="cust-4", occurred_at=at(61), conversation_id="c4")
    store(clickhouse, [question], step(engines, [question]), offset=20)
    live = "SELECT conversation_id, answered, final FROM waiting FINAL WHERE customer_id = 'cust-4'"
    assert clickhouse.rows(live) == [("c4", False, 0)]
    reply = event(event_id="a4b", customer_id="cust-4", occurred_at=at(64), conversation_id="c4", **AGENT)
    store(clickhouse, [reply], step(engines, [reply]), offset=21)
    first = event(event_id="a4a", customer_id="cust-4", occurred_at=at(62), conversation_id="c4", **AGENT)
    store(clickhouse, [first], step(engines, [first]), offset=22)
    records = (
        "SELECT reply_event_id, response_seconds, final FROM responses FINAL WHERE customer_id = 'cust-4'"
    )
    assert clickhouse.rows(records) == [("a4a", 60.0, 0)]
    deletions = "SELECT is_deleted FROM responses WHERE reply_event_id = 'a4b' ORDER BY version"
    assert clickhouse.rows(deletions) == [(0,), (1,)], "retracted by a deletion row"
    tick = event(event_id="t5", customer_id="cust-3", occurred_at=at(80), kind="page_view", **WEB)
    store(clickhouse, [tick], step(engines, [tick]), offset=23)
    assert clickhouse.rows(records) == [("a4a", 60.0, 1)]
    assert clickhouse.rows(live) == [("c4", True, 1)]
    horizons = clickhouse.rows("SELECT partition, horizon, newest FROM stream_horizons FINAL")
    assert [(p, h.replace(tzinfo=UTC), n.replace(tzinfo=UTC)) for p, h, n in horizons] == [
        (0, T0 + timedelta(minutes=70), T0 + timedelta(minutes=80))]  # fmt: skip


def test_erasure_keeps_what_came_after_it_through_a_failed_write(clickhouse: ClickHouse) -> None:
    """Events before the request, the request, and events after it within the grace
    period; the write of the step that folds the request in fails once between the
    DELETE and the inserts (a real ClickHouse error: the table is briefly missing)."""
    config = MetricsConfig(grace=timedelta(minutes=10))
    engines = engines_for(config)
    before = EVENTS[:5]
    store(clickhouse, before, step(engines, before))
    request = event(event_id="gone", occurred_at=at(20), kind="erasure_requested", **WEB)
    after = [
        event(event_id="q9", occurred_at=at(21), conversation_id="c9"),
        event(event_id="view9", occurred_at=at(22), kind="page_view", **WEB),
    ]
    early = event(event_id="q0", occurred_at=at(19), conversation_id="c0")  # before it, read after it
    store(clickhouse, [request, *after], step(engines, [request, *after]), offset=10)
    customer = "SELECT count() FROM {table} FINAL WHERE customer_id = 'cust-1'"
    assert clickhouse.scalar(customer.format(table="responses")) == 0, "erased as soon as it is read"
    store(clickhouse, [early], step(engines, [early]), offset=13)
    tick = event(event_id="tick9", customer_id="cust-3", occurred_at=at(40), kind="page_view", **WEB)
    folding = step(engines, [tick])
    assert [erasure.customer_id for erasure in folding.erased] == ["cust-1"]
    clickhouse.command(f"RENAME TABLE {clickhouse.database}.waiting TO {clickhouse.database}.waiting_away")
    with pytest.raises(ClickHouseError) as failed:
        store(clickhouse, [tick], folding, offset=14)
    assert failed.value.code == 60  # UNKNOWN_TABLE, after the DELETEs ran
    clickhouse.command(f"RENAME TABLE {clickhouse.database}.waiting_away TO {clickhouse.database}.waiting")
    store(clickhouse, [tick], folding, offset=14)  # the retry

    kept = "SELECT event_id FROM touchpoints FINAL WHERE customer_id = 'cust-1' ORDER BY event_id"
    assert clickhouse.rows(kept) == [("q9",), ("view9",)]
    waiting = "SELECT conversation_id, answered FROM waiting FINAL WHERE customer_id = 'cust-1'"
    assert clickhouse.rows(waiting) == [("c9", False)]
    assert clickhouse.rows("SELECT interactions_30d FROM engagement FINAL WHERE customer_id = 'cust-1'") == [
        (2,)
    ]
    assert clickhouse.scalar(customer.format(table="surveys")) == 0
    assert clickhouse.rows("SELECT request_event_id FROM erasures FINAL") == [("gone",)]
    # A late event from before the request is not kept either.
    late = event(event_id="q-1", occurred_at=at(2), conversation_id="c1")
    late_out = step(engines, [late])
    store(clickhouse, [late], late_out, offset=15)
    assert late_out.late == [] and clickhouse.rows(kept) == [("q9",), ("view9",)]
    assert clickhouse.scalar(customer.format(table="late_events")) == 0

    def fetch(query: str) -> list[dict[str, Any]]:
        output = clickhouse.formatted(query, "JSONEachRow").decode()
        return [json.loads(line) for line in output.splitlines() if line.strip()]

    diffs = verify(fetch, config, partitions=1, slice_events=3)  # customer by customer
    assert all(diff.ok for diff in diffs), [diff for diff in diffs if not diff.ok]


DETRACTOR = event(event_id="nps-low", customer_id="cust-2", occurred_at=at(20), channel="email",
                  kind="survey_response", survey={"type": "nps", "score": 3})  # fmt: skip


def test_every_query_in_the_analyst_docs_runs(clickhouse: ClickHouse) -> None:
    engine = Engine(MetricsConfig(grace=timedelta(minutes=10)))
    events = [*EVENTS, DETRACTOR]
    touchpoints.write(clickhouse, [(e, Source("t", 0, n)) for n, e in enumerate(events)],
                      [Source("t", 0, n) for n in range(len(events))])  # fmt: skip
    metric_rows.write(clickhouse, engine.process(events))
    MaintainedTables(clickhouse.database).refresh(clickhouse, {e.customer_id for e in events})
    text = (Path(__file__).parents[2] / "docs" / "clickhouse.md").read_text()
    queries = re.findall(r"```sql\n(.*?)```", text, flags=re.DOTALL)
    assert len(queries) >= 10
    for query in queries:
        try:
            clickhouse.rows(query)
        except Exception as error:
            raise AssertionError(f"docs/clickhouse.md query fails:\n{query}") from error

    def result(marker: str) -> list[tuple[object, ...]]:
        return [tuple(row) for row in clickhouse.rows(next(query for query in queries if marker in query))]

    assert result("experience_hourly")[0][2] == 100.0  # chat, where the promoter rated
    assert [row[:3] for row in result("GROUP BY agent_id")] == [("kim", 1, 4.0), ("lee", 1, 2.0)]
    first_week = result("WHERE is_first_response")
    assert {(row[0], row[2]) for row in first_week} == {("chat", 2)}
    # cust-2's question and the agent's answer preceded the detractor's survey.
    before = result("ORDER BY survey_event, t.occurred_at")
    assert [(row[0], row[5], row[6]) for row in before] == [("nps-low", "message", "inbound"),
                                                             ("nps-low", "message", "outbound")]  # fmt: skip
    assert {row[0] for row in result("toMonday(hour) AS week")} == {"chat", "email"}
    # Behaviour: cust-1's journey web > chat > email > web ended in a purchase; cust-2's
    # in the detractor's answer.
    paths = result("LIMIT 5 BY ending")
    assert ("detractor or dissatisfied", "chat > email", 1) in paths
    assert any(row[0] == "purchase" and str(row[1]).startswith("chat") for row in paths), paths
    assert sum(int(str(row[1])) for row in result("preferred_channel IS NOT NULL")) == 3
    # Outcomes: the detractor's answer had touchpoints before it, so it is an attributed outcome.
    share, outcomes = result("SELECT round(100 * sum(bad_outcomes)")[0]
    assert int(str(outcomes)) >= 1 and 0 < float(str(share)) <= 100
    assert sum(int(str(row[2])) for row in result("intDiv(slot, 24) + 1 AS weekday")) == sum(
        1 for e in events if e.actor.value == "customer" and e.kind.value != "consent_updated"
    )


def test_a_changed_definition_is_computed_again_for_every_customer_and_says_so(
    clickhouse: ClickHouse,
) -> None:
    """Definitions unknown (as after an upgrade): the copies are filled again and the
    maintained tables computed for every customer, each long step said; the results and
    the attribution totals are those of the events."""
    engine = Engine(MetricsConfig(grace=timedelta(minutes=10)))
    events = [*EVENTS, DETRACTOR]
    sources = [Source("t", 0, n) for n in range(len(events))]
    touchpoints.write(clickhouse, list(zip(events, sources, strict=True)), sources)
    metric_rows.write(clickhouse, engine.process(events))
    MaintainedTables(clickhouse.database).refresh(clickhouse, {e.customer_id for e in events})
    before = {table: clickhouse.rows(f"SELECT * EXCEPT version FROM {table} FINAL ORDER BY ALL")
              for table in ("outcome_touchpoints", "touchpoints_by_hour", "customer_profiles")}  # fmt: skip
    totals = "SELECT grouping, channel, kind, agent, sum(outcomes), sum(touchpoints) FROM attribution_totals "
    totals += "GROUP BY ALL HAVING sum(touchpoints) != 0 ORDER BY ALL"
    counted = clickhouse.rows(totals)
    assert counted, "the detractor's answer has touchpoints"

    clickhouse.command(f"TRUNCATE TABLE {clickhouse.database}.maintained_definitions")
    said: list[str] = []
    clickhouse.migrate(MetricsConfig(grace=timedelta(minutes=10)), said.append)
    assert "copying touchpoints into touchpoints_by_hour, ordered by hour (once)" in said, said
    assert any(line.startswith("computing tickets, churn_events, outcome_touchpoints") for line in said), said
    assert any(line.endswith(f"for {len(events)} stored events: 1/1") for line in said), said
    for table, rows in before.items():
        assert clickhouse.rows(f"SELECT * EXCEPT version FROM {table} FINAL ORDER BY ALL") == rows, table
    assert clickhouse.rows(totals) == counted


def test_a_table_of_an_earlier_version_stops_the_start(clickhouse: ClickHouse) -> None:
    db = clickhouse.database
    clickhouse.command(f"DROP TABLE {db}.waiting")
    clickhouse.command(
        f"CREATE TABLE {db}.waiting (conversation_id String, customer_id String, updated_at DateTime64(3)) "
        "ENGINE = ReplacingMergeTree(updated_at) ORDER BY (customer_id, conversation_id)"
    )
    missing = r"waiting lacks column\(s\) channel, waiting_since, answered, final"
    with pytest.raises(ConfigError, match=missing):
        clickhouse.migrate()


def test_a_backfill_of_many_years_lands_in_blocks_within_the_partition_limit(clickhouse: ClickHouse) -> None:
    """One batch of 13 years of monthly conversations: ClickHouse refuses an insert block
    spanning more than 100 months (code 252, which a retry never fixes), so the sink
    splits it; a block the server refuses all the same goes again month by month."""
    start = datetime(2001, 1, 15, 9, 0, tzinfo=UTC)
    months = 160
    events = []
    for number in range(months):
        moment = start + timedelta(days=30.44 * number)
        events += [
            event(event_id=f"q{number}", occurred_at=moment.isoformat(), conversation_id=f"c{number}"),
            event(event_id=f"a{number}", occurred_at=(moment + timedelta(minutes=3)).isoformat(),
                  conversation_id=f"c{number}", agent_id="kim", **AGENT),
        ]  # fmt: skip
    assert clickhouse.scalar("SELECT getSetting('max_partitions_per_insert_block')") == 100
    engines = engines_for(MetricsConfig())
    store(clickhouse, events, step(engines, events))
    assert clickhouse.scalar("SELECT count() FROM touchpoints FINAL") == 2 * months
    assert clickhouse.scalar("SELECT count() FROM responses FINAL") == months
    assert clickhouse.scalar("SELECT count() FROM responses FINAL WHERE final") == months - 1
    assert clickhouse.scalar("SELECT uniqExact(_partition_id) FROM touchpoints") >= months
    assert clickhouse.partition_limit == 100

    # The limit as read is higher than the server's: the refused block goes month by month.
    clickhouse.partition_limit = 1000
    later = [event(event_id=f"late-{e.event_id}", occurred_at=e.occurred_at.isoformat()) for e in events[::2]]
    sources = [Source("t", 1, n) for n in range(len(later))]
    touchpoints.write(clickhouse, list(zip(later, sources, strict=True)), sources)
    assert clickhouse.scalar("SELECT count() FROM touchpoints FINAL") == 3 * months
    touchpoints.write(clickhouse, list(zip(later, sources, strict=True)), sources)  # a retry: no duplicates
    assert clickhouse.scalar("SELECT count() FROM touchpoints") == 3 * months


def test_the_dashboards_experience_and_teams_queries_are_the_documented_ones() -> None:
    text = (Path(__file__).parents[2] / "docs" / "clickhouse.md").read_text()
    queries = {
        f"{module.__name__}.{name}": value
        for module in (experience, teams)
        for name, value in vars(module).items()
        if name.isupper() and "SELECT" in str(value)
    }
    assert len(queries) >= 14
    missing = [name for name, query in queries.items() if query.strip() not in text]
    assert not missing, f"not in docs/clickhouse.md word for word: {missing}"
