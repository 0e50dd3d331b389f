"""The metric tables written by the real worker equal the brute-force definition over the
same events (minus those the worker reported late): the live view at each partition's
newest event time, and once the partitions are idle, everything final; also after a
SIGKILL and restart, and with two workers."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from tests.factories import BASE_TIME
from tests.integration.conftest import PARTITIONS, SMALL_BATCHES, StartWorker, unconsumed
from touchstream.broker import EmbeddedBroker
from touchstream.process import WorkerProcess, wait_until
from touchstream.producers.publisher import Publisher
from touchstream.producers.simulator import Simulator, SimulatorConfig
from touchstream.schemas.partitioning import partition_of
from touchstream.schemas.touchpoint import TouchpointEvent
from touchstream.sinks.ddl import TABLES
from touchstream.streams.metrics import MetricsConfig
from touchstream.streams.metrics.reference import Tables, recompute

GRACE = timedelta(minutes=10)
Snapshot = dict[str, set[tuple[str, ...]]]


def simulated(count: int, seed: int) -> list[TouchpointEvent]:
    config = SimulatorConfig(seed=seed, customers=300, sessions_per_second=0.05)
    return list(Simulator(config, BASE_TIME).events(count))


def send(env: dict[str, str], broker: EmbeddedBroker, events: list[TouchpointEvent]) -> None:
    """Publish time-ordered `events` as live traffic arrives: a run of less than half the grace
    period of event time at a time, each acknowledged before the next. (All at once, the
    broker may show a worker one topic's records minutes of event time ahead of another's
    still being appended, and the horizon would pass those: late, as the SPEC says.)"""
    with Publisher(broker.bootstrap, prefix=env["TOUCHSTREAM_TOPIC_PREFIX"]) as publisher:
        start = 0
        for end in range(1, len(events) + 1):
            if end == len(events) or events[end].occurred_at - events[start].occurred_at >= GRACE / 2:
                assert publisher.publish(events[start:end]).ok
                start = end


def publish(env: dict[str, str], broker: EmbeddedBroker, count: int, seed: int) -> list[TouchpointEvent]:
    events = simulated(count, seed)
    send(env, broker, events)
    return events


def stream_tables(worker: WorkerProcess) -> Snapshot:
    queries = {
        "responses": "SELECT reply_event_id, customer_id, toString(toInt64(round(response_seconds * 1000))), "
        "toString(is_first_response) FROM responses FINAL",
        "engagement": "SELECT customer_id, level, toString(interactions_30d) FROM engagement FINAL",
        "waiting": "SELECT customer_id, conversation_id, toString(answered) FROM waiting FINAL",
        "changes": "SELECT customer_id, previous_level, level FROM engagement_changes FINAL",
        "surveys": "SELECT event_id, toString(score) FROM surveys FINAL",
    }
    return {name: {tuple(row) for row in worker.sql(query)} for name, query in queries.items()}


def reference_tables(events: list[TouchpointEvent], late: set[str], *, settled: bool = False) -> Snapshot:
    """The live view: each partition's events evaluated at its newest event time; or,
    `settled`, what the idle rule makes final: everything up to just after it."""
    config = MetricsConfig(grace=GRACE)
    kept = [event for event in events if event.event_id not in late]
    merged = Tables()
    for partition in range(PARTITIONS):
        mine = [e for e in kept if partition_of(e.customer_id.encode(), PARTITIONS) == partition]
        if mine:
            newest = max(e.occurred_at for e in mine)
            if settled:
                tables = recompute(mine, config, newest + timedelta(microseconds=1))
            else:
                tables = recompute(mine, config, None, newest)
            merged.responses |= tables.responses
            merged.engagement |= tables.engagement
            merged.waiting |= tables.waiting
            merged.changes += tables.changes
            merged.surveys |= tables.surveys
    return {
        "responses": {(r.reply_event_id, r.customer_id, str(round(r.response_seconds * 1000)),
                       str(r.is_first_response).lower()) for r in merged.responses.values()},
        "engagement": {(r.customer_id, r.level, str(r.interactions_30d)) for r in merged.engagement.values()},
        "waiting": {(r.customer_id, r.conversation_id, str(r.answered).lower())
                    for r in merged.waiting.values()},
        "changes": {(c.customer_id, c.previous_level, c.level) for c in merged.changes},
        "surveys": {(r.event_id, str(r.score)) for r in merged.surveys.values()},
    }  # fmt: skip


def provisional(worker: WorkerProcess) -> int:
    tables = ("responses", "engagement", "waiting", "engagement_changes", "surveys")
    return sum(worker.scalar(f"SELECT count() FROM {table} FINAL WHERE NOT final") for table in tables)


def check(worker: WorkerProcess, events: list[TouchpointEvent], *, settled: bool = False) -> None:
    wait_until(lambda: worker.scalar("SELECT count() FROM touchpoints FINAL") >= len(events), timeout=180,
               what="all touchpoints")  # fmt: skip
    # Late events are restated (counted) unless restatement is off: those not restated are left out.
    late = {row[0] for row in worker.sql("SELECT event_id FROM late_events FINAL WHERE restated_at IS NULL")}
    assert len(late) < len(events) // 20, f"{len(late)} of {len(events)} events were late"
    expected = reference_tables(events, late, settled=settled)
    assert all(expected.values()), ({name: len(rows) for name, rows in expected.items()}, len(late))
    try:
        wait_until(lambda: stream_tables(worker) == expected, timeout=30, what="metric tables to match")
    except AssertionError:
        actual = stream_tables(worker)
        for name in expected:
            assert actual[name] == expected[name], name
        raise


def verify(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "touchstream.cli", "verify"]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )


def test_worker_metrics_equal_the_definition(
    broker: EmbeddedBroker, pipeline_env: dict[str, str], start_worker: StartWorker
) -> None:
    events = publish(pipeline_env, broker, 4000, seed=31)
    worker = start_worker(TOUCHSTREAM_METRICS_IDLE_SECONDS="3")
    check(worker, events)
    assert provisional(worker) > 0, "the last grace period of each partition is live, not final yet"
    # The replay is over: the idle rule makes every partition's rows final.
    wait_until(lambda: provisional(worker) == 0, timeout=60, what="the idle rule")
    check(worker, events, settled=True)
    # Opening hours (OFFICE_HOURS, for this worker and verify) give business seconds.
    business = worker.sql(
        "SELECT count(), countIf(response_business_seconds < response_seconds), "
        "countIf(response_business_seconds > response_seconds) FROM responses FINAL"
    )[0]
    assert int(business[1]) > 0 and business[2] == "0", business

    verified = verify(pipeline_env)  # through the running worker, which owns chDB
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.count(" ok") == 25 and "MISMATCH" not in verified.stdout  # 24 diffs and the totals
    # Each partition was recomputed up to the horizon the stream recorded, whatever the grace.
    horizons = worker.sql("SELECT partition, max(horizon) FROM stream_horizons GROUP BY partition")
    assert len(horizons) == PARTITIONS
    assert verify({**pipeline_env, "TOUCHSTREAM_METRICS_GRACE_SECONDS": "0"}).returncode == 0
    # A row the stream lost, or one it should not have written, and verify says so.
    worker.sql("DELETE FROM waiting WHERE conversation_id = (SELECT min(conversation_id) FROM waiting)")
    worker.sql(
        "INSERT INTO engagement_changes (customer_id, previous_level, level, score, changed_at) "
        "VALUES ('cust-nobody', 'low', 'medium', 5, '2026-03-02 09:00:00')"
    )
    wrong = verify(pipeline_env)
    assert wrong.returncode == 1, wrong.stdout
    assert "waiting              live     expected" in wrong.stdout and "missing:" in wrong.stdout
    assert 'unexpected: ["cust-nobody", "low", "medium"]' in wrong.stdout
    assert worker.stop() == 0


def test_a_backfill_after_live_traffic_counts_as_if_it_had_arrived_in_order(
    broker: EmbeddedBroker, pipeline_env: dict[str, str], start_worker: StartWorker
) -> None:
    """The usual onboarding: live traffic first, then last month's history imported. The
    history's events are late (far behind the horizon): their customers are restated from
    every stored event, and the tables equal the definitions over all of them. (Restated
    rows come from the stored events, whose times are kept to the millisecond: so are
    these.)"""
    events = [
        e.model_copy(
            update={
                "occurred_at": e.occurred_at.replace(microsecond=e.occurred_at.microsecond // 1000 * 1000)
            }
        )
        for e in simulated(4000, seed=36)
    ]
    history, live = events[:2500], events[2500:]
    send(pipeline_env, broker, live)
    worker = start_worker(TOUCHSTREAM_METRICS_IDLE_SECONDS="3")
    check(worker, live)
    wait_until(lambda: provisional(worker) == 0, timeout=60, what="the live traffic settled")
    with Publisher(broker.bootstrap, prefix=pipeline_env["TOUCHSTREAM_TOPIC_PREFIX"]) as publisher:
        assert publisher.publish(history).ok  # as `touchstream replay` sends a file: all at once
    wait_until(lambda: worker.scalar("SELECT count() FROM touchpoints FINAL") >= len(events), timeout=120,
               what="the history stored")  # fmt: skip

    def restated() -> int:
        return worker.scalar("SELECT count() FROM late_events FINAL WHERE restated_at IS NOT NULL")

    # A step writes its late rows, then restates: the worker counts them once it is done.
    wait_until(lambda: 0 < restated() == worker.status()["restated_events"], timeout=60, what="restatements")
    assert restated() > len(history) // 2, "most of the history was behind the horizon"
    check(worker, events)
    wait_until(lambda: provisional(worker) == 0, timeout=60, what="the idle rule")
    check(worker, events, settled=True)
    verified = verify(pipeline_env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert worker.stop() == 0


def test_worker_killed_and_restarted_recovers_its_state(
    broker: EmbeddedBroker, pipeline_env: dict[str, str], start_worker: StartWorker
) -> None:
    events = publish(pipeline_env, broker, 12_000, seed=32)
    first = start_worker(**SMALL_BATCHES)
    written: list[int] = []

    def progressed() -> bool:
        written.append(first.status()["events_written"])
        return written[-1] > 3000

    wait_until(progressed, timeout=90, what="progress", every=0.02)
    first.kill()
    assert written[-1] < len(events) - 3000, "killed well before the end"
    second = start_worker()  # (which may catch up at once: its batches are not small)
    check(second, events)
    assert second.stop() == 0
    # Every record was processed and committed: none was dropped between fetch and the
    # stream (see streams/flowcontrol.py), which would leave the committed offset behind.
    assert unconsumed(pipeline_env) == {}
    verified = verify(pipeline_env)  # after the stop: verify opens chDB itself
    assert verified.returncode == 0, verified.stdout + verified.stderr


def merge(env: dict[str, str], *, into: WorkerProcess) -> None:
    """Copy every event and stream table of the stopped worker with `env` into the running
    worker `into`, and have the maintained tables (SPEC §5b) computed anew from the merged
    events when the data dir is next opened: each worker's are computed from the events in
    its own store (with a server, from all of them)."""
    for table in [name for name in TABLES if name != "maintained_definitions"]:
        query = f"SELECT * FROM {table}"
        command = [sys.executable, "-m", "touchstream.cli", "sql", "--format", "JSONEachRow", query]
        rows = subprocess.run(
            command, env=env, capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL
        )
        lines = rows.stdout.splitlines()
        structure = ", ".join(f"`{name}` {kind}" for name, kind, *_ in into.sql(f"DESCRIBE TABLE {table}"))
        # Chunks within ClickHouse's max_query_size (256 KiB) and the control endpoint's 1 MiB.
        chunks: list[list[str]] = []
        size = 200_000
        for line in lines:
            if size + len(line) > 200_000:
                chunks.append([])
                size = 0
            chunks[-1].append(line)
            size += len(line) + 1
        for part in chunks:
            chunk = "\n".join(part).replace("\\", "\\\\").replace("'", "\\'")
            into.sql(f"INSERT INTO {table} SELECT * FROM format(JSONEachRow, '{structure}', '{chunk}')")
    into.sql("TRUNCATE TABLE maintained_definitions")


EVENT_IDS = "SELECT event_id FROM touchpoints"
RESPONSES = "SELECT count() FROM responses"


def test_two_workers_sharing_the_partitions_give_one_workers_results(
    broker: EmbeddedBroker, pipeline_env: dict[str, str], tmp_path: Path
) -> None:
    """A second worker joins mid-stream and takes over half the partitions with their state.

    Each embedded worker owns its own chDB, so the test merges the second one's rows into
    the first's before comparing; with a ClickHouse server both write to one database."""
    events = simulated(12_000, seed=33)
    send(pipeline_env, broker, events[:6000])
    workers = []
    for name in ("a", "b"):
        env = {
            **pipeline_env,
            "TOUCHSTREAM_DATA_DIR": str(tmp_path / name),
            "TOUCHSTREAM_WORKER_INSTANCE": name,
        }
        workers.append(WorkerProcess(env, tmp_path / name, tmp_path / f"worker-{name}.log"))
    first, second = workers

    def processed() -> int:
        return len({row[0] for worker in workers if worker.process for row in worker.sql(EVENT_IDS)})

    try:
        first.start()
        wait_until(lambda: processed() >= 6000, timeout=90, what="the first half")
        second.start()  # takes over partitions with the state the first worker left
        send(pipeline_env, broker, events[6000:])
        wait_until(lambda: processed() >= len(events), timeout=180, what="all touchpoints")
        wait_until(lambda: second.scalar(RESPONSES) > 0, timeout=60, what="the second worker's responses")
        # Rows are written before their offsets are committed; a worker stopped in between
        # leaves the rest to the next owner of its partitions, and on noida a statically
        # joined member's partitions are not handed on: stop once everything is committed.
        wait_until(lambda: unconsumed(pipeline_env) == {}, timeout=60, what="every offset committed")
        assert second.stop() == 0
        merge(second.env, into=first)
        check(first, events)
        assert first.stop() == 0
    finally:
        for worker in workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.stop()
    assert unconsumed(pipeline_env) == {}
    verified = verify({**pipeline_env, "TOUCHSTREAM_DATA_DIR": str(tmp_path / "a")})
    assert verified.returncode == 0, verified.stdout + verified.stderr
