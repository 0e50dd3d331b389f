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

Each phase is the method of its name (`PHASES`, timed under that name in the worker's
`step_seconds`). The writers are passed in (`Writers`), so the order is testable
without Faust, Kafka or ClickHouse (tests/unit/test_step.py). Quix Streams'
`Checkpoint.commit` is the model: one ordered commit per batch, offsets last.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from touchstream.schemas.topics import Source
from touchstream.schemas.touchpoint import MAX_CLOCK_SKEW, TouchpointEvent
from touchstream.streams.ingest import DeadLetter, RawRecord, Split, split
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

    def changed_records(self) -> list[tuple[bytes, bytes | None]]: ...

    def forget(self) -> None: ...


class Writers(Protocol):
    """Where a batch goes; each call returns once its destination has acknowledged it."""

    #: Whether late events restate their customers (`stored_events`, `restated_rows`);
    #: otherwise they are only reported.
    restating: bool

    async def dead_letters(self, letters: Sequence[DeadLetter]) -> None: ...

    async def touchpoints(
        self, events: list[tuple[TouchpointEvent, Source]], sources: list[Source], erased: list[Erasure]
    ) -> None:
        """The events to store with their sources, every source of the batch, and the
        erasures whose earlier touchpoints go."""

    async def metric_rows(self, outputs: Outputs) -> None: ...

    async def analytics(self, customers: set[str]) -> None:
        """The customers touched: mark them due for the maintained tables."""

    async def state_records(self, records: list[tuple[bytes, bytes | None]]) -> None:
        """The engines' records (`changed_records`); a value of None deletes one."""

    async def unread_topics(
        self, partitions: set[int], read: Mapping[tuple[str, int], int]
    ) -> dict[int, set[str]]:
        """Per partition, the input topics with unread records (the horizon waits for
        them), given the last offset read per (topic, partition)."""

    async def stored_events(self, customers: set[str]) -> dict[str, list[TouchpointEvent]]:
        """The customers' stored events (restatement)."""

    async def restated_rows(self, outputs: Outputs, customers: set[str]) -> None:
        """A restatement's rows; deletes the customers' rows it did not write again."""


@dataclass
class Batch:
    """What one batch's phases hand on to the next."""

    records: Sequence[RawRecord]
    split: Split = field(default_factory=Split)
    outputs: Outputs = field(default_factory=Outputs)
    #: The accepted events that are stored (an erasure in the batch forgets some).
    kept: list[tuple[TouchpointEvent, Source]] = field(default_factory=list)


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
        self.metric_engines = engines
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
            self.metric_engines.forget()  # the state in memory ran ahead of what was written
            raise
        acknowledge()

    async def _run(self, records: Sequence[RawRecord]) -> None:
        batch = Batch(records)
        began = time.perf_counter()
        for phase in PHASES[:-1]:
            await getattr(self, phase.replace(" ", "_"))(batch)
            began = self.stats.timed(phase, began)
        stats = self.stats
        stats.late_events += len(batch.outputs.late)
        stats.duplicates += batch.outputs.duplicates
        stats.suppressed += batch.outputs.suppressed
        stats.events_written += len(batch.kept)
        stats.dead_letters += len(batch.split.rejected)
        stats.batches += 1
        stats.last_flush_at = time.time()

    async def decode(self, batch: Batch) -> None:
        records, stats = batch.records, self.stats
        now = datetime.now(UTC)
        batch.split = split(records, expected_channel=self.expected_channel, max_skew=self.max_skew, now=now)
        if stats.first_batch_at is None:
            stats.first_batch_at = time.time()
        stats.events_in += len(records)
        read_at = time.monotonic()
        for record in records:
            source = record.source
            self.last_read[source.partition] = read_at
            tp = (source.topic, source.partition)
            self.read[tp] = max(self.read.get(tp, source.offset), source.offset)  # a seek may repeat records

    async def dead_letters(self, batch: Batch) -> None:
        if batch.split.rejected:
            await self.writers.dead_letters(batch.split.rejected)

    async def engines(self, batch: Batch) -> None:
        accepted = batch.split.accepted
        lagging = await self.writers.unread_topics({source.partition for _, source in accepted}, self.read)
        batch.outputs = self.metric_engines.process(
            ((event, source.partition, source.topic) for event, source in accepted),
            lagging,
            live=not self.behind(),
        )

    async def touchpoints(self, batch: Batch) -> None:
        accepted, forgotten = batch.split.accepted, batch.outputs.forgotten
        batch.kept = [(e, s) for e, s in accepted if (e.customer_id, e.event_id) not in forgotten]
        await self.writers.touchpoints(batch.kept, [source for _, source in accepted], batch.outputs.erased)

    async def metric_rows(self, batch: Batch) -> None:
        outputs = batch.outputs
        if self.writers.restating and outputs.late:
            restated_at = datetime.now(UTC)
            outputs.late = [replace(event, restated_at=restated_at) for event in outputs.late]
        await self.writers.metric_rows(outputs)

    async def restatement(self, batch: Batch) -> None:
        late = {event.customer_id for event in batch.outputs.late}
        if late and self.writers.restating:
            restated = self.metric_engines.restate(await self.writers.stored_events(late))
            await self.writers.restated_rows(restated, late)
            self.stats.restated_events += len(batch.outputs.late)

    async def analytics(self, batch: Batch) -> None:
        touched = batch.outputs.customers() | {event.customer_id for event, _ in batch.split.accepted}
        await self.writers.analytics(touched)

    async def state_records(self, batch: Batch) -> None:
        await self.writers.state_records(self.metric_engines.changed_records())

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
            outputs = self.metric_engines.idle(quiet, datetime.now(UTC))
            if outputs is None:
                return False
            await self.writers.metric_rows(outputs)
            await self.writers.analytics(outputs.customers())
            await self.writers.state_records(self.metric_engines.changed_records())
        except BaseException:
            self.metric_engines.forget()
            raise
        self.stats.last_flush_at = time.time()
        return True
