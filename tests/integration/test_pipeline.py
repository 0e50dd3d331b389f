"""Events produced to real Kafka end up as exactly those rows in ClickHouse."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import cast

from tests.factories import BASE_TIME, event, event_data
from tests.integration.conftest import SMALL_BATCHES, StartWorker, dlq_topic, read_topic, unconsumed
from touchstream.broker import EmbeddedBroker
from touchstream.process import wait_until
from touchstream.producers.publisher import Delivery, Publisher
from touchstream.producers.simulator import Simulator, SimulatorConfig
from touchstream.schemas.topics import input_topic

COUNT_FINAL = "SELECT count() FROM touchpoints FINAL"


def publish_simulated(env: dict[str, str], broker: EmbeddedBroker, count: int, seed: int) -> set[str]:
    events = list(Simulator(SimulatorConfig(seed=seed), BASE_TIME).events(count))
    with Publisher(broker.bootstrap, prefix=env["TOUCHSTREAM_TOPIC_PREFIX"]) as publisher:
        delivery = publisher.publish(events)
    assert delivery.ok and delivery.delivered == count
    return {event.event_id for event in events}


def test_valid_events_become_rows_and_invalid_ones_dead_letters(
    broker: EmbeddedBroker, pipeline_env: dict[str, str], start_worker: StartWorker
) -> None:
    expected_ids = publish_simulated(pipeline_env, broker, 3000, seed=11)
    prefix = pipeline_env["TOUCHSTREAM_TOPIC_PREFIX"]
    bad = {
        b"{not json": "Invalid JSON",
        json.dumps(event_data(event_id="naive", occurred_at="2026-03-02T09:00:00")).encode(): "timezone",
        json.dumps(event_data(event_id="pigeon", channel="carrier_pigeon")).encode(): "channel",
        json.dumps(
            event_data(event_id="web-on-chat", channel="web", kind="page_view")
        ).encode(): "arrived on",
        # Dated in year 9999 by the source (and by its adapter): it would have moved the
        # partition's event time, and so its horizon, there for good.
        json.dumps(
            event_data(
                event_id="from-9999",
                occurred_at="9999-12-31T00:00:00+00:00",
                received_at="9999-12-31T00:00:00+00:00",
            )
        ).encode(): "after the wall clock",
        json.dumps(
            event_data(event_id="ahead", occurred_at="9999-12-31T00:00:00+00:00")
        ).encode(): "clock skew",
    }
    with Publisher(broker.bootstrap, prefix=prefix) as publisher:
        delivery = Delivery()
        for value in bad:
            publisher.send_raw(input_topic("chat", prefix), b"cust-x", value, delivery)
        publisher.wait(delivery, len(bad), 30)

    worker = start_worker()
    wait_until(lambda: worker.scalar(COUNT_FINAL) >= len(expected_ids), timeout=90, what="all rows")

    stored = {row[0] for row in worker.sql("SELECT event_id FROM touchpoints FINAL")}
    assert stored == expected_ids
    assert worker.scalar("SELECT count() FROM touchpoints WHERE occurred_at < '2026-01-01'") == 0
    by_channel = dict(worker.sql("SELECT channel, count() FROM touchpoints FINAL GROUP BY channel"))
    assert len(by_channel) == 10

    letters = read_topic(broker.bootstrap, dlq_topic(pipeline_env), expected=len(bad))
    assert len(letters) == len(bad)
    for letter in letters:
        pairs = cast(list[tuple[str, bytes]], letter.headers() or [])
        headers = {key: value.decode() for key, value in pairs}
        raw = letter.value()
        assert isinstance(raw, bytes) and raw in bad, "the dead letter keeps the raw bytes unchanged"
        assert bad[raw] in headers["touchstream.reason"]
        assert headers["touchstream.source.topic"] == input_topic("chat", prefix)
        assert int(headers["touchstream.source.offset"]) >= 0
    newest_year = worker.scalar("SELECT toYear(max(newest)) FROM stream_horizons FINAL")
    assert newest_year == BASE_TIME.year, "no dead letter moved event time"
    assert worker.stop() == 0


def test_worker_killed_mid_stream_loses_and_duplicates_nothing(
    broker: EmbeddedBroker, pipeline_env: dict[str, str], start_worker: StartWorker
) -> None:
    total = 30_000
    expected_ids = publish_simulated(pipeline_env, broker, total, seed=12)

    first = start_worker(**SMALL_BATCHES)
    wait_until(lambda: first.status()["events_written"] > 2000, timeout=90, what="progress", every=0.02)
    first.kill()  # SIGKILL: no flush, no commit, no goodbye to the group
    second = start_worker()
    assert second.scalar("SELECT count() FROM touchpoints FINAL") < total, "killed before the end"
    wait_until(lambda: second.scalar(COUNT_FINAL) >= total, timeout=180, what="all rows after restart")

    assert second.scalar(COUNT_FINAL) == total
    assert second.scalar("SELECT uniqExact(event_id) FROM touchpoints") == total
    stored = {row[0] for row in second.sql("SELECT event_id FROM touchpoints FINAL")}
    assert stored == expected_ids
    assert second.stop() == 0


def test_replay_publishes_valid_lines_and_dead_letters_the_rest(
    broker: EmbeddedBroker,
    pipeline_env: dict[str, str],
    start_worker: StartWorker,
    tmp_path: Path,
) -> None:
    events = list(Simulator(SimulatorConfig(seed=21), BASE_TIME).events(400))
    jsonl = tmp_path / "backfill.jsonl"
    lines = [event.model_dump_json() for event in events[:300]]
    # A backfill file may leave received_at out: replay stamps it (SPEC §2).
    lines[5] = json.dumps({k: v for k, v in json.loads(lines[5]).items() if k != "received_at"})
    lines.insert(10, '{"event_id": "broken", "channel": "web"}')
    lines.insert(50, json.dumps(event_data(event_id="late-naive", occurred_at="2026-03-02T10:00:00")))
    lines.insert(60, "")
    jsonl.write_text("\n".join(lines) + "\n")
    csv_file = tmp_path / "backfill.csv"
    with csv_file.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(event_data()))
        writer.writeheader()
        for event in events[300:]:
            row = event.model_dump(mode="json")
            for column in ("survey", "consent", "attributes"):
                row[column] = json.dumps(row[column]) if row[column] is not None else ""
            if event is events[300]:
                row["received_at"] = None  # stamped by replay
            writer.writerow({key: "" if value is None else value for key, value in row.items()})

    def replay(path: Path) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "touchstream.cli", "replay", str(path)]
        return subprocess.run(
            command, env=pipeline_env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )

    from_jsonl = replay(jsonl)
    assert from_jsonl.returncode == 1, "a backfill with rejected lines says so in its status"
    assert f"published 300 events, rejected 2 (to {dlq_topic(pipeline_env)}), ignored 1 blank lines" in (
        from_jsonl.stdout
    )
    assert "backfill.jsonl:11:" in from_jsonl.stderr and "backfill.jsonl:51:" in from_jsonl.stderr
    from_csv = replay(csv_file)
    assert from_csv.returncode == 0, from_csv.stderr
    assert "published 100 events, rejected 0, ignored 0 blank lines" in from_csv.stdout

    worker = start_worker()
    wait_until(lambda: worker.scalar(COUNT_FINAL) >= len(events), timeout=90, what="replayed rows")
    assert {row[0] for row in worker.sql("SELECT event_id FROM touchpoints FINAL")} == {
        event.event_id for event in events
    }
    letters = read_topic(broker.bootstrap, dlq_topic(pipeline_env), expected=2)
    sources = sorted(dict(cast(list[tuple[str, bytes]], letter.headers()))["touchstream.source.file"]
                     for letter in letters)  # fmt: skip
    assert sources == [f"{jsonl}:11".encode(), f"{jsonl}:51".encode()]
    assert worker.stop() == 0


def test_a_permanent_clickhouse_error_stops_the_worker_with_one_line(
    broker: EmbeddedBroker, pipeline_env: dict[str, str], start_worker: StartWorker, tmp_path: Path
) -> None:
    """A table the worker writes is gone (a real ClickHouse error, UNKNOWN_TABLE): retrying
    cannot fix it, so the worker stops at once, names the table and the error, and
    commits nothing."""
    worker = start_worker()
    worker.sql("RENAME TABLE waiting TO waiting_gone")
    with Publisher(broker.bootstrap, prefix=pipeline_env["TOUCHSTREAM_TOPIC_PREFIX"]) as publisher:
        assert publisher.publish([event(event_id="q1", conversation_id="c1")]).ok
    assert worker.process is not None
    worker.process.wait(timeout=60)
    assert worker.process.returncode == 1
    log = (tmp_path / "worker.log").read_text()
    last = log.strip().splitlines()[-1]
    assert last.startswith("touchstream: ClickHouse: insert into "), last
    assert ".waiting failed: code 60 UNKNOWN_TABLE: " in last, last
    assert "Traceback" not in log
    assert unconsumed(pipeline_env) != {}, "the failed batch was not committed"


def test_the_control_port_runs_sql_only_for_the_token_holder(
    pipeline_env: dict[str, str], start_worker: StartWorker, tmp_path: Path
) -> None:
    worker = start_worker()
    info = worker.control
    token_file = Path(pipeline_env["TOUCHSTREAM_DATA_DIR"]) / "control.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert info.token == token_file.read_text().strip() and info.token
    port = info.url.rsplit(":", 1)[1]
    body = json.dumps({"query": "SELECT 1", "format": "TSV"}).encode()

    def post(headers: dict[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(f"{info.url}/sql", data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    bearer = {"Authorization": f"Bearer {info.token}", "Content-Type": "application/json"}
    assert post({"Content-Type": "application/json"})[0] == 401
    assert post({**bearer, "Authorization": "Bearer wrong"})[0] == 401
    assert post({**bearer, "Content-Type": "text/plain"})[0] == 415, "what a web page can send unasked"
    assert post({**bearer, "Host": f"rebound.example:{port}"})[0] == 403, "DNS rebinding"
    assert post(bearer) == (200, "1\n")
    assert worker.sql("SELECT 2") == [["2"]], "the project's own client reads the token"
    outfile = tmp_path / "written-by-sql"
    for query in (
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        f"SELECT 1 INTO OUTFILE '{outfile}'",
        "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
    ):
        body = json.dumps({"query": query}).encode()
        status, text = post(bearer)
        assert status == 403 and "TOUCHSTREAM_WORKER_SQL_EXTERNAL" in text, (query, status, text)
    assert not outfile.exists()
    worker.stop()

    beyond = {
        **pipeline_env,
        "TOUCHSTREAM_WORKER_HOST": "0.0.0.0",
        "TOUCHSTREAM_DATA_DIR": str(tmp_path / "b"),
    }
    command = [sys.executable, "-m", "touchstream.cli", "worker"]
    refused = subprocess.run(
        command, env=beyond, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [
        "touchstream: the worker binds to 0.0.0.0, beyond loopback: set TOUCHSTREAM_WORKER_TOKEN to protect "
        "its control port"
    ]
