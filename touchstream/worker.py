"""The Faust worker: thin wiring from the input topics to the dead-letter topic, the
metric engines (`streams.partitions`) and the sinks.

The input records arrive a fetch at a time through `streams.batches.Inbox` (Faust's
consumer, without its per-record delivery) and go through `streams.step.BatchStep`, the
ordered commit of one batch: a batch is acknowledged only once its dead letters are
acknowledged by Kafka, its rows are in ClickHouse and its customers' state records are
in the changelog. A batch that fails or is interrupted by shutdown is never
acknowledged, so its offsets are not committed and the next worker for its partitions
reads it again. A transient ClickHouse error is retried (`sinks.retry`); any other error
stops the worker, a permanent ClickHouse error with one line naming the table and
ClickHouse's code and name. When no records come for a flush interval, the step
applies the idle rule to the quiet partitions.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import signal
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP

from touchstream.producers.health import Check, problems
from touchstream.schemas.errors import ClickHouseError
from touchstream.schemas.partitioning import partition_of
from touchstream.schemas.topics import Source, dead_letter_topic, input_topic
from touchstream.schemas.touchpoint import Channel, TouchpointEvent
from touchstream.settings import Settings
from touchstream.sinks import metric_rows, touchpoints
from touchstream.sinks.clickhouse import ClickHouse
from touchstream.sinks.maintained import CHUNK, MaintainedTables
from touchstream.sinks.retry import until_written
from touchstream.streams import faustcompat, flowcontrol
from touchstream.streams.batches import Inbox
from touchstream.streams.ingest import DeadLetter, RawRecord
from touchstream.streams.metrics import Outputs
from touchstream.streams.metrics.records import Erasure
from touchstream.streams.partitions import STATE_TABLE, PartitionEngines, RocksState, StateWriter
from touchstream.streams.step import BatchStep

log = logging.getLogger(__name__)

#: Batches cut early because the input went quiet are at least this far apart: a trickle
#: of events then costs a few rounds of inserts per second, not one per event (at 10
#: events/s, one batch per event kept the worker near a core busy with chDB inserts).
BATCH_SPACING_SECONDS = 0.2
#: The sink counts as stalled (not ready) once ClickHouse has refused its write this long
#: (a passing error clears within a few retries), or once one write has lasted this long.
STALL_RETRYING_SECONDS = 5.0
STALL_WRITING_SECONDS = 30.0
#: At shutdown, a batch whose current ClickHouse write has hung this long (or that ClickHouse
#: refuses) is dropped, unacknowledged, instead of waited for.
STUCK_WRITE_SECONDS = 5.0
#: How often a paused input checks whether it may go on.
PAUSE_CHECK_SECONDS = 1.0


@dataclass
class PipelineStats:
    """Counters the worker exposes on /status (and later on /metrics)."""

    events_in: int = 0
    events_written: int = 0
    dead_letters: int = 0
    late_events: int = 0
    #: Late events whose customers were restated with them (SPEC §5 "Time").
    restated_events: int = 0
    duplicates: int = 0
    suppressed: int = 0
    batches: int = 0
    first_batch_at: float | None = None
    last_flush_at: float | None = None
    #: Records not yet read on the input partitions the worker has read from.
    consumer_lag: int | None = None
    #: Wall-clock seconds the batches spent per step (decode, touchpoints, metrics, state).
    step_seconds: dict[str, float] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    #: The permanent error that stopped the worker, if one did (see `build`'s sink task).
    stopped_by: ClickHouseError | None = None
    #: Writes retried after a transient ClickHouse error, and the writes that needed any.
    sink_retries: int = 0
    sink_stalls: int = 0
    #: Since when (monotonic) the write in progress began, and began to be retried.
    writing_since: float | None = None
    retrying_since: float | None = None
    last_sink_error: str | None = None
    #: Why the input is paused (the disk is low), or None while it flows.
    paused_by: str | None = None
    #: Customers whose maintained tables (SPEC §5b) were computed.
    customers_computed: int = 0
    #: Records written to the state table (`customer-state`: customers', partitions',
    #: retired conversations', deletions) and their bytes, keys and values.
    state_records: int = 0
    state_bytes: int = 0

    def retried(self, error: ClickHouseError) -> None:
        self.sink_retries += 1
        self.last_sink_error = str(error)
        if self.retrying_since is None:
            self.retrying_since = time.monotonic()
            self.sink_stalls += 1

    def sink_problem(self) -> str | None:
        """Why the sink is not writing, when it has failed for a while: ClickHouse has
        refused it for `STALL_RETRYING_SECONDS`, or one write has lasted
        `STALL_WRITING_SECONDS` (a query holding chDB, a server that does not answer)."""
        now = time.monotonic()
        if self.retrying_since is not None and now - self.retrying_since >= STALL_RETRYING_SECONDS:
            return (
                f"the sink has been retrying ClickHouse for {now - self.retrying_since:.0f} s: "
                f"{self.last_sink_error}"
            )
        if self.writing_since is not None and now - self.writing_since >= STALL_WRITING_SECONDS:
            return f"the sink has been waiting {now - self.writing_since:.0f} s for one ClickHouse write"
        return None

    def prometheus(self) -> str:
        """The counters in Prometheus' text format (served on the worker's and, in `up`, the
        collector's `/metrics`)."""
        counters = {
            "events_in": ("Records read from the input topics.", self.events_in),
            "events_written": ("Events written to touchpoints.", self.events_written),
            "dead_letters": ("Records sent to the dead-letter topic.", self.dead_letters),
            "late_events": ("Events later than the horizon.", self.late_events),
            "restated_events": (
                "Late events whose customers were recomputed with them.",
                self.restated_events,
            ),
            "duplicates": ("Redelivered events (same event_id).", self.duplicates),
            "suppressed": ("Events not aggregated for lack of analytics consent.", self.suppressed),
            "batches": ("Batches written and acknowledged.", self.batches),
            "sink_retries": ("ClickHouse writes retried after a transient error.", self.sink_retries),
            "sink_stalls": (
                "Writes ClickHouse refused at least once before they succeeded.",
                self.sink_stalls,
            ),
        }
        gauges = {
            "consumer_lag": ("Records not yet read on the partitions read from.", self.consumer_lag or 0),
            "sink_stalled": (
                "1 while the sink cannot write (see /healthz).",
                int(self.sink_problem() is not None),
            ),
            "input_paused": (
                "1 while the input is paused (the disk is low).",
                int(self.paused_by is not None),
            ),
        }
        lines = []
        for kind, metrics in (("counter", counters), ("gauge", gauges)):
            for name, (text, value) in metrics.items():
                full = f"touchstream_worker_{name}" + ("_total" if kind == "counter" else "")
                lines += [f"# HELP {full} {text}", f"# TYPE {full} {kind}", f"{full} {value}"]
        return "\n".join(lines) + "\n"

    def timed(self, step: str, began: float) -> float:
        """Add the time since `began` to `step`; return now, the next step's start."""
        now = time.perf_counter()
        self.step_seconds[step] = self.step_seconds.get(step, 0.0) + now - began
        return now

    def as_dict(self) -> dict[str, Any]:
        return {
            "events_in": self.events_in,
            "events_written": self.events_written,
            "dead_letters": self.dead_letters,
            "late_events": self.late_events,
            "restated_events": self.restated_events,
            "duplicates": self.duplicates,
            "suppressed": self.suppressed,
            "batches": self.batches,
            "first_batch_at": self.first_batch_at,
            "consumer_lag": self.consumer_lag,
            "step_seconds": {step: round(seconds, 3) for step, seconds in self.step_seconds.items()},
            "last_flush_at": self.last_flush_at,
            "sink_retries": self.sink_retries,
            "sink_stalls": self.sink_stalls,
            "paused_by": self.paused_by,
            "customers_computed": self.customers_computed,
            "state_records": self.state_records,
            "state_bytes": self.state_bytes,
            "uptime_seconds": round(time.time() - self.started_at, 1),
        }


