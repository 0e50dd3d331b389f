"""The README's commands and every query of docs/clickhouse.md, run as written against a
running `touchstream up --demo` (30 days of the demo business's history, computed): each
succeeds and returns rows, except those that say why they can be empty on the demo. The
same queries through its ClickHouse HTTP endpoint with clickhouse-connect, the shipped
Grafana dashboard's queries, and a dbt model, as analysts' tools send them."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import clickhouse_connect
import pytest

from touchstream.process import wait_until
from touchstream.sinks.maintained import PENDING

ROOT = Path(__file__).parents[2]
DBT = ROOT / ".venv" / "dbt" / "bin" / "dbt"
#: Documented queries that may rightly find nothing on the demo, by a phrase of theirs.
MAY_BE_EMPTY = {
    "FROM late_events": "the demo sends nothing late",
    "WHERE recurring": "a recurring incident needs four weeks of tickets before it (30 days here)",
    "WHERE NOT consent": "the demo's customers opt out about three times a month, and some opt in again",
}


def documented_queries() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", (ROOT / "docs" / "clickhouse.md").read_text(), flags=re.DOTALL)


def readme_commands() -> list[list[str]]:
    """The README's `touchstream sql` commands, as argument lists."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    lines = [line for block in blocks for line in block.splitlines()]
    return [shlex.split(line)[2:] for line in lines if line.startswith(".venv/bin/touchstream sql ")]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    work = tmp_path_factory.mktemp("docs")
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "CLICKHOUSE_URL")}
    env.update(TOUCHSTREAM_DATA_DIR=str(work / "data"), TOUCHSTREAM_WORKER_PORT="0",
               TOUCHSTREAM_COLLECTOR_PORT="0", TOUCHSTREAM_DASHBOARD_PORT="0",
               TOUCHSTREAM_CLICKHOUSE_HTTP_PORT="0", TOUCHSTREAM_DEMO_HISTORY_DAYS="30")  # fmt: skip
    log = work / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen([sys.executable, "-m", "touchstream.cli", "up", "--demo"], env=env,
                              stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until(lambda: "now live" in log.read_text(errors="replace") or up.poll() is not None,
                   timeout=300, what="the demo's history")  # fmt: skip
        assert up.poll() is None, log.read_text()[-2000:]
        pending = PENDING.format(db="touchstream")
        wait_until(lambda: sql(env, pending) == "0", timeout=300, what="the maintained tables")
        yield env
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)


@dataclass(frozen=True)
class Endpoint:
    port: int
    user: str
    password: str


@pytest.fixture(scope="module")
def endpoint(demo: dict[str, str]) -> Endpoint:
    """The demo's ClickHouse HTTP endpoint, as `up` prints it, with the kept credentials."""
    data_dir = Path(demo["TOUCHSTREAM_DATA_DIR"])
    printed = re.search(
        r"^clickhouse  http://127\.0\.0\.1:(\d+)", (data_dir.parent / "up.log").read_text(), re.M
    )
    assert printed is not None, "up did not print the ClickHouse HTTP endpoint"
    user, _, password = (data_dir / "clickhouse.credentials").read_text().strip().partition(":")
    return Endpoint(int(printed[1]), user, password)


def statements() -> list[str]:
    return [part for query in documented_queries() for part in query.split(";") if part.strip()]


def sql(env: dict[str, str], *args: str) -> str:
    command = [sys.executable, "-m", "touchstream.cli", "sql", *args]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout.strip()


def test_the_readme_commands_return_rows(demo: dict[str, str]) -> None:
    commands = readme_commands()
    assert len(commands) >= 4
    for args in commands:
        assert sql(demo, *args), args


def test_every_documented_query_runs_on_the_demo_and_returns_rows(demo: dict[str, str]) -> None:
    queries = documented_queries()
    assert len(queries) >= 40
    empty = [
        statement
        for statement in statements()
        if not sql(demo, statement) and not any(phrase in statement for phrase in MAY_BE_EMPTY)
    ]
    assert not empty, "documented queries with no rows on the demo:\n\n" + "\n\n".join(empty)


