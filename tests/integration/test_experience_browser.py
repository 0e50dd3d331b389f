"""The experience view of a running `touchstream up`, in a real browser (Debian's chromium
driven by Playwright): after a history with a slow agent whose customers answer as
detractors, a churned customer and a ticket, the attribution table puts the slow agent's
replies at a 100 % bad share beside the fast agent's 0 % and the overall 50 %, ranks the
slow agent and the late interactions first by lift, the model and grouping selectors
re-render it, the charts draw with uPlot, and the ticket and churn
panels fill. Saves a screenshot under TOUCHSTREAM_ARTIFACTS (default test-artifacts/)."""

from __future__ import annotations

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
PAIRS = 36  # customers per agent: above the view's least outcomes per row (30)
DAY = 86_400


def history(at: Any) -> list[Any]:
    """Per customer: a chat message, the agent's reply (slow: 2 h; fast: 20 s), an NPS answer
    (detractor after the slow one, promoter after the fast one); a ticket; a churned customer."""
    events = []
    for number in range(2 * PAIRS):
        slow = number % 2 == 0
        customer, start = f"c{number:03d}", -5 * DAY + number * 600
        conversation = f"chat-{number}"
        events += [
            event(event_id=f"m{number}", customer_id=customer, occurred_at=at(start),
                  conversation_id=conversation),
            event(event_id=f"r{number}", customer_id=customer, occurred_at=at(start + (7200 if slow else 20)),
                  conversation_id=conversation, direction="outbound", actor="agent",
                  agent_id="slow-sam" if slow else "fast-fay"),
            event(event_id=f"s{number}", customer_id=customer, occurred_at=at(start + 9000),
                  conversation_id=conversation, kind="survey_response",
                  survey={"type": "nps", "score": 2 if slow else 10}),
        ]  # fmt: skip
    events.append(event(event_id="t1", customer_id="tia", occurred_at=at(-2 * DAY), channel="helpdesk",
                        kind="ticket_opened", conversation_id="ticket-1",
                        attributes={"category": "login", "priority": "high"}))  # fmt: skip
    return events


def experience(stack: Stack) -> dict[str, Any]:
    with urllib.request.urlopen(stack.dashboard.rstrip("/") + "/api/experience", timeout=60) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


def ready(panels: dict[str, Any]) -> bool:
    charts = ("churn_chart", "survey_chart", "ticket_chart")
    return panels["attribution"]["outcomes"] >= 2 * PAIRS + 1 and all(panels[chart]["x"] for chart in charts)


def test_experience_view_shows_the_slow_agent_behind_bad_outcomes(stack: Stack) -> None:
    at = seconds_from_now()
    # A customer last seen 45 days ago has churned 15 days ago; sent first, so nothing is late.
    send(stack.bootstrap, event(event_id="old", customer_id="gus", occurred_at=at(-45 * DAY), channel="web",
                                kind="page_view", conversation_id=None))  # fmt: skip
    send(stack.bootstrap, *history(at))
    # One read runs a dozen queries while the worker still writes, and is kept 30 s: wait for a
    # read that began after everything was stored.
    wait_until(lambda: ready(experience(stack)), timeout=150, what="the experience view with every panel")

    with browser_page(1400, 1800) as (page, errors):
        page.goto(stack.dashboard.rstrip("/") + "/experience")
        page.wait_for_selector("body[data-updates]", timeout=60_000)
        rows = page.locator("#attribution tbody tr")
        assert page.locator("#by").input_value() == "agent|quality"  # what the page shows first

        def shown(by: str) -> list[dict[str, str]]:
            page.select_option("#by", by)
            wait_until(
                lambda: rows.count() >= 2, timeout=10, what=f"attribution rows by {by or 'any grouping'}"
            )
            headers = page.locator("#attribution thead th").all_inner_texts()
            return [dict(zip(headers, rows.nth(index).locator("td").all_inner_texts(), strict=True))
                    for index in range(rows.count())]  # fmt: skip

        by_agent = {row["Agent"]: row for row in shown("agent")}
        assert by_agent["slow-sam"]["Bad share % (linear)"] == "100.0", by_agent
        assert by_agent["fast-fay"]["Bad share % (linear)"] == "0.0", by_agent
        # One churn (gus) among 73 outcomes with touchpoints: gus's own page view; 36 detractors.
        overall = page.locator("#overall-bad").inner_text()
        assert overall == f"{round(100 * (PAIRS + 1) / (2 * PAIRS + 1), 1)}", overall
        lift = round(100 / float(overall), 2)
        assert float(by_agent["slow-sam"]["Lift (linear)"]) == lift, by_agent
        # 36 outcomes, all bad: the Wilson interval of 36/36 is [90.4 %, 100 %].
        assert (by_agent["slow-sam"]["Bad outcomes %: 95% low"], by_agent["slow-sam"]["95% high"]) == (
            "90.4", "100.0"
        )  # fmt: skip
        # By interaction quality: the slow replies are late (chat's target is 5 min) and the
        # messages they answered answered late; the fast ones in the SLA.
        by_quality = {row["Interaction"]: row for row in shown("quality")}
        assert {quality: row["Bad share % (linear)"] for quality, row in by_quality.items()} == {
            "late": "100.0", "answered_late": "100.0", "in_sla": "0.0", "answered_in_sla": "0.0"
        }, by_quality  # fmt: skip
        # The first view (agents and interaction quality), ranked by lift: the slow agent and the
        # late interactions first.
        ranked = shown("agent|quality")
        top = [row for row in ranked if row["Lift (linear)"] == ranked[0]["Lift (linear)"]]
        assert {(row["By"], row["Agent"] or row["Interaction"]) for row in top} == {
            ("agent", "slow-sam"), ("quality", "late"), ("quality", "answered_late")
        }, ranked  # fmt: skip
        page.select_option("#model", "last")
        assert "Lift (last touch)" in page.locator("#attribution thead").inner_text()
        # Charts drew (uPlot canvases) and the ticket and churn panels filled.
        for chart in ("churn_chart", "survey_chart", "ticket_chart"):
            assert page.locator(f"#{chart} canvas").count() >= 1, chart
        assert "login" in page.locator("#ticket_chart").inner_text()
        assert page.locator("#tickets tbody").inner_text().startswith("helpdesk")
        assert "unanswered" in page.locator("#churn_by_signal").inner_text()
        for by in ("channel, kind and agent", "agent", ""):
            page.select_option("#by", by)
            assert_fits(page)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "experience.png"), full_page=True)
        assert not errors, errors
