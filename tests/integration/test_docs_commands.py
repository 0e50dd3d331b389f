"""The README's commands and every query of docs/clickhouse.md, run as written against a
running `touchstream up --demo` (30 days of the demo business's history, computed): each
succeeds and returns rows, except those that say why they can be empty on the demo."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sinks.maintained import PENDING
from touchstream.process import wait_until

ROOT = Path(__file__).parents[2]
#: Documented queries that may rightly find nothing on the demo, by a phrase of theirs.
MAY_BE_EMPTY = {
    "FROM late_events": "the demo sends nothing late",
    "WHERE recurring": "a recurring incident needs four weeks of tickets before it (30 days here)",
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
               TOUCHSTREAM_DEMO_HISTORY_DAYS="30")  # fmt: skip
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
    empty = []
    for query in queries:
        for statement in [part for part in query.split(";") if part.strip()]:
            if not sql(demo, statement) and not any(phrase in statement for phrase in MAY_BE_EMPTY):
                empty.append(statement)
    assert not empty, "documented queries with no rows on the demo:\n\n" + "\n\n".join(empty)
