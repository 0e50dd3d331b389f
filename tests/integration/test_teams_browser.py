"""The Teams view of a running `touchstream up`, in a real browser (Debian's chromium driven
by Playwright): two teams, a fast and a slow agent, a conversation closed without a reply
and satisfied and dissatisfied answers after them; the reports per team and per agent
fill, sort by a column, and download as CSV with the rows the table shows. Saves a
screenshot under TOUCHSTREAM_ARTIFACTS (default test-artifacts/)."""

from __future__ import annotations

import csv
import io
import json
import urllib.request
from typing import Any

from tests.factories import event
from tests.integration.test_dashboard_browser import (
    ARTIFACTS,
    Stack,
    assert_fits,
    browser_page,
    seconds_from_now,
    send,
    stack,
)
from touchstream.process import wait_until

__all__ = ["stack"]  # the fixture
CUSTOMERS = 6


def history(at: Any) -> list[Any]:
    """Per customer a chat: a message, the reply (billing's ann in 30 s, tech's bob in 30 min)
    and a CSAT answer (5 after ann, 1 after bob); and one tech chat closed without a reply."""
    events = []
    for number in range(CUSTOMERS):
        billing = number % 2 == 0
        team, agent, delay = ("billing", "ann", 30) if billing else ("tech", "bob", 1800)
        customer, start, conversation = f"c{number}", -7200 + number * 60, f"chat-{number}"
        events += [
            event(event_id=f"m{number}", customer_id=customer, occurred_at=at(start),
                  conversation_id=conversation, team_id=team),
            event(event_id=f"r{number}", customer_id=customer, occurred_at=at(start + delay),
                  conversation_id=conversation, direction="outbound", actor="agent", agent_id=agent,
                  team_id=team),
            event(event_id=f"s{number}", customer_id=customer, occurred_at=at(start + 2400),
                  kind="survey_response", survey={"type": "csat", "score": 5 if billing else 1}),
        ]  # fmt: skip
    events += [
        event(event_id="w1", customer_id="wes", occurred_at=at(-600), conversation_id="chat-w",
              team_id="tech"),
        event(event_id="w2", customer_id="wes", occurred_at=at(-300), conversation_id="chat-w",
              kind="conversation_closed", direction="none", actor="agent", agent_id="bob"),
    ]  # fmt: skip
    return events


def reports(stack: Stack) -> dict[str, Any]:
    with urllib.request.urlopen(stack.dashboard.rstrip("/") + "/api/teams", timeout=60) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


def ready(data: dict[str, Any]) -> bool:
    teams = {row["team"]: row for row in data["teams"]["rows"]}
    return all(teams.get(team, {}).get("csat_answers") == CUSTOMERS // 2 for team in ("billing", "tech"))


def test_teams_view_reports_per_team_and_agent_and_downloads_csv(stack: Stack) -> None:
    send(stack.bootstrap, *history(seconds_from_now()))
    wait_until(lambda: ready(reports(stack)), timeout=120, what="both teams' reports with their surveys")
    teams = {row["team"]: row for row in reports(stack)["teams"]["rows"]}
    assert (teams["billing"]["conversations"], teams["tech"]["conversations"]) == (3, 4)
    assert teams.get("(none)", {}).get("conversations", 0) == 0, "survey answers open no conversation"
    assert (teams["billing"]["closed_without_reply"], teams["tech"]["closed_without_reply"]) == (0, 1)
    assert (teams["billing"]["csat_percent"], teams["tech"]["csat_percent"]) == (100.0, 0.0)
    assert teams["billing"]["first_response_p50"] == 30.0 and teams["tech"]["first_response_p50"] == 1800.0

    with browser_page(1400, 1200) as (page, errors):
        page.goto(stack.dashboard.rstrip("/") + "/teams")
        page.wait_for_selector("body[data-updates]", timeout=60_000)
        rows = page.locator("#agents tbody tr")
        wait_until(lambda: rows.count() >= 2, timeout=10, what="the agents' rows")
        headers = page.locator("#agents thead th").all_inner_texts()
        shown = [dict(zip(headers, rows.nth(n).locator("td").all_inner_texts(), strict=True))
                 for n in range(rows.count())]  # fmt: skip
        agents = {row["Agent"]: row for row in shown}
        assert (
            agents["ann"]["First response p50"] == "30s" and agents["bob"]["First response p50"] == "30m 00s"
        )
        assert agents["ann"]["CSAT %"] == "100.0" and agents["bob"]["CSAT %"] == "0.0", agents
        # Sorted by CSAT, lowest first: bob before ann.
        page.locator("#agents thead button", has_text="CSAT %").click()
        order = [rows.nth(n).locator("td").first.inner_text() for n in range(rows.count())]
        assert order.index("bob") < order.index("ann"), order
        with page.expect_download() as download:
            page.locator('a[data-csv="agents"]').click()
        text = open(download.value.path(), encoding="utf-8").read()  # noqa: SIM115 (Playwright's file)
        lines = list(csv.reader(io.StringIO(text)))
        assert lines[0] == headers
        assert [line[0] for line in lines[1:]] == order, lines
        by_agent = {line[0]: dict(zip(lines[0], line, strict=True)) for line in lines[1:]}
        assert by_agent["bob"]["First response p50"] == "1800" and by_agent["bob"]["CSAT %"] == "0"
        assert page.locator('a[data-csv="teams"]').count() == 1
        channels = page.locator("#channels tbody tr")
        assert channels.count() == 1 and channels.first.locator("td").first.inner_text() == "chat"
        assert_fits(page)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "teams.png"), full_page=True)
        assert not errors, errors
