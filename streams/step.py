"""One batch of input records, written in order: the worker's commit protocol.

`BatchStep.run` takes the records of one fetch (or several) through named phases:

1. decode: records -> events and dead letters (`streams.ingest.split`);
2. dead letters: sent to the dead-letter topic, acknowledged by Kafka;
3. engines: the metric core steps each partition (in memory only); while the input holds
   more than a batch unread (`behind`), live views wait for the first step that keeps up;
4. touchpoints: the accepted events into ClickHouse (minus those an erasure covers);
5. metric rows: final and live rows, retractions, late events, horizons;
   restatement (SPEC §5 "Time"): the customers of the batch's late events recomputed
   from all their stored events (the late ones now among them), their rows written
   again and those no longer holding deleted (unless late events are only reported);
6. analytics: the customers the batch touched are marked due for the maintained tables
   (SPEC §5b), which the worker computes beside the batches;
7. state records: the customers' engine records into the local RocksDB (after the
   changelog has acknowledged them, on a Kafka of one's own);
8. acknowledge: only now may the input offsets be committed.

A failure in any phase raises before `acknowledge`, and the engines' memory, which ran
ahead of what was written, is dropped (`PartitionEngines.forget`), so the batch is read
again from the changelog and the input by whoever owns its partitions next. `idle`
applies the idle rule (SPEC §5) to quiet partitions through phases 3, 5, 6 and 7.

The writers are passed in (`Writers`), so the order is testable without Faust, Kafka
or ClickHouse (tests/unit/test_step.py). Quix Streams' `Checkpoint.commit` is the
model: one ordered commit per batch, offsets last.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from touchstream.schemas.topics import Source
from touchstream.schemas.touchpoint import MAX_CLOCK_SKEW, TouchpointEvent
from touchstream.streams.ingest import DeadLetter, RawRecord, split
from touchstream.streams.metrics import Outputs
from touchstream.streams.metrics.records import Erasure

PHASES = (
    "decode", "dead letters", "engines", "touchpoints", "metric rows", "restatement", "analytics",
    "state records", "acknowledge",
)  # fmt: skip


class Engines(Protocol):
    """The per-partition metric engines (`streams.partitions.PartitionEngines`)."""

    def process(
        self, events: Iterable[tuple[Any, int, str]], lagging: Mapping[int, set[str]], *, live: bool = True
    ) -> Outputs: ...

    def idle(self, partitions: Iterable[int], wall_clock: datetime) -> Outputs | None: ...

    def restate(self, stored: Mapping[str, list[TouchpointEvent]]) -> Outputs: ...

    def changed_records(self) -> list[tuple[bytes, bytes]]: ...

    def forget(self) -> None: ...


@dataclass(frozen=True)
class Writers:
    """Where a batch goes; each call returns once its destination has acknowledged it."""

    dead_letters: Callable[[Sequence[DeadLetter]], Awaitable[None]]
    #: (events to store with their sources, every source of the batch, the erasures whose
    #: earlier touchpoints go).
    touchpoints: Callable[
        [list[tuple[TouchpointEvent, Source]], list[Source], list[Erasure]], Awaitable[None]
    ]
    metric_rows: Callable[[Outputs], Awaitable[None]]
    #: The customers touched: mark them due for the maintained tables.
    analytics: Callable[[set[str]], Awaitable[None]]
    state_records: Callable[[list[tuple[bytes, bytes]]], Awaitable[None]]
    #: Per partition, the input topics with unread records (the horizon waits for them),
    #: given the last offset read per (topic, partition).
    unread_topics: Callable[[set[int], Mapping[tuple[str, int], int]], Awaitable[dict[int, set[str]]]]
    #: Restatement (None: late events are only reported): the stored events of customers,
    #: and the writer of a restatement's rows, which deletes the customers' rows it did not
    #: write again.
    stored_events: Callable[[set[str]], Awaitable[dict[str, list[TouchpointEvent]]]] | None = None
    restated_rows: Callable[[Outputs, set[str]], Awaitable[None]] | None = None


class Stats(Protocol):
    events_in: int
    events_written: int
    dead_letters: int
    late_events: int
    restated_events: int
    duplicates: int
    suppressed: int
    batches: int
    first_batch_at: float | None
    last_flush_at: float | None

    def timed(self, step: str, began: float) -> float: ...


class BatchStep:
    def __init__(
        self,
        *,
        engines: Engines,
        writers: Writers,
        stats: Stats,
        expected_channel: dict[str, str],
        max_skew: timedelta = MAX_CLOCK_SKEW,
        behind: Callable[[], bool] = lambda: False,
    ) -> None:
        self.engines = engines
        self.writers = writers
        self.stats = stats
        self.expected_channel = expected_channel
        #: Events dated further than this after the wall clock are dead letters.
        self.max_skew = max_skew
        #: Whether the input still holds a backlog once `unread_topics` has looked (more
        #: than a batch unread): the engines then write final rows and defer live views.
        self.behind = behind
        #: Per partition, the wall-clock time (monotonic) it last had records.
        self.last_read: dict[int, float] = {}
        #: The last offset read per input (topic, partition).
        self.read: dict[tuple[str, int], int] = {}

    async def run(self, records: Sequence[RawRecord], acknowledge: Callable[[], None]) -> None:
        """All phases for `records`; `acknowledge` is called last, and only if all succeeded."""
        try:
            await self._run(records)
        except BaseException:
            self.engines.forget()  # the state in memory ran ahead of what was written
            raise
        acknowledge()

    async def _run(self, records: Sequence[RawRecord]) -> None:
        stats, writers = self.stats, self.writers
        began = time.perf_counter()
        batch = split(
            records, expected_channel=self.expected_channel, max_skew=self.max_skew, now=datetime.now(UTC)
        )
        if stats.first_batch_at is None:
            stats.first_batch_at = time.time()
        stats.events_in += len(records)
        now = time.monotonic()
        for record in records:
            source = record.source
            self.last_read[source.partition] = now
            tp = (source.topic, source.partition)
            self.read[tp] = max(self.read.get(tp, source.offset), source.offset)  # a seek may repeat records
        began = stats.timed("decode", began)

        if batch.rejected:
            await writers.dead_letters(batch.rejected)
        began = stats.timed("dead letters", began)

        sources = [source for _, source in batch.accepted]
        lagging = await writers.unread_topics({source.partition for source in sources}, self.read)
        outputs = self.engines.process(
            ((event, source.partition, source.topic) for event, source in batch.accepted),
            lagging,
            live=not self.behind(),
        )
        began = stats.timed("metric engines", began)

        forgotten = outputs.forgotten
        kept = [(e, s) for e, s in batch.accepted if (e.customer_id, e.event_id) not in forgotten]
        await writers.touchpoints(kept, sources, outputs.erased)
        began = stats.timed("touchpoints insert", began)

        restating = writers.stored_events is not None and writers.restated_rows is not None
        if restating and outputs.late:
            restated_at = datetime.now(UTC)
            outputs.late = [replace(event, restated_at=restated_at) for event in outputs.late]
        await writers.metric_rows(outputs)
        began = stats.timed("metric rows insert", began)

        late = {event.customer_id for event in outputs.late}
        if late and writers.stored_events is not None and writers.restated_rows is not None:
            restated = self.engines.restate(await writers.stored_events(late))
            await writers.restated_rows(restated, late)
            stats.restated_events += len(outputs.late)
        began = stats.timed("restatement", began)

        touched = outputs.customers() | {event.customer_id for event, _ in batch.accepted}
        await writers.analytics(touched)
        began = stats.timed("analytics", began)

        await writers.state_records(self.engines.changed_records())
        stats.timed("state records", began)

        stats.late_events += len(outputs.late)
        stats.duplicates += outputs.duplicates
        stats.suppressed += outputs.suppressed
        stats.events_written += len(kept)
        stats.dead_letters += len(batch.rejected)
        stats.batches += 1
        stats.last_flush_at = time.time()

    async def idle(self, assigned: Collection[int], idle_seconds: float) -> bool:
        """The idle rule for the partitions of `assigned` that are caught up and have read
        nothing for `idle_seconds`; True if it wrote anything."""
        now = time.monotonic()
        quiet = {p for p in assigned if now - self.last_read.setdefault(p, now) >= idle_seconds}
        if not quiet:
            return False
        quiet -= set(await self.writers.unread_topics(quiet, self.read))
        if not quiet:
            return False
        try:
            outputs = self.engines.idle(quiet, datetime.now(UTC))
            if outputs is None:
                return False
            await self.writers.metric_rows(outputs)
            await self.writers.analytics(outputs.customers())
            await self.writers.state_records(self.engines.changed_records())
        except BaseException:
            self.engines.forget()
            raise
        self.stats.last_flush_at = time.time()
        return True
