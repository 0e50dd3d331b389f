"""The ops dashboard of a running `touchstream up` at default settings (10 min grace,
1 s flush, 1 s refresh), in a real browser (Debian's chromium driven by Playwright):
the tables fill, and a customer message POSTed to the collector is in the waiting
queue, marked provisional, within 3 s, and leaves it within 3 s of the agent's reply,
without a reload. Saves a screenshot and the measured page-load time and update
latencies under TOUCHSTREAM_ARTIFACTS (default test-artifacts/)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.factories import event
from tests.integration.test_web_snippet import BROWSER_ARGS, CHROMIUM
from touchstream.control import read_info
from touchstream.process import wait_until
from touchstream.producers.publisher import Publisher

ARTIFACTS = Path(os.environ.get("TOUCHSTREAM_ARTIFACTS", "test-artifacts"))


@dataclass(frozen=True)
class Stack:
    bootstrap: str
    dashboard: str
    collector: str
    key: str


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """`touchstream up` on its own embedded broker and chDB, every port free."""
    collector_port = free_port()
    env = {
        key: value for key, value in os.environ.items() if key not in ("KAFKA_BOOTSTRAP", "CLICKHOUSE_URL")
    }
    env.update(
        TOUCHSTREAM_DATA_DIR=str(tmp_path / "data"),
        TOUCHSTREAM_WORKER_PORT="0",
        TOUCHSTREAM_CLICKHOUSE_HTTP_PORT="0",
        TOUCHSTREAM_COLLECTOR_PORT=str(collector_port),
        TOUCHSTREAM_DASHBOARD_PORT="0",
        TOUCHSTREAM_DASHBOARD_SLA_SECONDS='{"*": 120}',
        TOUCHSTREAM_SESSION_TIMEOUT_MS="6000",
    )
    log = (tmp_path / "up.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "touchstream.cli", "up"], env=env, stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip

    def running() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"touchstream up exited: {(tmp_path / 'up.log').read_text()[-2000:]}")
        info = read_info(tmp_path / "data")
        return info is not None and info.pid == process.pid

    try:
        wait_until(running, timeout=90, what="touchstream up")
        info = read_info(tmp_path / "data")
        assert info is not None and info.dashboard, "up serves a dashboard"
        key = (tmp_path / "data" / "collector.key").read_text().strip()
        yield Stack(info.bootstrap, info.dashboard, f"http://127.0.0.1:{collector_port}", key)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def send(bootstrap: str, *events: Any) -> float:
    with Publisher(bootstrap) as publisher:
        assert publisher.publish(list(events)).ok
    return time.monotonic()


def post(collector: str, key: str, *events: Any) -> float:
    """POST events to the collector as a channel system would; the moment it answered."""
    body = json.dumps([json.loads(e.model_dump_json()) for e in events]).encode()
    request = urllib.request.Request(f"{collector}/v1/events", data=body, method="POST", headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202 and json.loads(response.read())["accepted"] == len(events)
    return time.monotonic()


AGENT = {"direction": "outbound", "actor": "agent", "agent_id": "kim"}


def needs_chromium() -> None:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"this test needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")


@contextmanager
def browser_page(width: int, height: int) -> Iterator[tuple[Any, list[str]]]:
    """A page of Debian's chromium (Playwright), and the JavaScript errors it raises."""
    needs_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page, errors
        finally:
            browser.close()


#: Tables wider than what holds them, and column headers cut, on the page as laid out now.
OVERFLOWS = """() => {
  const problems = [];
  for (const table of document.querySelectorAll("main table")) {
    if (!table.offsetParent) continue;
    const holder = table.closest(".scroll") || table.closest(".panel");
    if (table.scrollWidth > holder.clientWidth + 1) {
      problems.push(`${table.id}: ${table.scrollWidth} px wide in ${holder.clientWidth} px`);
    }
    for (const th of table.querySelectorAll("thead th")) {
      if (th.scrollWidth > th.clientWidth + 1) problems.push(`${table.id}: header "${th.textContent}" cut`);
    }
  }
  return problems;
}"""
LAYOUT_WIDTHS = (1280, 1440)


def assert_fits(page: Any) -> None:
    """At 1280 and 1440 px wide, no table overflows its panel and every header shows whole."""
    for width in LAYOUT_WIDTHS:
        page.set_viewport_size({"width": width, "height": 1200})
        page.wait_for_timeout(300)  # the grid and the charts settle to the new width
        assert page.evaluate(OVERFLOWS) == [], f"at {width} px"


def seconds_from_now() -> Callable[[float], str]:
    """ISO times relative to now (whole seconds), for events of a live test."""
    now = datetime.now(UTC).replace(microsecond=0)
    return lambda seconds: (now + timedelta(seconds=seconds)).isoformat()


