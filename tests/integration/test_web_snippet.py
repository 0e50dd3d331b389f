"""The website snippet in a real browser (Debian's chromium driven by Playwright).

A page on one origin includes /v1/touchstream.js from the collector on another, as a
customer's website would; page views and clicks must arrive in Kafka, including the
click that navigates away (sent with keepalive as the page is hidden).
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.conftest import WEB_KEY, Collector, published
from touchstream.broker import EmbeddedBroker

CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                "--disable-extensions", "--no-first-run"]  # fmt: skip


@pytest.fixture
def website(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """A static site on its own loopback origin; returns a function that publishes a page."""
    root = tmp_path / "site"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def page(name: str, html: str = "") -> str:
        (root / name).write_text(html)
        return f"http://127.0.0.1:{server.server_address[1]}/{name}"

    yield page
    server.shutdown()
    server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_page_views_and_clicks_reach_kafka_from_a_real_browser(
    broker: EmbeddedBroker,
    collector_env: dict[str, str],
    start_collector: Callable[..., Collector],
    website: Callable[..., str],
    tmp_path: Path,
) -> None:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"this test needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    collector = start_collector()
    snippet = f'<script src="{collector.url}/v1/touchstream.js" data-key="{WEB_KEY}"></script>'
    next_url = website("next.html", f"<title>Next</title>{snippet}<p>thanks</p>")
    home_url = website("index.html", f"""<!doctype html><title>Shop</title>{snippet}
        <button data-touchstream-click="add-to-cart">Add</button>
        <a id="checkout" href="{next_url}?token=private">Checkout</a>""")  # fmt: skip

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            failures: list[str] = []
            page.on(
                "console",
                lambda message: failures.append(message.text) if message.type == "warning" else None,
            )
            page.goto(home_url)
            page.wait_for_function("window.touchstream && window.touchstream.version === '1'")
            page.click("button")
            with page.expect_navigation():
                page.click("#checkout")
            page.wait_for_function("window.touchstream !== undefined")
            page.evaluate("window.touchstream.flush()")
            page.screenshot(path=str(tmp_path / "snippet-next-page.png"))
        finally:
            browser.close()

    records = published(broker, collector_env, expected=4, timeout=20)
    kinds = sorted((record["kind"], record["attributes"].get("label", record["attributes"].get("path")))
                   for record in records)  # fmt: skip
    assert kinds == [("click", "add-to-cart"), ("click", "checkout"), ("page_view", "/index.html"),
                     ("page_view", "/next.html")]  # fmt: skip
    assert {record["channel"] for record in records} == {"web"}
    assert len({record["customer_id"] for record in records}) == 1, "one anonymous visitor across pages"
    assert all(record["customer_id"].startswith("anon-") for record in records)
    checkout = next(record for record in records if record["attributes"].get("label") == "checkout")
    assert checkout["attributes"]["target"] == "/next.html", "link targets carry no query string"
    assert "private" not in json.dumps(records)
    assert failures == [], failures
