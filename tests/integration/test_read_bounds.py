"""Reads do not hold back ingestion: in embedded mode chDB runs one query at a time, so
every read is bounded in time (a clear error past it) and the sink's writes go first."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from tests.factories import event
from tests.integration.conftest import StartWorker
from tests.integration.test_metrics_pipeline import send
from touchstream.broker import EmbeddedBroker
from touchstream.dashboard import experience, panels, web
from touchstream.schemas.errors import TouchstreamError
from touchstream.schemas.touchpoint import TouchpointEvent
from touchstream.sinks.clickhouse import ClickHouse
from touchstream.streams.metrics import MetricsConfig

#: An analyst's query that would run for minutes.
LONG = "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) = 0"
BOUND = 1.0


def now_event(event_id: str, customer_id: str) -> TouchpointEvent:
    now = datetime.now(UTC).isoformat()
    return event(event_id=event_id, customer_id=customer_id, occurred_at=now, received_at=now)


def test_a_long_analyst_query_is_stopped_and_does_not_hold_back_an_event(
    broker: EmbeddedBroker, pipeline_env: dict[str, str], start_worker: StartWorker
) -> None:
    worker = start_worker(TOUCHSTREAM_READ_SECONDS=str(BOUND))
    send(pipeline_env, broker, [now_event("warm-up", "c-0")])
    deadline = time.monotonic() + 60
    while worker.scalar("SELECT count() FROM touchpoints") < 1:
        assert time.monotonic() < deadline, "the first event was never written"
        time.sleep(0.2)

    errors: list[str] = []
    stop = threading.Event()

    def analyst() -> None:
        while not stop.is_set():
            try:
                worker.sql(LONG)
            except TouchstreamError as error:
                errors.append(str(error))

    readers = [threading.Thread(target=analyst) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        time.sleep(BOUND / 2)  # a long query is running
        sent = datetime.now(UTC)
        send(pipeline_env, broker, [now_event("during", "c-1")])
        while not worker.sql("SELECT ingested_at FROM touchpoints WHERE event_id = 'during'"):
            assert time.monotonic() < deadline, "the event was never written"
            time.sleep(0.1)
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=30)
    [[ingested]] = worker.sql(
        "SELECT toUnixTimestamp64Milli(ingested_at) FROM touchpoints WHERE event_id = 'during'"
    )
    waited = int(ingested) / 1000 - sent.timestamp()
    # Unbounded, the event would wait for the analysts' queries (minutes); bounded, for one
    # read at most, plus a batch.
    assert waited < BOUND + 3, f"the event waited {waited:.1f} s for the readers"
    assert errors, "the long query was stopped"
    assert all("time bound of 1 s (TOUCHSTREAM_READ_SECONDS" in error for error in errors), errors[:1]
    assert worker.sql("SELECT customer_id FROM waiting FINAL WHERE customer_id = 'c-1'") == [["c-1"]]


def test_an_experience_panel_past_its_bound_is_left_empty_with_the_reason(
    clickhouse: ClickHouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One panel's read stopped by real chDB at its time bound: the experience view still
    answers, that panel empty and the reason in `errors`; the others are read."""
    monkeypatch.setattr(experience, "ATTRIBUTION", LONG)
    clickhouse.read_seconds = 0.5
    panels = experience.experience(web.read_only(clickhouse))
    assert panels["attribution"]["rows"] == []
    assert len(panels["errors"]) == 1
    assert "TOUCHSTREAM_READ_SECONDS" in panels["errors"][0]
    assert "churn_chart" in panels and "tickets" in panels


def test_an_ops_panel_past_its_bound_is_left_empty_with_the_reason(
    clickhouse: ClickHouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(panels, "LEVELS", LONG)
    clickhouse.read_seconds = 0.5
    view = panels.snapshot(web.read_only(clickhouse), MetricsConfig(), lambda channel: None)
    assert len(view["errors"]) == 1 and "TOUCHSTREAM_READ_SECONDS" in view["errors"][0]
    assert view["levels"]["rows"] and all(row["customers"] == 0 for row in view["levels"]["rows"])
    assert "waiting" in view and "top" in view
