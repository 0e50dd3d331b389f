"""The Faust worker: thin wiring from the input topics to the dead-letter topic, the
metric engines (`streams.partitions`) and the sinks.

Offsets never run ahead of ClickHouse: events are taken in batches with
`take_events`, which acknowledges a batch only after the loop body has finished with
it; the body returns only once the dead letters are acknowledged by Kafka and the
rows are in ClickHouse. If the worker is stopped while a batch is still unwritten,
the batch is withheld (see `streams.offsets`) so its offsets are not committed and
the next worker reads it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP, EventT

from schemas.topics import dead_letter_topic, input_topic
from schemas.touchpoint import Channel
from sinks import metrics as metric_rows
from sinks import touchpoints
from sinks.clickhouse import ClickHouse
from sinks.retry import until_written
from sinks.touchpoints import Source
from streams import flowcontrol
from streams.ingest import RawRecord, split
from streams.offsets import withhold
from streams.partitions import STATE_TABLE, ChangelogWriter, PartitionEngines
from touchstream.settings import Settings

log = logging.getLogger(__name__)

SINK_AGENT = "touchpoints-sink"


@dataclass
class PipelineStats:
    """Counters the worker exposes on /status (and later on /metrics)."""

    events_in: int = 0
    events_written: int = 0
    dead_letters: int = 0
    late_events: int = 0
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
            "duplicates": self.duplicates,
            "suppressed": self.suppressed,
            "batches": self.batches,
            "first_batch_at": self.first_batch_at,
            "consumer_lag": self.consumer_lag,
            "step_seconds": {step: round(seconds, 3) for step, seconds in self.step_seconds.items()},
            "last_flush_at": self.last_flush_at,
            "uptime_seconds": round(time.time() - self.started_at, 1),
        }


def faust_app(settings: Settings, bootstrap: str) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=str(settings.state_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_ms / 3000),
        broker_rebalance_timeout=settings.rebalance_timeout_ms / 1000,
        consumer_group_instance_id=settings.group_instance_id,
        producer_acks=-1,
        web_enabled=True,
        web_bind=settings.worker_host,
        web_port=settings.worker_port,
        web_host=settings.worker_host,
        web_in_thread=False,
        loghandlers=[],
    )
    flowcontrol.install(app)
    return app


def build(app: faust.App, settings: Settings, clickhouse: ClickHouse, *, demo: bool = False) -> PipelineStats:
    """Declare topics, tables and agents on `app`; return the counters the agents update."""
    stats = PipelineStats()
    state = app.Table(
        STATE_TABLE,
        default=None,
        key_type=bytes,  # bytes keys and values travel raw
        value_type=bytes,
        partitions=settings.partitions,
        use_partitioner=True,
    )
    config = settings.metrics_config(demo=demo)
    engines = PartitionEngines(config, state, settings.partitions)
    bootstrap = ",".join(f"{url.host}:{url.port}" for url in app.conf.broker)
    changelog = ChangelogWriter(bootstrap)

    def partitions_moved(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        engines.forget()
        read.clear()

    app.on_partitions_revoked.connect(partitions_moved)

    prefix = settings.topic_prefix
    expected_channel = {input_topic(channel, prefix): channel.value for channel in Channel}
    raw = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    inputs = app.topic(*expected_channel, **raw)  # type: ignore[arg-type]
    dlq = app.topic(dead_letter_topic(prefix), **raw)  # type: ignore[arg-type]

    read: dict[TP, int] = {}  # the last offset processed per input topic-partition

    async def unread_topics(partitions: set[int]) -> dict[int, set[str]]:
        """Per partition, the input topics with records not processed yet."""
        assigned = app.consumer.assignment()
        found: dict[int, set[str]] = {}
        for partition in partitions:
            for topic in expected_channel:
                tp = TP(topic, partition)
                if tp not in assigned:
                    continue
                highwater = app.consumer.highwater(tp)
                done = read.get(tp)
                position = done + 1 if done is not None else await app.consumer.position(tp)
                if highwater is None or position is None or position < highwater:
                    found.setdefault(partition, set()).add(topic)
        return found

    async def handle(events: Sequence[EventT]) -> None:
        began = time.perf_counter()
        records = [
            RawRecord(
                key=event.key,
                value=event.value,
                source=Source(event.message.topic, event.message.partition, event.message.offset),
            )
            for event in events
        ]
        batch = split(records, expected_channel=expected_channel)
        if stats.first_batch_at is None:
            stats.first_batch_at = time.time()
        stats.events_in += len(records)
        pending = [
            await dlq.send(key=letter.key, value=letter.value, headers=letter.headers())
            for letter in batch.rejected
        ]
        if pending:
            await asyncio.gather(*pending)
            for letter in batch.rejected:
                log.info("dead letter from %s: %s", letter.source, letter.reason)
        rows = [touchpoints.row(event, source) for event, source in batch.accepted]
        sources = [source for _, source in batch.accepted]
        began = stats.timed("decode", began)
        loop = asyncio.get_running_loop()
        await until_written(
            lambda: loop.run_in_executor(None, touchpoints.write, clickhouse, rows, sources),
            what=f"insert of {len(rows)} touchpoints",
        )
        for source in sources:
            tp = TP(source.topic, source.partition)
            read[tp] = max(read.get(tp, source.offset), source.offset)  # a seek may repeat records
        began = stats.timed("touchpoints insert", began)
        lagging = await unread_topics({source.partition for source in sources})
        stats.consumer_lag = sum(
            max((app.consumer.highwater(tp) or 0) - done - 1, 0) for tp, done in read.items()
        )
        outputs = engines.process(
            ((event, source.partition, source.topic) for event, source in batch.accepted), lagging
        )
        began = stats.timed("metric engines", began)
        step = touchpoints.dedup_token(sources)
        await until_written(
            lambda: loop.run_in_executor(None, metric_rows.write, clickhouse, outputs, step),
            what="insert of metric rows",
        )
        began = stats.timed("metric rows insert", began)
        await changelog.write(state, engines.changed_records())
        stats.timed("state records", began)
        stats.late_events += len(outputs.late)
        stats.duplicates += outputs.duplicates
        stats.suppressed += outputs.suppressed
        stats.events_written += len(rows)
        stats.dead_letters += len(batch.rejected)
        stats.batches += 1
        stats.last_flush_at = time.time()

    @app.agent(inputs, name=SINK_AGENT)
    async def sink(stream: faust.StreamT[bytes]) -> None:
        batches = stream.take_events(  # type: ignore[attr-defined]
            settings.sink_batch_size, within=settings.sink_flush_seconds
        )
        async for events in batches:
            try:
                await handle(events)
            except BaseException:
                withhold(events)
                engines.forget()  # the state in memory ran ahead of what was written
                raise

    return stats