def tune_garbage_collector() -> None:
    """Fewer, larger collections of young objects; nothing made so far is ever scanned again.

    The worker holds hundreds of thousands of long-lived objects (customer states,
    buffered events, remembered event ids) and makes a few dozen per event. With
    Python's default thresholds (a young collection every 700 allocations) the cyclic
    collector took about a third of the batch time in the streams benchmark; every
    50,000 allocations, with the startup objects (modules, Faust's services) frozen out
    of it, it takes a few percent. Reference counting, which frees almost everything
    here, is unaffected.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


class AnalyticsCatchUp:
    """Computes the maintained tables (SPEC §5b, `sinks.maintained`) of the due customers,
    beside the batches, giving them priority.

    A step only marks its customers (one small insert, part of its commit). This task
    computes the due customers in chunks, its ClickHouse statements waiting their turn like
    reads (the sink's writes go first), so a batch waits for at most one of its statements.
    While the worker keeps up with its input (the consumer lag is under one batch), it
    computes whatever is due and looks again every second, so the tables follow their
    events within a second or two. While a backlog is read (a bulk replay, a restart after
    downtime) it takes at most `SHARE` of the time: the marks pile up, each customer is
    computed once for many batches, and the worker keeps at least 90 % of its rate; the
    rest is computed once the input is quiet.
    """

    #: The share of the time the computation may take while a backlog is read.
    SHARE = 0.1
    #: Customers per computation while the worker keeps up (a few tenths of a second at 1M
    #: stored events on 2 cores, most of it ClickHouse's cost per query), and how often it
    #: looks for due customers when none were.
    LIVE_CHUNK = 500
    LOOK_SECONDS = 1.0

    def __init__(
        self,
        tables: MaintainedTables,
        clickhouse: ClickHouse,
        partitions: int,
        *,
        keeping_up: Callable[[], bool],
        stats: PipelineStats,
    ) -> None:
        self.tables = tables
        self.clickhouse = clickhouse
        self.partitions = partitions
        self.keeping_up = keeping_up
        self.stats = stats

    def mark(self, clickhouse: ClickHouse, customers: set[str]) -> None:
        """The step's writer: mark `customers` as due (their partitions from their keys)."""
        self.tables.mark(clickhouse, {c: partition_of(c.encode(), self.partitions) for c in customers})

    async def run(self, assigned: Callable[[], set[int]]) -> None:
        """Forever: compute due customers of the assigned partitions, paced as above."""
        loop = asyncio.get_running_loop()
        while True:
            partitions = assigned()
            backlog = not self.keeping_up()
            limit = CHUNK if backlog else self.LIVE_CHUNK
            began, timer = time.monotonic(), time.perf_counter()
            computed = 0
            if partitions:
                work = functools.partial(self.tables.catch_up, self.clickhouse, partitions, limit)
                computed = await until_written(
                    functools.partial(loop.run_in_executor, None, work),
                    what="computation of the analytics tables",
                )
            self.stats.customers_computed += computed
            spent = time.monotonic() - began
            if computed:
                self.stats.timed("analytics catch-up", timer)
            if computed < (1 if backlog else limit):  # nothing (more) due
                await asyncio.sleep(self.LOOK_SECONDS)
            elif backlog:
                await asyncio.sleep(spent * (1 - self.SHARE) / self.SHARE)


#: RocksDB per partition of the state table: Faust's defaults (three 64 MB write buffers
#: and a 2 GB block cache per partition) let the worker's RSS grow by gigabytes with
#: the customers written; reads of evicted customers fall back on the OS page cache.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 8 * 1024**2,
    "max_write_buffer_number": 2,
    "block_cache_size": 16 * 1024**2,
}


