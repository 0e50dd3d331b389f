"""The ops view's panels read from real ClickHouse (chDB), the terminal view rendered to a
captured console, and the web app's token guard."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from rich.console import Console

from tests.factories import event
from tests.integration.test_metric_sinks import DETRACTOR, EVENTS, at
from touchstream.dashboard import top, web
from touchstream.dashboard.panels import snapshot
from touchstream.schemas.topics import Source
from touchstream.settings import Settings
from touchstream.sinks import metric_rows, touchpoints
from touchstream.sinks.clickhouse import ClickHouse
from touchstream.sinks.maintained import MaintainedTables
from touchstream.streams.metrics import Engine, MetricsConfig

#: Decay alone cannot drop two levels within 7 days at the SPEC's 7-day half-life (high to
#: low takes 11 days), so these tables run with a one-day half-life: cust-9 buys four
#: times three days before T0 and falls from high to low within two days...
CONFIG = MetricsConfig(grace=timedelta(0), half_life=timedelta(days=1))
FALLING = [event(event_id=f"buy-{n}", customer_id="cust-9", occurred_at=at(-60 * 24 * 3 + n), kind="purchase",
                 direction="none", channel="web", conversation_id=None) for n in range(4)]  # fmt: skip
#: ...until this late page view lets the decay crossings happen in event time.
LATER = event(event_id="late-view", customer_id="cust-9", occurred_at=at(60 * 24 * 3), kind="page_view",
              channel="web", conversation_id=None)  # fmt: skip


def load(clickhouse: ClickHouse) -> None:
    events = [*FALLING, *EVENTS, DETRACTOR, LATER]
    sources = [Source("t", 0, n) for n in range(len(events))]
    touchpoints.write(clickhouse, list(zip(events, sources, strict=True)), sources)
    engine = Engine(CONFIG)
    metric_rows.write(clickhouse, engine.process(events))
    MaintainedTables(clickhouse.database, CONFIG).refresh(clickhouse, {e.customer_id for e in events})


def read(clickhouse: ClickHouse, settings: Settings) -> dict[str, Any]:
    return snapshot(lambda sql, params: clickhouse.rows(sql, dict(params)), CONFIG, settings.sla_seconds)


def test_panels_from_clickhouse(clickhouse: ClickHouse) -> None:
    load(clickhouse)
    settings = Settings(dashboard_sla_seconds={"*": 600.0})
    panels = read(clickhouse, settings)
    assert panels["reference"] == LATER.occurred_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    # q2 (email, cust-1) is the only unanswered message; it has waited days in event time.
    waiting = panels["waiting"]["rows"]
    assert [(row["customer_id"], row["channel"], row["over_sla"]) for row in waiting] == [
        ("cust-1", "email", True)
    ]
    assert panels["waiting"]["count"] == 1
    # Its first-response target (email: a day, the default policy) is breached now, overdue.
    sla = panels["sla"]["rows"]
    breached = [
        (row["customer_id"], row["metric"], row["policy"]) for row in sla if row["status"] == "breached"
    ]
    assert breached == [("cust-1", "first_response", "channel:email")]
    assert panels["sla"]["count"] == 1 and sla[0]["due_in_seconds"] < 0 and sla[0]["over_sla"]
    # The replies fall outside the last 24 h of event time, so no channel has response times now.
    assert panels["responses"]["rows"] == []
    levels = {row["level"]: row["customers"] for row in panels["levels"]["rows"]}
    assert sum(levels.values()) == panels["levels"]["count"] == 4
    at_risk = panels["at_risk"]["rows"]
    assert [(row["customer_id"], row["peak_level"], row["level"]) for row in at_risk] == [
        ("cust-9", "high", "dormant")
    ]
    changes = panels["changes"]["rows"]
    assert [row["changed_at"] for row in changes] == sorted(
        (row["changed_at"] for row in changes), reverse=True
    )
    assert changes[0]["direction"] == "falling"  # the latest: decay in the quiet days before the reference
    assert {row["direction"] for row in changes} == {"rising", "falling"}
    assert panels["top"]["rows"][0]["customer_id"] in {"cust-1", "cust-9"}
    health = {row["metric"]: row["value"] for row in panels["health"]["rows"]}
    assert health["late events"] == "0" and health["dead letters"] is None
    json.dumps(panels)  # what the page receives


def test_terminal_view_renders_every_panel(clickhouse: ClickHouse) -> None:
    load(clickhouse)
    panels = read(clickhouse, Settings())
    console = Console(record=True, width=200, force_terminal=False)
    console.print(top.render(panels))
    text = console.export_text()
    for title, _ in top.PANELS.values():
        assert title in text
    assert "cust-9" in text and "email" in text and "q quits" in text
    assert top.spark([0.0, None, 4.0]) == "▁ █" and top.duration(3725) == "1h 02m"
    piped = Console(record=True, width=200, force_terminal=False)
    top.run(lambda: panels, refresh=0.1, console=piped)  # not a terminal: once, then returns
    assert piped.export_text() == text


def test_web_app_serves_the_page_and_wants_its_token(clickhouse: ClickHouse) -> None:
    load(clickhouse)
    settings = Settings(dashboard_token=SecretStr("s3cret"), dashboard_refresh_seconds=0.2)
    app = web.application(settings, web.Snapshots(lambda: read(clickhouse, settings), 0.2))

    async def scenario() -> None:
        async with TestClient(TestServer(app)) as client:
            assert (await client.get("/")).status == 401
            assert (await client.get("/api/snapshot?token=wrong")).status == 401
            page = await client.get("/?token=s3cret")
            assert page.status == 200 and '<table id="waiting">' in await page.text()
            js = await client.get("/static/dashboard.js", headers={"Authorization": "Bearer s3cret"})
            assert js.status == 200 and js.content_type == "text/javascript"
            assert (await client.get("/static/../web.py?token=s3cret")).status == 404
            icon = await client.get("/favicon.ico?token=s3cret")
            assert icon.status == 200 and icon.content_type == "image/svg+xml"
            data = await (await client.get("/api/snapshot?token=s3cret")).json()
            assert data["waiting"]["count"] == 1
            stream = await client.get("/api/stream?token=s3cret")
            assert stream.headers["Content-Type"] == "text/event-stream"
            first = await stream.content.readuntil(b"\n\n")
            assert first.startswith(b"event: snapshot\ndata: {")
            stream.close()

    asyncio.run(scenario())


def test_a_dashboard_beyond_loopback_needs_a_token() -> None:
    import pytest

    from touchstream.schemas.errors import ConfigError

    with pytest.raises(ConfigError, match="TOUCHSTREAM_DASHBOARD_TOKEN"):
        web.check_binding(Settings(dashboard_host="0.0.0.0", dashboard_port=0))
    web.check_binding(Settings(dashboard_host="0.0.0.0", dashboard_port=0, dashboard_token=SecretStr("t")))


def test_the_dashboard_reads_only_and_answers_only_for_its_own_host(clickhouse: ClickHouse) -> None:
    import pytest

    from touchstream.schemas.errors import ClickHouseError

    load(clickhouse)
    settings = Settings(dashboard_refresh_seconds=0.2)
    panels = web.reader(settings, clickhouse)()  # every panel's query runs with readonly = 1
    assert panels["waiting"]["count"] == 1
    # The behaviour patterns: preferred channels (shares of 100 %), when customers act, and
    # the journey paths by ending (cust-1's journey ended in a purchase, cust-2's in a detractor).
    preferred = panels["preferred_channels"]["rows"]
    assert preferred and round(sum(row["percent"] for row in preferred)) == 100
    heat = panels["active_hours"]
    assert [row["weekday"] for row in heat["rows"]] == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    assert heat["max"] == max(row[f"h{hour:02}"] for row in heat["rows"] for hour in range(24)) > 0
    endings = {row["ending"] for row in panels["journey_paths"]["rows"]}
    assert endings == {"purchase", "detractor or dissatisfied"}
    for statement in (
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
        "CREATE TABLE x (a Int8) ENGINE = Memory",
    ):
        with pytest.raises(ClickHouseError, match="READONLY"):
            clickhouse.rows(statement, read_only=True)
    assert clickhouse.rows("SELECT getSetting('readonly')") == [(0,)], "read-only stays with its query"
    clickhouse.command("CREATE TABLE written_after (a Int8) ENGINE = Memory")

    app = web.application(settings, web.Snapshots(web.reader(settings, clickhouse), 0.2))

    async def scenario() -> None:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            assert (await client.get("/api/snapshot")).status == 200
            for host in ("localhost:8081", "[::1]:8081", "127.0.0.2"):
                assert (await client.get("/", headers={"Host": host})).status == 200, host
            rebound = await client.get("/api/snapshot", headers={"Host": "rebound.example:8081"})
            assert rebound.status == 403, "a page whose name resolves to loopback (DNS rebinding)"
            assert "Host" in await rebound.text()

    asyncio.run(scenario())
