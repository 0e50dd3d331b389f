"""The screenshots in docs/ (`make screenshots`): the three pages of a fresh `make demo`
(its 90 days of history written and computed), 1440 px wide, in Debian's chromium driven
by Playwright; the customer page shows the customer with the most touchpoints."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).parent
WIDTH = 1440


def touchstream(env: dict[str, str], *args: str) -> str:
    command = [sys.executable, "-m", "touchstream.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout.strip()


def main() -> int:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="touchstream-screenshots-") as work:
        env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "CLICKHOUSE_URL")}
        env.update(TOUCHSTREAM_DATA_DIR=f"{work}/data", TOUCHSTREAM_WORKER_PORT="0",
                   TOUCHSTREAM_COLLECTOR_PORT="0", TOUCHSTREAM_DASHBOARD_PORT="0",
                   TOUCHSTREAM_CLICKHOUSE_HTTP_PORT="0")  # fmt: skip
        log = Path(work) / "up.log"
        with log.open("wb") as out:
            up = subprocess.Popen([sys.executable, "-m", "touchstream.cli", "up", "--demo"], env=env,
                                  stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.monotonic() + 600
            while "now live" not in log.read_text(errors="replace"):
                if up.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"up --demo did not write its history:\n{log.read_text()[-2000:]}")
                time.sleep(1)
            dashboard = re.findall(r"^dashboard\s+(\S+)", log.read_text(), flags=re.MULTILINE)[-1].rstrip("/")
            time.sleep(40)  # the maintained tables catch up, the pages' caches expire
            customer = touchstream(env, "sql", "SELECT customer_id FROM touchpoints GROUP BY customer_id "
                                   "ORDER BY count() DESC, customer_id LIMIT 1")  # fmt: skip
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                     args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
                page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
                for path, name in (("/", "dashboard"), ("/experience", "experience"),
                                   (f"/customers/{customer}", "customer")):  # fmt: skip
                    page.goto(dashboard + path)
                    page.wait_for_selector("body[data-updates]", timeout=120_000)
                    page.wait_for_timeout(1500)  # charts and the timeline draw
                    page.screenshot(path=str(DOCS / f"{name}.png"), full_page=True)
                    print(f"docs/{name}.png: {dashboard}{path}")
                browser.close()
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(timeout=60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
