"""The metric tables in real ClickHouse (chDB): rows, idempotent retries, erasure, views."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sinks import metrics, touchpoints
from sinks.clickhouse import ClickHouse
from sinks.touchpoints import Source
from streams.metrics import Engine, MetricsConfig
from streams.metrics.quantiles import exact_quantile
from tests.factories import event

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


def test_metric_rows_views_retries_and_erasure(clickhouse: ClickHouse) -> None:
    engine = Engine(MetricsConfig(grace=timedelta(minutes=10)))
    outputs = engine.process(EVENTS)
    late = engine.process([event(event_id="old", occurred_at=at(1), conversation_id="c1")])
    outputs.extend(late)
    touchpoints.write(clickhouse, [touchpoints.row(e, Source("t", 0, n)) for n, e in enumerate(EVENTS)],
                      [Source("t", 0, n) for n in range(len(EVENTS))])  # fmt: skip
    metrics.write(clickhouse, outputs, step="t:0:0-8")
    metrics.write(clickhouse, outputs, step="t:0:0-8")  # a retried step

    assert clickhouse.rows(
        "SELECT reply_event_id, customer_id, channel, agent_id, response_seconds, is_first_response "
        "FROM responses FINAL ORDER BY reply_event_id"
    ) == [("a1", "cust-1", "chat", "kim", 240.0, True), ("a3", "cust-2", "chat", "lee", 120.0, True)]
    assert clickhouse.scalar("SELECT count() FROM responses") == 2, "the retried step was dropped"
    waiting = clickhouse.rows("SELECT conversation_id, answered FROM waiting FINAL ORDER BY conversation_id")
    assert waiting == [("c1", True), ("c2", False), ("c3", True)]
    # 3 + 3 + 5 + 2 (two messages, a purchase, a survey) is medium; cust-3's page view is
    # still within the grace period (horizon = 60 - 10 minutes), so not yet folded in.
    engagement = "SELECT customer_id, level FROM engagement FINAL ORDER BY customer_id"
    assert clickhouse.rows(engagement) == [("cust-1", "medium"), ("cust-2", "low")]
    assert clickhouse.rows("SELECT event_id, lateness_seconds FROM late_events FINAL") == [("old", 49 * 60.0)]
    hourly = "SELECT channel, responses, p50_seconds FROM response_times_hourly ORDER BY channel"
    assert clickhouse.rows(hourly) == [("chat", 2, 240.0)]
    # The stream's quantiles use ClickHouse's quantileExact rank, so both agree.
    for values in ([240.0, 120.0], [5.0, 1.0, 9.0, 7.0], [3.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]):
        for q in (0.5, 0.9):
            sql = f"SELECT quantileExact({q})(x) FROM (SELECT arrayJoin({values}) AS x)"
            assert clickhouse.scalar(sql) == exact_quantile(values, q), (values, q)
    assert clickhouse.rows("SELECT promoters, detractors FROM experience_hourly") == [(1, 0)]
    assert clickhouse.scalar("SELECT sum(events) FROM volumes_hourly") == len(EVENTS)

    forget = Engine(MetricsConfig(grace=timedelta(0)))
    forget.process(EVENTS)
    erasure = event(event_id="gone", occurred_at=at(61), kind="erasure_requested", conversation_id=None)
    tick = event(event_id="t2", customer_id="cust-3", occurred_at=at(70), kind="page_view", **WEB)
    erased = forget.process([erasure, tick])
    metrics.write(clickhouse, erased, step="t:0:8-10")
    for table in ("touchpoints", "responses", "engagement", "engagement_changes", "surveys", "waiting"):
        assert clickhouse.scalar(f"SELECT count() FROM {table} FINAL WHERE customer_id = 'cust-1'") == 0, (
            table
        )
    assert clickhouse.scalar("SELECT count() FROM responses FINAL WHERE customer_id = 'cust-2'") == 1
    assert clickhouse.rows("SELECT request_event_id FROM erasures FINAL") == [("gone",)]


DETRACTOR = event(event_id="nps-low", customer_id="cust-2", occurred_at=at(20), channel="email",
                  kind="survey_response", survey={"type": "nps", "score": 3})  # fmt: skip


def test_every_query_in_the_analyst_docs_runs(clickhouse: ClickHouse) -> None:
    engine = Engine(MetricsConfig(grace=timedelta(minutes=10)))
    events = [*EVENTS, DETRACTOR]
    touchpoints.write(clickhouse, [touchpoints.row(e, Source("t", 0, n)) for n, e in enumerate(events)],
                      [Source("t", 0, n) for n in range(len(events))])  # fmt: skip
    metrics.write(clickhouse, engine.process(events), step="docs")
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
