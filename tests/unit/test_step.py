"""The batch step's order: nothing is acknowledged before every destination has the batch,
and a failure in any phase acknowledges nothing (no Faust, Kafka or ClickHouse here)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest

from tests.factories import BASE_TIME, event_data
from touchstream.schemas.topics import Source
from touchstream.schemas.touchpoint import TouchpointEvent
from touchstream.streams.ingest import DeadLetter, RawRecord
from touchstream.streams.metrics import MetricsConfig, Outputs
from touchstream.streams.metrics.records import Erasure
from touchstream.streams.partitions import PartitionEngines
from touchstream.streams.step import PHASES, BatchStep


class Stats:
    events_in = events_written = dead_letters = late_events = restated_events = duplicates = suppressed = 0
    batches = 0
    first_batch_at: float | None = None
    last_flush_at: float | None = None

    def timed(self, step: str, began: float) -> float:
        return began


class Recorder:
    """Destinations that log each call, and fail in one chosen phase."""

    def __init__(self, failing: str | None = None) -> None:
        self.calls: list[str] = []
        self.failing = failing
        self.metric_outputs: list[Outputs] = []
        self.marked: list[set[str]] = []
        #: What `stored_events` answers: the events "in ClickHouse".
        self.stored: list[TouchpointEvent] = []
        self.restated: list[tuple[Outputs, set[str]]] = []
        self.restating = False

    def _call(self, phase: str) -> None:
        self.calls.append(phase)
        if phase == self.failing:
            raise RuntimeError(f"{phase} failed")

    async def dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        self._call("dead letters")

    async def touchpoints(
        self, rows: list[tuple[Any, ...]], sources: list[Source], erased: list[Erasure]
    ) -> None:
        self._call("touchpoints")

    async def metric_rows(self, outputs: Outputs) -> None:
        self.metric_outputs.append(outputs)
        self._call("metric rows")

    async def analytics(self, customers: set[str]) -> None:
        self.marked.append(customers)
        self._call("analytics")

    async def state_records(self, records: list[tuple[bytes, bytes | None]]) -> None:
        self._call("state records")

    async def unread_topics(
        self, partitions: set[int], read: Mapping[tuple[str, int], int]
    ) -> dict[int, set[str]]:
        return {}

    async def stored_events(self, customers: set[str]) -> dict[str, list[TouchpointEvent]]:
        return {customer: [e for e in self.stored if e.customer_id == customer] for customer in customers}

    async def restated_rows(self, outputs: Outputs, customers: set[str]) -> None:
        self.restated.append((outputs, customers))
        self._call("restatement")


class Engines(PartitionEngines):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__(MetricsConfig(grace=timedelta(minutes=10)), None, partitions=1)
        self.recorder = recorder
        self.forgotten = 0

    def process(self, events: Any, lagging: Mapping[int, set[str]], *, live: bool = True) -> Outputs:
        self.recorder._call("engines")
        return super().process(events, lagging, live=live)

    def forget(self) -> None:
        self.forgotten += 1
        super().forget()


def records() -> list[RawRecord]:
    good = json.dumps(event_data(event_id="q1")).encode()
    return [
        RawRecord(b"cust-1", good, Source("touchpoints.chat", 0, 0)),
        RawRecord(b"cust-1", b"{not json", Source("touchpoints.chat", 0, 1)),
    ]


def run_step(recorder: Recorder, *, behind: bool = False) -> tuple[BatchStep, Engines]:
    engines = Engines(recorder)
    step = BatchStep(engines=engines, writers=recorder, stats=Stats(),
                     expected_channel={"touchpoints.chat": "chat"}, behind=lambda: behind)  # fmt: skip
    asyncio.run(step.run(records(), acknowledge=lambda: recorder.calls.append("acknowledge")))
    return step, engines


def test_the_phases_run_in_order_and_acknowledge_last() -> None:
    recorder = Recorder()
    _, engines = run_step(recorder)
    assert recorder.calls == [
        "dead letters",
        "engines",
        "touchpoints",
        "metric rows",
        "analytics",
        "state records",
        "acknowledge",
    ]
    assert recorder.calls == [phase for phase in PHASES if phase not in ("decode", "restatement")]
    assert recorder.marked == [{"cust-1"}], "the batch's customer"
    assert engines.forgotten == 0
    assert [row.conversation_id for row in recorder.metric_outputs[0].live.waiting] == ["conv-1"], (
        "live at once"
    )


def test_a_step_behind_its_input_defers_live_rows_to_the_next_that_keeps_up() -> None:
    recorder = Recorder()
    step, _ = run_step(recorder, behind=True)
    assert recorder.metric_outputs[0].live.waiting == [], "a backlog's step writes final rows only"
    step.behind = lambda: False
    asyncio.run(step.run([], acknowledge=lambda: None))  # no records: the partition steps all the same
    assert [row.conversation_id for row in recorder.metric_outputs[1].live.waiting] == ["conv-1"]


@pytest.mark.parametrize(
    "phase", ["dead letters", "engines", "touchpoints", "metric rows", "analytics", "state records"]
)
def test_a_failure_in_any_phase_acknowledges_nothing(phase: str) -> None:
    recorder = Recorder(failing=phase)
    with pytest.raises(RuntimeError, match=phase):
        run_step(recorder)
    assert "acknowledge" not in recorder.calls
    assert recorder.calls[-1] == phase, "no later phase ran"


def test_a_failed_step_drops_the_engines_memory() -> None:
    recorder = Recorder(failing="metric rows")
    engines = Engines(recorder)
    step = BatchStep(engines=engines, writers=recorder, stats=Stats(),
                     expected_channel={"touchpoints.chat": "chat"})  # fmt: skip
    with pytest.raises(RuntimeError):
        asyncio.run(step.run(records(), acknowledge=lambda: None))
    assert engines.forgotten == 1 and engines.engines == {}, "rebuilt from the changelog on next use"


def test_idle_partitions_settle_their_rows() -> None:
    recorder = Recorder()
    step, _ = run_step(recorder)
    recorder.calls.clear()
    assert asyncio.run(step.idle({0}, idle_seconds=0.0))
    assert recorder.calls == ["metric rows", "analytics", "state records"]
    settled = recorder.metric_outputs[-1]
    assert [row.conversation_id for row in settled.final.waiting] == ["conv-1"]
    assert not asyncio.run(step.idle({0}, idle_seconds=0.0)), "nothing left to settle"
    assert not asyncio.run(step.idle({0}, idle_seconds=3600.0)), "not quiet for long enough"


def test_late_events_restate_their_customers_after_the_metric_rows() -> None:
    """A reply that arrives after the horizon passed it: with restatement on, its customer is
    recomputed from all their stored events (the late reply among them) before the
    customers are marked, and the late row says so."""
    recorder = Recorder()
    recorder.restating = True
    engines = Engines(recorder)
    step = BatchStep(engines=engines, writers=recorder, stats=Stats(),
                     expected_channel={"touchpoints.chat": "chat"})  # fmt: skip
    message = event_data(event_id="m1", conversation_id="c1")
    later = event_data(
        event_id="x1", customer_id="cust-2", occurred_at=(BASE_TIME + timedelta(hours=2)).isoformat()
    )
    five_minutes = (BASE_TIME + timedelta(minutes=5)).isoformat()
    reply = event_data(event_id="r1", conversation_id="c1", direction="outbound", actor="agent",
                       agent_id="kim", occurred_at=five_minutes)  # fmt: skip
    batches = [[message, later], [reply]]
    for number, batch in enumerate(batches):
        recorder.stored += [TouchpointEvent.model_validate(data) for data in batch]
        raw = [RawRecord(data["customer_id"].encode(), json.dumps(data).encode(),
                         Source("touchpoints.chat", 0, 10 * number + n))
               for n, data in enumerate(batch)]  # fmt: skip
        recorder.calls.clear()
        asyncio.run(step.run(raw, acknowledge=lambda: recorder.calls.append("acknowledge")))
    assert recorder.calls == [phase for phase in PHASES if phase not in ("decode", "dead letters")]
    late = recorder.metric_outputs[-1].late
    assert [(row.event_id, row.restated_at is not None) for row in late] == [("r1", True)]
    ((restated, customers),) = recorder.restated
    assert customers == {"cust-1"}
    assert restated.version > recorder.metric_outputs[-1].version
    assert [(row.reply_event_id, row.response_seconds) for row in restated.final.responses] == [("r1", 300.0)]
