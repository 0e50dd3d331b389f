"""Customer 360 (`GET /api/customers/<id>`, `touchstream customer ID`) from real ClickHouse
(chDB): the whole record, paged, consent periods marked, and no record answered 404."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from tests.factories import event
from tests.integration.test_metric_sinks import EVENTS, at
from touchstream.dashboard import web
from touchstream.schemas.topics import Source
from touchstream.settings import Settings
from touchstream.sinks import metric_rows, touchpoints
from touchstream.sinks.clickhouse import ClickHouse
from touchstream.sinks.maintained import MaintainedTables
from touchstream.streams.metrics import MetricsConfig
from touchstream.streams.partitions import PartitionEngines

CONSENT = [
    event(event_id="w1", customer_id="cust-7", occurred_at=at(1), channel="web", kind="page_view",
          conversation_id=None),
    event(event_id="off", customer_id="cust-7", occurred_at=at(2), channel="web", kind="consent_updated",
          consent={"analytics": False}, conversation_id=None),
    event(event_id="w2", customer_id="cust-7", occurred_at=at(3), channel="web", kind="page_view",
          conversation_id=None),
    event(event_id="on", customer_id="cust-7", occurred_at=at(4), channel="web", kind="consent_updated",
          consent={"analytics": True}, conversation_id=None),
    event(event_id="w3", customer_id="cust-7", occurred_at=at(5), channel="web", kind="page_view",
          conversation_id=None),
]  # fmt: skip


def load(clickhouse: ClickHouse) -> None:
    events = [*EVENTS, *CONSENT]
    sources = [Source("t", 0, n) for n in range(len(events))]
    touchpoints.write(clickhouse, list(zip(events, sources, strict=True)), sources)
    config = MetricsConfig(grace=timedelta(minutes=10))
    engines = PartitionEngines(config, None, partitions=1)
    metric_rows.write(clickhouse, engines.process(((e, 0, "t") for e in events), {}))
    MaintainedTables(clickhouse.database, config).refresh(clickhouse, {e.customer_id for e in events})


def get(clickhouse: ClickHouse, *paths: str) -> list[tuple[int, Any]]:
    settings = Settings()
    app = web.application(settings, web.Snapshots(web.reader(settings, clickhouse), 1.0),
                          web.customer_reader(settings, clickhouse))  # fmt: skip
    answers: list[tuple[int, Any]] = []

    async def scenario() -> None:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            for path in paths:
                response = await client.get(path)
                answers.append((response.status, await response.json()))

    asyncio.run(scenario())
    return answers


def test_a_customers_whole_record_in_one_call(clickhouse: ClickHouse) -> None:
    load(clickhouse)
    [(status, record)] = get(clickhouse, "/api/customers/cust-1")
    assert status == 200
    ids = [point["event_id"] for point in record["touchpoints"]]
    assert ids == ["q1", "a1", "q2", "buy", "nps"], "every touchpoint, in event order"
    assert record["profile"]["purchases"] == 1 and record["profile"]["latest_nps"] == 10
    assert [j["channel_path"] for j in record["journeys"]] == [["chat", "email", "web", "chat"]]
    assert {point["journey_id"] for point in record["touchpoints"]} == {"cust-1:q1"}
    conversations = {c["conversation_id"]: c["touchpoints"] for c in record["conversations"]}
    assert conversations["c1"] == 2 and conversations["c2"] == 1
    assert [r["reply_event_id"] for r in record["responses"]] == ["a1"]
    assert record["responses"][0]["response_seconds"] == 240.0
    assert [w["conversation_id"] for w in record["waiting"]] == ["c2"]
    assert [s["score"] for s in record["surveys"]] == [10]
    assert record["level_changes"] and record["consent_withdrawn"] == []


def test_touchpoints_are_paged(clickhouse: ClickHouse) -> None:
    load(clickhouse)
    [(_, first)] = get(clickhouse, "/api/customers/cust-1?limit=2")
    assert [p["event_id"] for p in first["touchpoints"]] == ["q1", "a1"]
    assert first["page"]["total"] == 5 and first["page"]["next"] is not None
    cursor = first["page"]["next"].replace("+", "%2B").replace("|", "%7C")
    after_buy = "/api/customers/cust-1?limit=2&after=2026-03-02T09:11:00.000Z%7Cbuy"
    [(_, second), (_, last)] = get(clickhouse, f"/api/customers/cust-1?limit=2&after={cursor}", after_buy)
    assert [p["event_id"] for p in second["touchpoints"]] == ["q2", "buy"]
    assert [p["event_id"] for p in last["touchpoints"]] == ["nps"] and last["page"]["next"] is None
    [(status, answer)] = get(clickhouse, "/api/customers/cust-1?limit=5000")
    assert status == 400 and "limit" in answer["error"]


def test_periods_without_consent_are_marked_and_no_record_is_a_404(clickhouse: ClickHouse) -> None:
    load(clickhouse)
    [(status, record), (missing, answer)] = get(clickhouse, "/api/customers/cust-7", "/api/customers/nobody")
    assert status == 200
    assert record["consent_withdrawn"] == [
        {"from": "2026-03-02T09:02:00.000Z", "to": "2026-03-02T09:04:00.000Z"}
    ]
    counted = {p["event_id"]: p["counted"] for p in record["touchpoints"]}
    assert counted == {"w1": True, "off": False, "w2": False, "on": False, "w3": True}
    reasons = {p["event_id"]: p["not_counted"] for p in record["touchpoints"]}
    assert reasons == {"w1": None, "off": "consent change", "w2": "no consent", "on": "consent change",
                       "w3": None}  # fmt: skip
    assert record["profile"]["consent"] is True
    assert missing == 404 and "no record of customer 'nobody'" in answer["error"]
    assert "erased" in answer["error"]


def test_a_late_event_is_said_to_be_late(clickhouse: ClickHouse) -> None:
    """A customer whose only event came after the horizon had passed it: stored, not
    counted, and the record says it was late (not that consent was withdrawn)."""
    load(clickhouse)
    late = event(event_id="tardy", customer_id="cust-late", occurred_at=at(-60), channel="web",
                 kind="page_view", conversation_id=None)  # fmt: skip
    engines = PartitionEngines(MetricsConfig(grace=timedelta(minutes=10)), None, partitions=1)
    engines.process(((e, 0, "t") for e in [*EVENTS, *CONSENT]), {})
    out = engines.process([(late, 0, "t")], {})
    assert [e.event_id for e in out.late] == ["tardy"]
    touchpoints.write(clickhouse, [(late, Source("t", 0, 100))], [Source("t", 0, 100)])
    metric_rows.write(clickhouse, out)
    MaintainedTables(clickhouse.database).refresh(clickhouse, {"cust-late"})
    [(status, record)] = get(clickhouse, "/api/customers/cust-late")
    assert status == 200 and record["profile"] is None
    assert [(p["counted"], p["not_counted"]) for p in record["touchpoints"]] == [(False, "late")]
    assert record["not_counted"] == "1 late"


def test_the_terminal_view_shows_profile_journeys_and_timeline(clickhouse: ClickHouse) -> None:
    from rich.console import Console

    from touchstream.dashboard import customer, customer_view

    load(clickhouse)
    lookup = web.customer_reader(Settings(), clickhouse)
    console = Console(record=True, width=160, color_system=None)
    customer_view.show(lookup("cust-1", customer.Page()), console)
    customer_view.show(lookup("cust-7", customer.Page(limit=3)), console)
    text = console.export_text()
    assert "Customer cust-1" in text and "preferred channel" in text
    assert "chat > email > web > chat" in text and "purchase" in text
    assert "first reply after 4m 00s" in text, "the response time on the reply's line"
    assert "NPS 10" in text and "waiting since" in text
    assert "no consent" in text and "2026-03-02 09:02:00 to 2026-03-02 09:04:00" in text
    assert "not counted: consent change" in text
    assert "touchpoints 1-3 of 5" in text and "more: --after '2026-03-02T09:03:00.000Z|w2'" in text


def test_the_record_has_the_customers_tickets_and_churns(clickhouse: ClickHouse) -> None:
    desk = {"channel": "helpdesk", "conversation_id": "t-9"}
    history = [
        event(event_id="open", customer_id="cust-9", occurred_at=at(10), kind="ticket_opened",
              attributes={"category": "billing", "priority": "high"}, **desk),
        event(event_id="ans", customer_id="cust-9", occurred_at=at(70), direction="outbound", actor="agent",
              agent_id="kim", **desk),
        event(event_id="done", customer_id="cust-9", occurred_at=at(90), kind="ticket_resolved",
              direction="none", actor="agent", agent_id="kim", **desk),
        # Seen once, 40 days before everything else: churned 10 days ago.
        event(event_id="gone", customer_id="cust-8", occurred_at=at(-40 * 24 * 60), channel="web",
              kind="page_view", conversation_id=None),
    ]  # fmt: skip
    sources = [Source("t", 0, n) for n in range(len(history))]
    touchpoints.write(clickhouse, list(zip(history, sources, strict=True)), sources)
    config = MetricsConfig(grace=timedelta(minutes=10))
    engines = PartitionEngines(config, None, partitions=1)
    metric_rows.write(clickhouse, engines.process(((e, 0, "t") for e in history), {}))
    MaintainedTables(clickhouse.database, config).refresh(clickhouse, {e.customer_id for e in history})
    (status, desk_record), (_, gone) = get(clickhouse, "/api/customers/cust-9", "/api/customers/cust-8")
    assert status == 200
    [ticket] = desk_record["tickets"]
    assert (ticket["conversation_id"], ticket["category"], ticket["priority"], ticket["status"]) == (
        "t-9",
        "billing",
        "high",
        "resolved",
    )
    assert ticket["first_response_seconds"] == 3600.0 and ticket["resolved_on_first_reply"] is True
    assert desk_record["churns"] == []
    [churn] = gone["churns"]
    assert churn["last_interaction_at"] == gone["touchpoints"][0]["occurred_at"]
    assert churn["returned_at"] is None and churn["level_at_churn"] == "dormant" and churn["signals"] == []