def test_every_documented_query_answers_through_the_clickhouse_http_endpoint(endpoint: Endpoint) -> None:
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=endpoint.port, username=endpoint.user, password=endpoint.password
    )
    empty = [
        statement
        for statement in statements()
        if not client.query(statement).result_rows and not any(phrase in statement for phrase in MAY_BE_EMPTY)
    ]
    assert not empty, "documented queries with no rows over HTTP:\n\n" + "\n\n".join(empty)


def grafana_sql(raw: str, start: int, end: int, step: int) -> str:
    """A panel's SQL with the ClickHouse plugin's macros expanded as the plugin does."""
    expanded = re.sub(
        r"\$__timeFilter\((\w+)\)", rf"\1 >= toDateTime({start}) AND \1 <= toDateTime({end})", raw
    )
    return re.sub(
        r"\$__timeInterval\((\w+)\)", rf"toStartOfInterval(toDateTime(\1), INTERVAL {step} second)", expanded
    )


def test_the_grafana_dashboard_queries_run_through_the_endpoint(endpoint: Endpoint) -> None:
    """Grafana cannot run here (no Docker, no Grafana binary): its queries do, as the plugin
    sends them over HTTP, with the dashboard's own time range (the last 24 hours), and each
    panel finds rows over the last week (the range picker widened): the demo's business
    opens one to twenty tickets a day, fewest on a Sunday, so a ticket panel can rightly be
    empty over one day."""
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/touchstream-ops.json").read_text())
    assert dashboard["time"] == {"from": "now-24h", "to": "now"}
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=endpoint.port, username=endpoint.user, password=endpoint.password
    )
    end = int(time.time())
    panels = {panel["title"]: panel["targets"] for panel in dashboard["panels"]}
    assert len(panels) >= 6
    empty = []
    for title, targets in panels.items():
        for target in targets:
            assert target["datasource"] == {"type": "grafana-clickhouse-datasource", "uid": "touchstream"}
            day = grafana_sql(target["rawSql"], end - 86_400, end, 3600)
            assert "$__" not in day, f"{title}: a macro the test does not expand"
            client.query(day)
            if not client.query(grafana_sql(target["rawSql"], end - 7 * 86_400, end, 3600)).result_rows:
                empty.append(title)
    assert not empty, f"panels without rows over the demo's last week: {empty}"


def test_dbt_previews_a_model_through_the_endpoint(endpoint: Endpoint, tmp_path: Path) -> None:
    """dbt-clickhouse's connection checks and a model's SQL over HTTP. The endpoint is
    read-only, so the model is ephemeral and previewed (`dbt show`), not materialized."""
    if not DBT.exists():
        pytest.skip(f"{DBT} is made by `make test` (tests/fixtures/dbt/requirements.txt)")
    env = {
        **os.environ,
        "TOUCHSTREAM_CLICKHOUSE_PORT": str(endpoint.port),
        "TOUCHSTREAM_CLICKHOUSE_USER": endpoint.user,
        "TOUCHSTREAM_CLICKHOUSE_PASSWORD": endpoint.password,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    shown = subprocess.run(
        [str(DBT), "show", "--select", "weekly_first_response", "--output", "json", "--limit", "100",
         "--profiles-dir", ".", "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path)],
        cwd=ROOT / "tests/fixtures/dbt", env=env, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stdout[-3000:] + shown.stderr[-2000:]
    preview = json.loads(shown.stdout[shown.stdout.index("{") : shown.stdout.rindex("}") + 1])
    rows = preview["show"]
    assert rows and {"week", "channel", "first_responses", "median_first_response_seconds"} <= set(rows[0])
    assert {row["channel"] for row in rows} >= {"chat", "email"}