def faust_app(settings: Settings, bootstrap: str) -> faust.App:
    faustcompat.check()
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{bootstrap}",
        store="rocksdb://",
        datadir=str(settings.state_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_ms / 3000),
        broker_rebalance_timeout=settings.rebalance_timeout_ms / 1000,
        consumer_group_instance_id=settings.group_instance_id,
        producer_acks=-1,
        web_enabled=False,  # the control port is the project's own (touchstream.control)
        loghandlers=[],
    )
    flowcontrol.install(app)
    return app


class SinkWriters:
    """The batch step's destinations (`streams.step.Writers`): the dead-letter topic, the
    ClickHouse writes (each in a worker thread, retried while ClickHouse is unavailable),
    the state table with its changelog, and the consumer's view of what is unread."""

    def __init__(
        self,
        app: faust.App,
        inbox: Inbox,
        dead_letter_topic: faust.TopicT,
        clickhouse: ClickHouse,
        stats: PipelineStats,
        catch_up: AnalyticsCatchUp,
        state: tuple[RocksState, StateWriter],
        *,
        input_topics: Collection[str],
        restating: bool,
    ) -> None:
        self.app = app
        self.inbox = inbox
        self.dead_letter_topic = dead_letter_topic
        self.clickhouse = clickhouse
        self.stats = stats
        self.catch_up = catch_up
        self.rocks, self.state_writer = state
        self.input_topics = input_topics
        self.restating = restating

    async def dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        topic = self.dead_letter_topic
        pending = [
            await topic.send(key=letter.key, value=letter.value, headers=letter.headers())
            for letter in letters
        ]
        await asyncio.gather(*pending)
        for letter in letters:
            log.info("dead letter from %s: %s", letter.source, letter.reason)

    async def touchpoints(
        self, events: list[tuple[TouchpointEvent, Source]], sources: list[Source], erased: list[Erasure]
    ) -> None:
        await self._in_thread("insert of touchpoints", touchpoints.write, events, sources, erased)

    async def metric_rows(self, outputs: Outputs) -> None:
        await self._in_thread("insert of metric rows", metric_rows.write, outputs)

    async def analytics(self, customers: set[str]) -> None:
        await self._in_thread("mark of the customers to compute", self.catch_up.mark, customers)

    async def state_records(self, records: list[tuple[bytes, bytes | None]]) -> None:
        await self.state_writer.write(self.rocks, records)
        self.stats.state_records += len(records)
        self.stats.state_bytes += sum(len(key) + len(value or b"") for key, value in records)

    async def unread_topics(
        self, partitions: set[int], read: Mapping[tuple[str, int], int]
    ) -> dict[int, set[str]]:
        """Per partition, the input topics with records not processed yet; counts the
        consumer lag on the way."""
        consumer = self.app.consumer
        assigned = consumer.assignment()
        candidates = [
            (topic, partition)
            for partition in partitions
            for topic in self.input_topics
            if TP(topic, partition) in assigned
        ]
        found: dict[int, set[str]] = {}
        for topic, partition in await self.inbox.unread(candidates, read):
            found.setdefault(partition, set()).add(topic)
        self.stats.consumer_lag = sum(
            max((consumer.highwater(TP(*tp)) or 0) - done - 1, 0) for tp, done in read.items()
        )
        return found

    async def stored_events(self, customers: set[str]) -> dict[str, list[TouchpointEvent]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, touchpoints.stored_events, self.clickhouse, customers)

    async def restated_rows(self, outputs: Outputs, customers: set[str]) -> None:
        await self._in_thread("restatement", metric_rows.write_restated, outputs, customers)

    async def _in_thread(self, what: str, write: Callable[..., None], *args: Any) -> None:
        """`write(clickhouse, *args)` in a worker thread, retried while ClickHouse is unavailable."""
        loop, stats = asyncio.get_running_loop(), self.stats
        stats.writing_since = time.monotonic()
        try:
            await until_written(
                lambda: loop.run_in_executor(None, write, self.clickhouse, *args),
                what=what,
                on_retry=stats.retried,
            )
        finally:
            stats.writing_since = stats.retrying_since = None