def test_dashboard_fills_and_updates_live_in_a_real_browser(stack: Stack) -> None:
    needs_chromium()
    at = seconds_from_now()
    agent = AGENT
    buy = {"kind": "purchase", "direction": "none", "channel": "web", "conversation_id": None}
    send(
        stack.bootstrap,
        event(event_id="d1", customer_id="ann", occurred_at=at(-600), conversation_id="c-ann"),  # > SLA
        event(event_id="d2", customer_id="bob", occurred_at=at(-300), conversation_id="c-bob"),
        event(event_id="d3", customer_id="bob", occurred_at=at(-240), conversation_id="c-bob", **agent),
        event(event_id="d4", customer_id="cid", occurred_at=at(-200), **buy),
        event(event_id="d5", customer_id="bob", occurred_at=at(-100), kind="survey_response",
              conversation_id="c-bob", survey={"type": "nps", "score": 9}),
        event(event_id="d6", customer_id="dee", occurred_at=at(-30), conversation_id="c-dee"),
    )  # fmt: skip
    figures: dict[str, float] = {}
    with browser_page(1366, 900) as (page, errors):
        began = time.monotonic()
        page.goto(stack.dashboard)
        page.wait_for_function("Number(document.body.dataset.updates || 0) >= 1", timeout=30_000)
        figures["page_load_to_first_tables_ms"] = round((time.monotonic() - began) * 1000)
        page.evaluate("window.__sameDocument = true")

        waiting = page.locator("#waiting tbody tr")
        page.wait_for_function(
            "document.querySelectorAll('#waiting tbody tr[data-customer]').length === 2", timeout=30_000
        )
        assert waiting.nth(0).get_attribute("data-customer") == "ann", "oldest first"
        assert "over-sla" in (waiting.nth(0).get_attribute("class") or ""), "ann waits 10 min, SLA 2 min"
        assert "over-sla" not in (waiting.nth(1).get_attribute("class") or "")
        assert page.locator("#responses tbody tr", has_text="chat").count() == 1
        assert page.locator("#experience tbody tr", has_text="chat").inner_text().split("\t")[1] == "100.0"
        assert (
            page.locator("#changes tbody tr[data-customer='cid']").count() >= 1
        )  # a purchase: dormant->medium
        page.locator("#waiting th button", has_text="Customer").click()  # sort by customer, descending next
        page.locator("#waiting th button", has_text="Customer").click()
        assert waiting.nth(0).get_attribute("data-customer") == "dee"

        # Live: a new customer's message, POSTed now, is in the queue within seconds and
        # provisional (within the grace period); the agent's reply takes it out again.
        asked = post(
            stack.collector,
            stack.key,
            event(
                event_id="d7",
                customer_id="eve",
                occurred_at=datetime.now(UTC).isoformat(),
                conversation_id="c-eve",
            ),
        )
        page.wait_for_selector("#waiting tbody tr[data-customer='eve']", timeout=3_000)
        figures["message_posted_to_waiting_row_ms"] = round((time.monotonic() - asked) * 1000)
        assert "provisional" in (
            page.locator("#waiting tbody tr[data-customer='eve']").get_attribute("class") or ""
        )
        reply = event(event_id="d7r", customer_id="eve", occurred_at=datetime.now(UTC).isoformat(),
                      conversation_id="c-eve", **agent)  # fmt: skip
        answered = post(stack.collector, stack.key, reply)
        page.wait_for_selector("#waiting tbody tr[data-customer='eve']", state="detached", timeout=3_000)
        figures["reply_posted_to_waiting_row_gone_ms"] = round((time.monotonic() - answered) * 1000)

        # ann is answered, and cid's purchases raise a level.
        send(
            stack.bootstrap,
            event(event_id="d8", customer_id="ann", occurred_at=at(20), conversation_id="c-ann", **agent),
            *[event(event_id=f"d9-{n}", customer_id="cid", occurred_at=at(30 + n), **buy)
              for n in range(3)],
        )  # fmt: skip
        page.wait_for_selector("#waiting tbody tr[data-customer='ann']", state="detached", timeout=30_000)
        page.wait_for_function(
            "document.querySelectorAll('#changes tbody tr[data-customer=\"cid\"] td.rising').length >= 2",
            timeout=30_000,
        )
        assert page.evaluate("window.__sameDocument === true"), "updated without a reload"
        assert page.locator("#levels tbody tr", has_text="high").inner_text().split("\t")[1] == "1"
        page.wait_for_selector("#journey_paths tbody tr:has-text('purchase')", timeout=30_000)
        assert page.locator("#preferred_channels tbody tr").count() >= 1
        assert page.locator("#active_hours td.heat").count() == 7 * 24
        health = page.locator("#health tbody").inner_text()
        assert "dead letters\t0" in health and "last sink flush\t20" in health, health
        # Every table has its CSV link; the waiting queue's downloads the rows shown.
        assert page.locator("a[data-csv]").count() == page.locator("main table:not(.u-legend)").count() == 12
        assert "Due in" in page.locator("#sla thead").inner_text()
        with page.expect_download() as download:
            page.locator('a[data-csv="waiting"]').click()
        waiting_csv = open(download.value.path(), encoding="utf-8").read().splitlines()  # noqa: SIM115
        assert len(waiting_csv) == 1 + page.locator("#waiting tbody tr").count(), waiting_csv
        assert_fits(page)
        assert not errors, errors
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    (ARTIFACTS / "dashboard-timings.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("dashboard timings:", figures)


def test_customer_360_from_search_and_links_updates_live_in_a_real_browser(stack: Stack) -> None:
    """Search a customer, open another from a table link, see the timeline's lanes and the
    profile, and a newly POSTed event appear on the page without a reload."""
    needs_chromium()
    at = seconds_from_now()
    agent = AGENT
    web_visit = {"channel": "web", "kind": "page_view", "conversation_id": None}
    send(
        stack.bootstrap,
        event(event_id="j1", customer_id="ann", occurred_at=at(-900), **web_visit),
        event(event_id="j2", customer_id="ann", occurred_at=at(-800), conversation_id="c-ann"),
        event(event_id="j3", customer_id="ann", occurred_at=at(-700), conversation_id="c-ann", **agent),
        event(event_id="j4", customer_id="ann", occurred_at=at(-600), channel="email",
              conversation_id="m-ann"),
        event(event_id="j5", customer_id="ann", occurred_at=at(-500), kind="purchase", direction="none",
              channel="web", conversation_id=None),
        event(event_id="j6", customer_id="ann", occurred_at=at(-400), kind="survey_response",
              conversation_id="c-ann", survey={"type": "nps", "score": 9}),
        event(event_id="j7", customer_id="bob", occurred_at=at(-60), conversation_id="c-bob"),
    )  # fmt: skip
    with browser_page(1366, 1000) as (page, errors):
        page.goto(stack.dashboard)
        page.wait_for_function("Number(document.body.dataset.updates || 0) >= 1", timeout=30_000)

        # A customer id in a table is a link to the customer's page.
        page.wait_for_selector("#waiting a.customer-link", timeout=30_000)
        page.locator("#waiting a.customer-link", has_text="bob").click()
        page.wait_for_url("**/customers/bob")
        page.wait_for_function("Number(document.body.dataset.updates || 0) >= 1", timeout=30_000)
        assert "waiting" in page.locator("#timeline").inner_text()

        # The search box opens another.
        page.fill("#search-input", "ann")
        page.press("#search-input", "Enter")
        page.wait_for_url("**/customers/ann")
        page.wait_for_function("Number(document.body.dataset.updates || 0) >= 1", timeout=30_000)
        lanes = page.locator("#timeline .vis-label").all_inner_texts()
        assert {"chat", "email", "web", "levels & surveys"} <= {lane.strip() for lane in lanes}, lanes
        profile = page.locator("#profile").inner_text()
        assert "preferred channel" in profile and "purchases\t1" in profile, profile
        assert page.locator("#timeline .vis-item.reply").count() >= 1
        assert "reply 1m 40s" in page.locator("#timeline").inner_text(), "the reply, with its response time"
        assert "NPS 9" in page.locator("#timeline").inner_text()
        journeys = page.locator("#journeys tbody").inner_text()
        assert "web > chat > email > web > chat" in journeys and "purchase" in journeys, journeys
        page.evaluate("window.__sameDocument = true")

        # A new touchpoint on another channel shows up, lane and row, without a reload.
        posted = post(stack.collector, stack.key, event(
            event_id="j8", customer_id="ann", occurred_at=datetime.now(UTC).isoformat(), channel="social",
            conversation_id="s-ann"))  # fmt: skip
        page.wait_for_selector("#events tbody tr:has-text('social')", timeout=10_000)
        seen = round((time.monotonic() - posted) * 1000)
        assert "social" in {lane.strip() for lane in page.locator("#timeline .vis-label").all_inner_texts()}
        assert page.evaluate("window.__sameDocument === true"), "updated without a reload"
        with page.expect_download() as download:
            page.locator('a[data-csv="events"]').click()
        touchpoints_csv = open(download.value.path(), encoding="utf-8").read()  # noqa: SIM115
        assert touchpoints_csv.count("\n") == 1 + page.locator("#events tbody tr").count()
        assert "social" in touchpoints_csv
        assert_fits(page)
        assert not errors, errors
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "customer.png"), full_page=True)
        print("customer page: a posted event on the page after", seen, "ms")