class Pipeline:
    """The worker's topics, state table and agents on a Faust app: the sink, which takes
    the input a batch at a time through `BatchStep`, and the computation of the
    maintained tables beside it (`AnalyticsCatchUp`). `stats` are the counters both
    update. While a check of `pause_while` fails (the disk is low), the sink takes no
    input; those checks run on the event loop before every batch, so they must be cheap
    (`DiskSpace` is a cached statvfs)."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        clickhouse: ClickHouse,
        *,
        demo: bool = False,
        pause_while: Sequence[Check] = (),
    ) -> None:
        self.app = app
        self.settings = settings
        self.pause_while = pause_while
        self.stats = stats = PipelineStats()
        state = app.Table(
            STATE_TABLE,
            default=None,
            key_type=bytes,  # bytes keys and values travel raw
            value_type=bytes,
            partitions=settings.partitions,
            use_partitioner=True,
            options={"driver": "rocksdict", **ROCKSDB_OPTIONS},
        )
        config = settings.metrics_config(demo=demo)
        rocks = RocksState.of(state, settings.partitions)
        self.engines = PartitionEngines(config, rocks, settings.partitions, cache=settings.state_cache)
        self.catch_up = AnalyticsCatchUp(
            MaintainedTables(clickhouse.database, config),
            clickhouse,
            settings.partitions,
            keeping_up=lambda: not self.behind(),
            stats=stats,
        )
        bootstrap = ",".join(f"{url.host}:{url.port}" for url in app.conf.broker)
        # The changelog on a Kafka of one's own only: see StateWriter.
        state_writer = StateWriter(None if settings.embedded_kafka else bootstrap)
        prefix = settings.topic_prefix
        self.expected_channel = {input_topic(channel, prefix): channel.value for channel in Channel}
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        inputs = app.topic(*self.expected_channel, **raw)  # type: ignore[arg-type]
        dlq = app.topic(dead_letter_topic(prefix), **raw)  # type: ignore[arg-type]
        self.inbox = Inbox(app, inputs)
        self.inbox.install()
        writers = SinkWriters(
            app, self.inbox, dlq, clickhouse, stats, self.catch_up, (rocks, state_writer),
            input_topics=self.expected_channel, restating=settings.metrics_late == "restate",
        )  # fmt: skip
        self.step = BatchStep(
            engines=self.engines,
            writers=writers,
            stats=stats,
            expected_channel=self.expected_channel,
            max_skew=settings.max_clock_skew,
            behind=self.behind,
        )
        app.on_partitions_revoked.connect(self._partitions_moved)
        #: The agents' tasks once they run, and the shutdown watch over them (held, so it
        #: is not collected).
        self._running: list[asyncio.Task[Any]] = []
        self._watchers: list[asyncio.Future[None]] = []
        app.task(self.analytics)
        app.task(self.sink)

    def behind(self) -> bool:
        """Whether the input holds more than a batch unread (a backlog)."""
        return (self.stats.consumer_lag or 0) >= self.settings.sink_batch_size

    def assigned(self) -> set[int]:
        """The input partitions assigned to this worker."""
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic in self.expected_channel}

    def _partitions_moved(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        self.engines.forget()
        self.step.read.clear()

    def stop_sink(self) -> None:
        """At shutdown, watch the sink: Faust's stop waits for the batch being written, as
        it should, but not for one ClickHouse refuses (retried) or whose current write hangs
        (`STUCK_WRITE_SECONDS`): such a batch is cancelled, unacknowledged, and read again
        by the next run. The watch ends with the sink."""
        running, stats = self._running, self.stats

        async def watch() -> None:
            while any(not task.done() for task in running):
                since = stats.writing_since
                if stats.retrying_since is not None or (
                    since is not None and time.monotonic() - since >= STUCK_WRITE_SECONDS
                ):
                    for task in running:
                        task.cancel()
                    return
                await asyncio.sleep(0.1)

        self._watchers.append(asyncio.ensure_future(watch()))

    def _stop(self, error: ClickHouseError) -> None:
        """A permanent ClickHouse error (transient ones are retried): the ordinary shutdown."""
        self.stats.stopped_by = error
        log.error("stopping: %s", error)
        os.kill(os.getpid(), signal.SIGTERM)

    async def analytics(self) -> None:
        if (task := asyncio.current_task()) is not None:
            self._running.append(task)
        try:
            await self.catch_up.run(self.assigned)
        except ClickHouseError as error:
            self._stop(error)

    async def sink(self) -> None:
        if (task := asyncio.current_task()) is not None:
            self._running.append(task)
        stats, settings, inbox, step = self.stats, self.settings, self.inbox, self.step
        while True:
            paused = problems(self.pause_while)
            if paused:
                if stats.paused_by is None:
                    log.warning("input paused: %s", "; ".join(paused))
                stats.paused_by = "; ".join(paused)
                await asyncio.sleep(PAUSE_CHECK_SECONDS)
                continue
            if stats.paused_by is not None:
                log.warning("input resumed")
                stats.paused_by = None
            messages = await inbox.take(
                settings.sink_batch_size,
                within=settings.sink_flush_seconds,
                wait=settings.sink_flush_seconds,
                quiet=settings.sink_quiet_seconds,
                spacing=BATCH_SPACING_SECONDS,
            )
            if not messages:
                await step.idle(self.assigned(), settings.metrics_idle_seconds)
                continue
            records = [
                RawRecord(
                    message.key, message.value, Source(message.topic, message.partition, message.offset)
                )
                for message in messages
            ]
            try:
                await step.run(records, acknowledge=functools.partial(inbox.ack, messages))
            except asyncio.CancelledError:  # shutdown: the batch is read again by the next run
                inbox.abandon(messages)
                raise
            except ClickHouseError as error:  # nothing is acknowledged
                inbox.abandon(messages)
                self._stop(error)
                return
